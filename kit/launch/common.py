"""What every launcher shares: the `kit recipe run` arguments a kernel or a job runs, time limits,
progress lines, when a member counts as finished."""
from __future__ import annotations

import json
from pathlib import Path

MAX_ROUNDS = 4             # kernel versions / job rounds one command starts for the same members
START_HOURS = 0.25         # a job's own time beyond training: start, installs, packing the data, predicting
STOP_MARGIN_HOURS = 0.25   # kit in a job stops this long before the job's limit, so its checkpoints are kept


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


def time_limits(recipe, budget: str, members_per_job: int, longest: float, minutes: float | None,
                per_member_minutes: float | None, max_hours: float | None) -> tuple[float, float | None]:
    """(a job's or kernel's time limit in hours, the --max-hours kit gets inside it, or None).
    A timed recipe (its wall time, or minutes per member) needs that time and START_HOURS; else a
    job gets `max_hours` or `longest` (Kaggle: its 12-hour session) and kit stops a little before
    its end, so that the checkpoints it leaves are complete."""
    timed = per_member_minutes * members_per_job if per_member_minutes else (minutes or recipe.minutes.get(budget))
    if timed and not max_hours:
        return min(longest, timed / 60 + START_HOURS), None
    hours = max_hours or longest
    return hours, hours - min(STOP_MARGIN_HOURS, hours / 10)
