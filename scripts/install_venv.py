#!/usr/bin/env python3
"""Create the development venv (.venv) and install kit with its dev extras into it.

    python3 scripts/install_venv.py .venv        # what `make setup` / `make test` run

pip alone spends ~2 minutes unpacking torch's 5.9 GB of CUDA wheels on 2 cores (measured:
130 s for `pip install -e '.[dev]'` in a fresh clone here); uv unpacks in parallel (33 s, cold
cache, same machine). So uv is installed into the new venv with pip and does the install,
with pip's own configuration passed on (index-url, extra-index-url, find-links, constraint,
cert: uv reads none of pip's files). If uv cannot be installed or fails, pip does it as before.
KIT_INSTALLER=pip forces pip.

uv writes no bytecode; Python compiles each module the first time it is imported and caches it
(the Makefile makes sure PYTHONDONTWRITEBYTECODE does not stop that), which is cheaper than
compiling all of site-packages up front (~30 s on 2 cores) when a run imports a fraction of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# pip config key (after the "global."/":env:." prefix) -> uv flag; each value may list several.
UV_FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def log(message: str) -> None:
    print(f"install_venv: {message}", file=sys.stderr, flush=True)


def pip_config(python: Path) -> dict[str, list[str]]:
    """pip's effective settings (files and PIP_* variables), as `pip config list` shows them."""
    out = subprocess.run([str(python), "-m", "pip", "config", "list"],
                         capture_output=True, text=True, check=False).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.split(".", 1)[-1].strip()
        found.setdefault(name, [])
        for item in value.strip().strip("'\"").split():
            if item not in found[name]:
                found[name].append(item)
    return found


def uv_command(venv: Path, config: dict[str, list[str]]) -> list[str]:
    # unsafe-best-match: the newest version any index has, as pip chooses (uv's default takes the
    # first index that has the package, which here gave older pandas, accelerate, pytest, ...)
    cmd = [str(venv / "bin" / "uv"), "pip", "install", "--quiet", "--index-strategy", "unsafe-best-match",
           "--python", str(venv / "bin" / "python")]
    for key, flag in UV_FLAGS.items():
        values = config.get(key, [])
        if key == "index-url":
            values = values[:1]
        for value in values:
            cmd += [flag, value]
    return cmd + ["-e", ".[dev]"]


def install_with_uv(venv: Path) -> bool:
    python = venv / "bin" / "python"
    got = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "uv"], check=False)
    if got.returncode != 0:
        log("uv could not be installed; pip installs kit instead")
        return False
    config = pip_config(python)
    env = dict(os.environ)
    certs = config.get("cert", [])
    if certs and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = certs[0]
    if subprocess.run(uv_command(venv, config), env=env, check=False).returncode != 0:
        log("uv pip install failed; pip installs kit instead")
        return False
    return True


def main(argv: list[str]) -> int:
    venv = Path(argv[1] if len(argv) > 1 else ".venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    if os.environ.get("KIT_INSTALLER", "uv") != "pip" and install_with_uv(venv):
        return 0
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    return subprocess.run([python, "-m", "pip", "install", "--quiet", "-e", ".[dev]"],
                          check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
