"""Experiment trackers (train.log_with): a tiny run logs each evaluation to TensorBoard inside its
run dir; an unknown or uninstalled tracker is one line; turning tracking on does not change a run."""
from __future__ import annotations

import pandas as pd
import pytest
from accelerate.utils import LoggerType
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kit.config import TRACKERS, layered, parse_overrides
from kit.errors import KitError
from kit.train import train
from kit.train.trackers import FOLDER, PROJECT, check_installed

from conftest import kit_cli, one_error

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"model.d_model": 16, "model.ffn_dim": 32, "data.segment_len": 48, "data.store_dtype": "float32",
         "train.eval_every": 5, "train.warmup_steps": 2, "train.cpu_threads": 1, "train.max_steps": 10}
LOGGED = {"train/loss": "train_loss", "train/acc": "train_acc", "val/loss": "val_loss", "val/acc": "val_acc",
          "lr": "lr"}


def small_cfg(data_dir, *overrides: str):
    return layered(("small", parse_overrides([f"{k}={v}" for k, v in SMALL.items()])),
                   ("data", {"data": {"data_dir": str(data_dir)}}), ("--set", parse_overrides(list(overrides))))


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run's TensorBoard event files hold: tag -> [(step, value)]."""
    events = EventAccumulator(str(run_dir / FOLDER / PROJECT))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logs_each_evaluation_inside_the_run_dir(tiny_data, tmp_path):
    run = tmp_path / "tiny" / "member"            # RUNS/<recipe>/<member>, as a recipe lays it out
    summary = train(small_cfg(tiny_data, "train.log_with=tensorboard"), run, progress=False)
    assert summary["step"] == 10
    metrics = pd.read_csv(run / "metrics.csv")
    logged = scalars(run)
    for tag, column in LOGGED.items():
        assert [step for step, _ in logged[tag]] == [5, 10], tag
        assert [value for _, value in logged[tag]] == pytest.approx(metrics[column].tolist(), rel=1e-6), tag
    rates = [value for _, value in logged["steps_per_second"]]
    assert [step for step, _ in logged["steps_per_second"]] == [5, 10] and all(r > 0 for r in rates)
    assert rates == pytest.approx((metrics["step"] / metrics["step_seconds"]).tolist(), rel=1e-6)


def test_an_unknown_tracker_is_one_line_naming_the_known_ones(tiny_data, tmp_path, capsys):
    code, _, err = kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "run", "--no-progress",
                           "--set", "train.log_with=tensorbored")
    one_error(code, err, "train.log_with = 'tensorbored'", "tensorboard, wandb, mlflow")
    assert not (tmp_path / "run").exists()


def test_a_missing_tracker_package_is_refused_before_training(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("kit.train.trackers.get_available_trackers", lambda: [LoggerType.TENSORBOARD])
    with pytest.raises(KitError, match=r"^train.log_with = wandb: the wandb package is not installed "
                                       r"\(pip install wandb\)$"):
        train(small_cfg(tiny_data, "train.log_with=wandb"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    check_installed("tensorboard")


def test_the_known_trackers_are_accelerates():
    assert set(TRACKERS) == set(LoggerType.list()) - {"all"}


def test_resuming_with_tracking_turned_on_keeps_the_run(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_cfg(tiny_data), run, progress=False, stop_after=5)
    code, _, err = kit_cli(capsys, "train", "--out", run, "--resume", "--no-progress",
                           "--set", "train.log_with=tensorboard")
    assert code == 0, err
    assert [step for step, _ in scalars(run)["val/acc"]] == [10]     # this session's evaluation
