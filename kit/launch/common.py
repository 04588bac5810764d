"""What every launcher shares: the `kit recipe run` arguments a kernel or a job runs (a job's time
limits: kit.timeplan.time_limits; whether a member has finished: kit.rundir.RunDir)."""
from __future__ import annotations

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

