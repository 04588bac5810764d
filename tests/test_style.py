"""The shape ../shared/STYLE.md asks of kit's code, checked here so review need not: functions a
reader takes in at once, modules read in one sitting, and a reason beside every deferred import."""
import ast
from pathlib import Path

KIT = Path(__file__).resolve().parent.parent / "kit"
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400


def _modules():
    return [(p, p.read_text()) for p in sorted(KIT.rglob("*.py"))]


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_or_module_is_too_long_to_read_at_once():
    long = [f"{p.relative_to(KIT.parent)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for p, src in _modules() for f in _functions(ast.parse(src))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    long += [f"{p.relative_to(KIT.parent)} ({len(src.splitlines())} lines)" for p, src in _modules()
             if len(src.splitlines()) > MAX_MODULE_LINES]
    assert not long, "split these:\n" + "\n".join(long)


def _explained(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or above the block of imports it belongs to."""
    if "#" in lines[lineno - 1]:
        return True
    k = lineno - 2
    while k >= 0 and lines[k].lstrip().startswith(("from ", "import ")):
        k -= 1
    return k >= 0 and lines[k].lstrip().startswith("#")


def test_every_import_inside_a_function_says_why():
    unexplained = []
    for p, src in _modules():
        lines = src.splitlines()
        for f in _functions(ast.parse(src)):
            unexplained += [f"{p.relative_to(KIT.parent)}:{n.lineno} {lines[n.lineno - 1].strip()}"
                            for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))
                            and not _explained(lines, n.lineno)]
    assert not unexplained, ("import these at module level, or say in a comment why not (a cycle, "
                             "a heavy library a light importer must not load):\n" + "\n".join(unexplained))
