"""What runs inside a Kaggle kernel that `kit recipe run --launcher kaggle` pushed: unpack the kit
source it carries, add the packages the image lacks, bring back the earlier version's run dirs, then
`kit recipe run` its members. Standard library only: it runs before kit can be imported.

The pushed script is this file's text followed by SETTINGS, SOURCE and a call of main().
"""
from __future__ import annotations

import base64
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LEFT_BEHIND = (".lock", ".*.tmp")      # a dead trainer's lock, a killed save's temp file


def unpack(source_b64: str, dest: Path) -> Path:
    """The kit package and the recipe, from the base64 tar.gz the script carries, into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(source_b64)), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:                                   # Python before 3.11.4; the archive is kit's own
            tar.extractall(dest)
    return dest


def install_missing(requirements: list[list[str]]) -> list[str]:
    """pip-install the requirements whose module the image lacks; the image's own torch is kept. One whose
    marker leaves it out of this Python (tomli before 3.11) is no requirement here: pip was started for
    nothing, and the log said it was installing tomli."""
    missing = [req for module, req in requirements
               if applies_here(req) and importlib.util.find_spec(module) is None]
    if missing:
        print(f"kit kernel: installing {' '.join(missing)}", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])
    return missing


def applies_here(requirement: str) -> bool:
    """False for a requirement whose marker is a python_version comparison this Python fails; True for
    any other (pip judges a marker this does not read)."""
    marker = requirement.partition(";")[2]
    found = re.fullmatch(r"\s*python_version\s*(<=|>=|==|!=|<|>)\s*['\"](\d+)\.(\d+)['\"]\s*", marker)
    if not found:
        return True
    have, want = sys.version_info[:2], (int(found[2]), int(found[3]))
    return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want, "==": have == want,
            "!=": have != want}[found[1]]


def earlier_run(input_root: Path, slug: str, recipe: str, member: str) -> Path | None:
    """A member's run dir in an earlier version's output, mounted as an input: under the kernel's
    own slug first, else any input that holds runs/<recipe>/<member>."""
    tail = Path("runs") / recipe / member
    candidates = [input_root / slug / tail]
    if input_root.is_dir():
        candidates += sorted(input_root.glob(f"*/{tail}")) + sorted(input_root.glob(f"*/*/{tail}"))
    return next((c for c in candidates if (c / "config.toml").is_file()), None)


def bring_back(input_root: Path, runs: Path, slug: str, recipe: str, members: list[str]) -> list[str]:
    """Copy each member's run dir from the earlier output into the working dir (where kit resumes it
    from last.pt); a member that already has one here is left alone."""
    brought = []
    for member in members:
        found = earlier_run(input_root, slug, recipe, member)
        target = runs / recipe / member
        if found is None or target.exists():
            continue
        shutil.copytree(found, target, ignore=shutil.ignore_patterns(*LEFT_BEHIND))
        print(f"kit kernel: continuing {member} from {found}", flush=True)
        brought.append(member)
    return brought


def die_with_stand_in() -> None:
    """On the local stand-in only (it sets KIT_STANDIN_PID; Linux): end with the `kit kaggle serve` that
    runs this kernel, as a Kaggle session ends with its machine, and have the `kit recipe run` started
    next end with this script (prctl PR_SET_PDEATHSIG; each process sets it for itself). Without it a
    SIGKILLed stand-in left its kernels training under pid 1."""
    pid = os.environ.get("KIT_STANDIN_PID", "")
    if not pid.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes  # here only: the stand-in's kernels need it, a Kaggle kernel never does
    import signal  # likewise

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != int(pid):        # the stand-in died before prctl took effect
        os._exit(1)
    os.environ["KIT_STANDIN_PID"] = str(os.getpid())       # the recipe's parent, for its own check


def main(settings: dict, source_b64: str) -> int:
    die_with_stand_in()
    root = Path(os.environ.get("KIT_KAGGLE_ROOT") or "/kaggle")
    working = root / "working"
    working.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.gettempdir())
    src = unpack(source_b64, scratch / "kit-src")
    install_missing(settings["requirements"])
    bring_back(root / "input", working / "runs", settings["slug"], settings["recipe"], settings["members"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
               KIT_CACHE=str(scratch / "kit-cache"),    # the packed store stays out of the kernel's output
               KIT_PROGRESS="0")
    # -P (3.11+): a `kit` folder in the working folder is never imported in place of the source (probe 58 F1)
    command = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", "kit", *settings["args"]]
    command[command.index("@RECIPE")] = str(src / settings["recipe_file"])
    command[command.index("@RUNS")] = str(working / "runs")
    print(f"kit kernel {settings['slug']}: {' '.join(command[1:])}", flush=True)
    return subprocess.call(command, env=env, cwd=working)
