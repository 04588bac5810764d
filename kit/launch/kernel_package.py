"""A kernel folder for `kaggle kernels push`: kernel-metadata.json and one script that carries kit's
own source (the package as it is here, so the kernel runs the same kit) and the recipe.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import re
import tarfile
from importlib import metadata
from pathlib import Path

import kit
from kit.config import load_toml
from kit.fsio import write_json, write_text

PACKAGE = Path(kit.__file__).resolve().parent
# The kernel trains and predicts; it never talks to Kaggle nor starts Slurm jobs.
NOT_IN_KERNEL = {"kaggle", "six", "submitit"}


def kernel_slug(recipe: str, index: int) -> str:
    """kit-<recipe>-<index>, as Kaggle makes a slug from a title (lower case, '-' between words)."""
    return re.sub(r"[^a-z0-9]+", "-", f"kit {recipe} {index}".lower()).strip("-")


@functools.cache
def _package_tar() -> bytes:
    """kit/ (sources and shipped recipes, no caches) as a gzipped tar, made once per process."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(PACKAGE.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                info = tar.gettarinfo(str(path), arcname=str(Path("kit") / path.relative_to(PACKAGE)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    return buffer.getvalue()


def source_archive(recipe_file: Path) -> str:
    """base64 of a tar.gz holding kit/ and the recipe file (at the top, under its own name)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        with tarfile.open(fileobj=io.BytesIO(_package_tar()), mode="r:gz") as package:
            for member in package.getmembers():
                tar.addfile(member, package.extractfile(member))
        info = tar.gettarinfo(str(recipe_file), arcname=recipe_file.name)
        info.mtime = 0
        with open(recipe_file, "rb") as f:
            tar.addfile(info, f)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def requirements() -> list[list[str]]:
    """[module, requirement] for each of kit's dependencies a kernel may need to install, read from
    the project's pyproject.toml (a checkout) or the installed package's metadata."""
    reqs: list[str] = []
    pyproject = PACKAGE.parent / "pyproject.toml"
    if pyproject.is_file():
        reqs = load_toml(pyproject)["project"]["dependencies"]
    else:
        try:
            reqs = [r for r in metadata.requires("kit") or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            pass
    out = []
    for req in reqs:
        name = re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].strip()
        if name and name.lower() not in NOT_IN_KERNEL:
            out.append([name.replace("-", "_").lower(), req])
    return out


def write_kernel(folder: Path, ref: str, recipe_file: Path, recipe: str, members: list[str], args: list[str],
                 competition: str, earlier: bool, gpu: bool = True) -> Path:
    """Write kernel-metadata.json and the script into folder. ref: owner/slug. args: `kit recipe run`
    arguments with @RECIPE and @RUNS where the kernel's paths go. earlier: add the kernel's own
    earlier output as an input (a new version continuing the last one)."""
    owner, slug = ref.split("/")
    settings = {"slug": slug, "recipe": recipe, "recipe_file": recipe_file.name, "members": members,
                "args": args, "requirements": requirements()}
    main = (PACKAGE / "launch" / "kernel_main.py").read_text()
    script = (f"{main}\n\nSETTINGS = {json.dumps(settings)}\nSOURCE = \"{source_archive(recipe_file)}\"\n\n"
              "if __name__ == \"__main__\":\n    sys.exit(main(SETTINGS, SOURCE))\n")
    write_text(folder / f"{slug}.py", script)
    write_json(folder / "kernel-metadata.json", {
        "id": ref, "title": slug.replace("-", " "), "code_file": f"{slug}.py", "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": gpu, "enable_tpu": False,
        "enable_internet": True, "competition_sources": [competition], "dataset_sources": [],
        "kernel_sources": [ref] if earlier else [], "model_sources": [], "keywords": []})
    return folder
