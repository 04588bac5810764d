"""Where a recipe's members train: `local` (here: kit.zoo trains them in this process or in
kit.workers' member processes), `kaggle` (Kaggle kernels on their GPUs: kaggle_kernels) or `slurm`
(one submitit job per member: slurm).

A member is a self-contained job: each remote launcher runs `kit recipe run RECIPE --only MEMBERS
--no-ensemble` somewhere else, brings the run dirs back under RUNS/<recipe>/, and returns; the
recipe's after stages (ensemble, report, submit) then run here as they do for `local`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from kit.errors import KitError

LAUNCHERS = ("local", "kaggle", "slurm")


class Launcher(Protocol):
    """What kit.zoo.run_recipe hands members to when they do not train here. `train` returns once
    every member has finished, stopped at its time limit or failed (a failure raises KitError), with
    their run dirs under `root`; time limits come from kit.timeplan.time_limits. `local` is no
    object: make_launcher returns None and run_recipe trains the members itself."""

    def train(self, recipe, names: list[str], root: Path, budget: str, data_dir: Path, log,
              minutes: float | None = None, per_member_minutes: float | None = None,
              max_hours: float | None = None, fresh: bool = False) -> None: ...


def make_launcher(name: str, kernels: int | None = None, competition: str | None = None,
                  endpoint: str | None = None, partition: str | None = None,
                  cluster: str | None = None) -> Launcher | None:
    """The launcher object run_recipe hands the members to (None: train here). Options that belong
    to another launcher are refused, so a typo does not pass silently."""
    if name not in LAUNCHERS:
        raise KitError(f"--launcher {name}: choose one of {', '.join(LAUNCHERS)}")
    given = {"--kernels": (kernels, "kaggle"), "--endpoint": (endpoint, "kaggle"),
             "--slurm-partition": (partition, "slurm"), "--submitit-cluster": (cluster, "slurm")}
    for flag, (value, owner) in given.items():
        if value is not None and owner != name:
            raise KitError(f"{flag} is an option of --launcher {owner} (this run: --launcher {name})")
    if name == "kaggle":
        # deferred: kit.launch.kaggle_kernels imports this package (a cycle at module level)
        from kit.launch.kaggle_kernels import KaggleLauncher

        if kernels is not None and kernels < 1:
            raise KitError(f"--kernels {kernels}: must be at least 1")
        return KaggleLauncher(kernels=kernels or 2, competition=competition, endpoint=endpoint)
    if name == "slurm":
        # deferred: kit.launch.slurm imports this package (a cycle at module level)
        from kit.launch.slurm import SlurmLauncher

        return SlurmLauncher(partition=partition, cluster=cluster or "slurm")
    return None
