"""Experiment trackers (train.log_with) through accelerate's own: a train() callback that opens
one tracker run per run dir, logs each evaluation's metrics row to it, and closes it at the end.
"""
from __future__ import annotations

from pathlib import Path

from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType, ProjectConfiguration

from kit.errors import KitError
from kit.identity import flat_config

PROJECT = "kit"             # the W&B / MLflow / ClearML project every run logs to
FOLDER = "trackers"         # in the run dir, so the launchers, which bring whole run dirs back, bring it too


def check_installed(name: str) -> None:
    """Refuse a tracker whose package is missing: accelerate would drop it with a debug line and
    the run would train without logging."""
    if LoggerType(name) not in get_available_trackers():
        raise KitError(f"train.log_with = {name}: the {name} package is not installed (pip install {name})")


def project_config(run_dir: str | Path) -> ProjectConfiguration:
    """Where accelerate's trackers that take a folder (tensorboard, aim) write: RUN_DIR/trackers."""
    run_dir = Path(run_dir)
    return ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / FOLDER))


def group_of(run_dir: Path) -> str:
    """The recipe a run belongs to, taken as the name of the folder holding its run dir: in kit's
    layout RUNS/<recipe>/<member> that is the recipe's name (also for its pseudo-label rounds'
    <member>-pl<r>). A lone `kit train --out runs/x` is grouped under "runs", the folder it is in:
    the run dir's path is all a member knows of its recipe, and this needs nothing recorded."""
    return Path(run_dir).resolve().parent.name


def init_kwargs(run_name: str, group: str, folder: Path) -> dict:
    """Each tracker's own settings: the run named after the run dir, grouped by recipe, files in
    `folder` where the tracker takes one. Trackers not named here get accelerate's defaults (comet_ml,
    swanlab, trackio; mlflow keeps its MLFLOW_TRACKING_URI, ./mlruns unless set)."""
    return {"wandb": {"name": run_name, "group": group, "dir": str(folder)},
            "mlflow": {"run_name": run_name},
            "clearml": {"task_name": run_name},
            "aim": {"experiment": group},
            "dvclive": {"dir": str(folder / "dvclive")}}


def logged_values(row: dict, steps_before: int) -> dict:
    """What one evaluation logs, from its metrics.csv row. steps_per_second: this session's training
    steps so far over their seconds, evaluations left out (row["step_seconds"]); the first steps'
    warm-up is in it, as it is in the time budget."""
    steps = row["step"] - steps_before
    values = {"train/loss": row["train_loss"], "train/acc": row["train_acc"], "val/loss": row["val_loss"],
              "val/acc": row["val_acc"], "lr": row["lr"]}
    if row["step_seconds"] > 0 and steps > 0:
        values["steps_per_second"] = steps / row["step_seconds"]
    return {k: float(v) for k, v in values.items()}


class TrackerLog:
    """A train() callback for train.log_with: accelerate's trackers, on the main process only (its
    init_trackers and log run there alone; the other ranks hold no tracker)."""

    def on_train_begin(self, trainer) -> None:
        acc, folder = trainer.accelerator, trainer.run_dir / FOLDER
        if acc.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)      # wandb falls back to a temp dir when its dir is missing
        config = {k: v for k, v in flat_config(trainer.cfg).items() if isinstance(v, (str, int, float, bool))}
        acc.init_trackers(PROJECT, config=config,
                          init_kwargs=init_kwargs(trainer.cfg.name, group_of(trainer.run_dir), folder))

    def on_evaluated(self, trainer, seconds: float) -> None:
        row = trainer.metrics[-1]                           # the row evaluate() just appended
        trainer.accelerator.log(logged_values(row, trainer.clock.steps_before), step=int(row["step"]))

    def on_train_end(self, trainer, summary: dict) -> None:
        # accelerator.end_training() would also destroy the DDP process group, which Trainer.finish's
        # wait_for_everyone and kit.train.end_distributed still use: close the trackers alone.
        for tracker in trainer.accelerator.trackers:
            tracker.finish()
        trainer.accelerator.trackers.clear()
