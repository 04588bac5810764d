"""What every launcher shares: the `kit recipe run` arguments a kernel or a job runs, progress
lines, when a member counts as finished (a job's time limits: kit.timeplan.time_limits)."""
from __future__ import annotations

import json
from pathlib import Path

MAX_ROUNDS = 4             # kernel versions / job rounds one command starts for the same members


def member_args(recipe_file: str, members: list[str], budget: str, runs: str, data: str | None = None,
                minutes: float | None = None, per_member_minutes: float | None = None,
                max_hours: float | None = None) -> list[str]:
    """`kit recipe run` arguments that train and predict `members` only (no ensemble, no stages after
    it, no submission): what a kernel or a job runs; the stages run here after the vote. The budget
    is always given: a copy of synthetic data elsewhere may lack the marker that makes `quick` the
    default."""
    args = ["recipe", "run", recipe_file, "--only", *members, "--budget", budget, "--runs", runs,
            "--no-ensemble", "--no-pseudo", "--no-distill", "--no-progress"]
    if data:
        args += ["--data", data]
    if per_member_minutes:
        args += ["--member-minutes", repr(per_member_minutes)]
    elif minutes:
        args += ["--minutes", repr(minutes)]
    if max_hours:
        args += ["--max-hours", f"{max_hours:.4f}"]
    return args


def is_finished(run_dir: Path) -> bool:
    """A member done training: summary.json, and not stopped at a session's time limit."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("stopped_reason") != "time"


def progress(run_dir: Path) -> str:
    """A few words on where a member stands, for the launchers' log lines."""
    if is_finished(run_dir):
        return "finished"
    return "checkpointed, not finished" if (Path(run_dir) / "last.pt").is_file() else "not started"
