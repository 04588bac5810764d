"""Where a recipe's members train: `local` (this machine's process pool, in kit.recipe), `kaggle`
(Kaggle kernels on their GPUs: kaggle_kernels) or `slurm` (one submitit job per member: slurm).

A member is a self-contained job: each launcher runs `kit recipe run RECIPE --only MEMBERS
--no-ensemble` somewhere else, brings the run dirs back under RUNS/<recipe>/, and returns; the
recipe's after stages (ensemble, report, submit) then run here as they do for `local`.
"""
from __future__ import annotations

import json
from pathlib import Path

from kit.errors import KitError

LAUNCHERS = ("local", "kaggle", "slurm")
MAX_ROUNDS = 4             # kernel versions / job rounds one command starts for the same members
START_HOURS = 0.25         # a job's own time beyond training: start, installs, packing the data, predicting
STOP_MARGIN_HOURS = 0.25   # kit in a job stops this long before the job's limit, so its checkpoints are kept


def make_launcher(name: str, kernels: int | None = None, competition: str | None = None,
                  endpoint: str | None = None, partition: str | None = None, cluster: str | None = None):
    """The launcher object run_recipe hands the members to (None: train here). Options that belong
    to another launcher are refused, so a typo does not pass silently."""
    if name not in LAUNCHERS:
        raise KitError(f"--launcher {name}: choose one of {', '.join(LAUNCHERS)}")
    given = {"--kernels": (kernels, "kaggle"), "--competition": (competition, "kaggle"),
             "--endpoint": (endpoint, "kaggle"), "--slurm-partition": (partition, "slurm"),
             "--submitit-cluster": (cluster, "slurm")}
    for flag, (value, owner) in given.items():
        if value is not None and owner != name:
            raise KitError(f"{flag} is an option of --launcher {owner} (this run: --launcher {name})")
    if name == "kaggle":
        from kit.launch.kaggle_kernels import KaggleLauncher

        if kernels is not None and kernels < 1:
            raise KitError(f"--kernels {kernels}: must be at least 1")
        return KaggleLauncher(kernels=kernels or 2, competition=competition, endpoint=endpoint)
    if name == "slurm":
        from kit.launch.slurm import SlurmLauncher

        return SlurmLauncher(partition=partition, cluster=cluster or "slurm")
    return None


def member_args(recipe_file: str, members: list[str], budget: str, runs: str, data: str | None = None,
                minutes: float | None = None, per_member_minutes: float | None = None,
                max_hours: float | None = None) -> list[str]:
    """`kit recipe run` arguments that train and predict `members` only (no ensemble, no stages after
    it, no submission): what a kernel or a job runs; the stages run here after the vote. The budget is always given: a copy of synthetic data elsewhere
    may lack the marker that makes `quick` the default."""
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
