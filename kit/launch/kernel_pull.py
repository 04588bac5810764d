"""Pulling a Kaggle kernel's output back (kit.launch.kaggle_kernels): a member's run dir pulled from a
kernel put in place of the local one, pointed at the data here, and the kernel's log as text."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kit.config import dump_toml, load_toml
from kit.errors import KitError
from kit.fsio import sha256_file, write_json, write_text
from kit.runs import holds_run, move_aside, old_name
from kit.written import WRITTEN, written_by_run, written_record

LAUNCH_MARK = "launch.json"          # in a run dir pulled back: which kernel version it came from


@dataclass
class Kernel:
    ref: str                  # owner/slug
    members: list[str]
    version: int = 0          # the last version pushed
    status: str = ""          # its last known status
    pending: bool = False     # pushed, its output not pulled back yet
    url: str = ""
    rounds: int = 0           # versions pushed by this command (not saved)


def relocate(run_dir: Path, data_dir: Path) -> None:
    """Point a pulled run at the data here: its config.toml, member.toml and ids.json name the
    kernel's /kaggle/input copy. The data dir's path is not part of a run's identity (the data's
    fingerprint is), so this changes nothing about what the run is."""
    for name in ("config.toml", "member.toml"):
        path = run_dir / name
        if path.is_file():
            values = load_toml(path)
            values.setdefault("data", {})["data_dir"] = str(data_dir)
            write_text(path, dump_toml(values))
    ids = run_dir / "ids.json"
    if ids.is_file():
        values = json.loads(ids.read_text())
        if values.get("data_dir"):
            values["data_dir"] = str(data_dir.resolve())
            write_json(ids, values)


def adopt(pulled: Path, run_dir: Path, k: Kernel, log, data_dir: Path | None = None) -> None:
    """Put a member's run dir pulled from kernel k in place of run_dir. An earlier pull of the same
    kernel is superseded (the new version continued from it); any other run there is moved aside to
    RUNS/<recipe>.old-<time>/ (nothing is deleted). Pulled files get one modification time, so
    predictions made in the kernel count as made after their checkpoint."""
    if holds_run(pulled) is None:
        if holds_run(run_dir):
            log(f"{run_dir.name}: {k.ref} version {k.version} left no checkpoint of it; {run_dir} kept as it was")
        return
    if why := incomplete(pulled):       # the pull fails, and the re-run pulls it again (probe 37)
        raise KitError(f"{k.ref} version {k.version}: its run of {pulled.name} came back incomplete ({why})")
    if data_dir is not None:
        relocate(pulled, data_dir)
    stamp = time.time()
    for f in pulled.rglob("*"):
        os.utime(f, (stamp, stamp))
    write_json(pulled / LAUNCH_MARK, {"launcher": "kaggle", "kernel": k.ref, "version": k.version})
    superseded = None
    if run_dir.exists():
        try:
            mark = json.loads((run_dir / LAUNCH_MARK).read_text())
        except (OSError, ValueError):
            mark = {}
        if mark.get("kernel") == k.ref:
            superseded = run_dir.with_name(f".{run_dir.name}.superseded")
            shutil.rmtree(superseded, ignore_errors=True)
            os.rename(run_dir, superseded)
        else:
            moved = move_aside(run_dir, old_name(run_dir.parent) / run_dir.name)
            log(f"{run_dir.name}: the run that was in {run_dir} moved to {moved} (trained by {k.ref} instead)")
    os.rename(pulled, run_dir)
    if superseded is not None:
        shutil.rmtree(superseded, ignore_errors=True)


def incomplete(pulled: Path) -> str:
    """'' when a pulled run holds every checkpoint its training recorded (checkpoints.json) as written,
    and the test predictions its ids.json names; else what is missing or damaged. A download cut off,
    or an output listing that left files out, was adopted as finished, then failed prediction or the
    vote, and re-runs skipped it as done."""
    try:
        record = written_record(pulled)
        ids = json.loads((pulled / "ids.json").read_text()) if (pulled / "ids.json").is_file() else {}
    except (KitError, OSError, ValueError):
        return f"its {WRITTEN} or ids.json cannot be read"
    if (pulled / "summary.json").is_file() and not record:
        return f"finished, but no {WRITTEN}"
    for name in record if isinstance(record, dict) else []:
        if name in ("best.pt", "last.pt") and not (pulled / name).is_file():
            return f"{name} missing"
        if (pulled / name).is_file() and not written_by_run(pulled / name):
            return f"{name} is not the file its training wrote: cut off or damaged"
    probs = pulled / "test_probs.npy"
    if isinstance(ids, dict) and ids.get("test_probs_sha256") and (
            not probs.is_file() or sha256_file(probs) != ids["test_probs_sha256"]):
        return "test_probs.npy missing or not the one its ids.json records"
    return ""


def log_text(path: Path) -> str:
    """A kernel log as text: Kaggle's is a JSON list of {stream_name, time, data}."""
    if not path.is_file():
        return ""
    raw = path.read_text(errors="replace")
    try:
        return "".join(part.get("data", "") for part in json.loads(raw))
    except (ValueError, AttributeError, TypeError):
        return raw


def last_error(log_path: Path) -> str:
    """The kernel's own one-line reason: its last `kit: error:` line, else its last line."""
    lines = [ln.strip() for ln in (log_path.read_text(errors="replace").splitlines() if log_path.is_file() else [])
             if ln.strip()]
    errors = [ln[len("kit: error:"):].strip() for ln in lines if ln.startswith("kit: error:")]
    return (errors or lines or [""])[-1][:300]
