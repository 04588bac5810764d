"""Training: a tiny run learns and fills its run dir; resume equals an uninterrupted run exactly;
load_model round-trips; early stopping, time and epoch budgets, checkpoint averaging."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from kit.config import layered, parse_overrides
from kit.data import FeatureStore, load_split, split_for
from kit.rundir import RunDir
from kit.train import METRIC_COLUMNS, average_state_dicts, load_model, train


def tiny_cfg(data_dir, *overrides: str):
    base = {"data": {"data_dir": str(data_dir), "segment_len": 64, "store_dtype": "float32"},
            "model": {"d_model": 32, "ffn_dim": 64, "n_heads": 2},
            "train": {"batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "max_steps": 150, "eval_every": 25,
                      "cpu_threads": 1}}
    return layered(("tiny_cfg", base), ("--set", parse_overrides(list(overrides))))


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    summary = train(tiny_cfg(tiny_data), run_dir, progress=False)
    return run_dir, summary


def test_tiny_training_learns_above_chance(tiny_run):
    _, summary = tiny_run
    # 8 speakers: chance is 0.125 on the 8 held-out utterances
    assert summary["best_val_acc"] >= 0.375
    assert summary["step"] == 150 and summary["stopped_reason"] == "budget"


def test_run_dir_holds_what_later_commands_need(tiny_run, tiny_data):
    run_dir, summary = tiny_run
    for name in ("config.toml", "split.json", "last.pt", "best.pt", "metrics.csv", "curves.png", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics["step"].tolist() == [25, 50, 75, 100, 125, 150]
    assert metrics["val_acc"].max() == pytest.approx(summary["best_val_acc"])
    store = FeatureStore.open(tiny_data, "float32", progress=False)
    saved, shared = load_split(run_dir / "split.json", store), split_for(store, 0.1, 0)
    assert saved.val.tolist() == shared.val.tolist()       # the split every recipe member shares
    assert RunDir.of(run_dir).summary() == summary


def test_load_model_round_trip(tiny_run):
    run_dir, summary = tiny_run
    model, cfg = load_model(run_dir, "best")
    assert not model.training
    assert (cfg.model.n_mels, cfg.model.n_classes) == (40, 8)        # filled in from the data
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["step"] == summary["best_step"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, best["model"][name])
    logits = model(torch.randn(2, 50, 40), torch.tensor([50, 30]))
    assert logits.shape == (2, 8)


def _state(path):
    return torch.load(path, weights_only=True)["model"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_data, tmp_path):
    # dropout, SpecAugment, EMA, margin warm-up and averaging all carry state across the break
    settings = ["train.max_steps=20", "train.eval_every=5", "model.dropout=0.2", "augment.specaugment=true",
                "train.ema=true", "train.ema_decay=0.9", "model.head=amsoftmax", "model.margin_warmup_steps=15",
                "train.average_last=2"]
    straight = train(tiny_cfg(tiny_data, *settings), tmp_path / "straight", progress=False)
    interrupted = train(tiny_cfg(tiny_data, *settings), tmp_path / "resumed", progress=False, stop_after=12)
    assert interrupted["stopped_reason"] == "interrupted" and RunDir.of(tmp_path / "resumed").summary() is None
    resumed = train(tiny_cfg(tiny_data, *settings), tmp_path / "resumed", resume=True, progress=False)
    assert resumed["step"] == straight["step"] == 20
    for name in ("last.pt", "best.pt", "avg.pt"):
        a, b = _state(tmp_path / "straight" / name), _state(tmp_path / "resumed" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    cols = ["step", "train_loss", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight" / "metrics.csv")[cols],
                                  pd.read_csv(tmp_path / "resumed" / "metrics.csv")[cols])


def test_a_kill_at_the_first_evaluation_leaves_a_run_that_resumes(tiny_data, tmp_path, monkeypatch):
    """Probe 14: best.pt was written before last.pt, so a kill between them at the first evaluation left
    a run that could neither resume nor re-run. last.pt comes first now, and the resume writes the best.pt
    it implies (the weights at its step were the best)."""
    from kit.train.checkpoints import BEST, CheckpointSaver

    settings = ["train.max_steps=20", "train.eval_every=10"]
    straight = train(tiny_cfg(tiny_data, *settings), tmp_path / "straight", progress=False)

    def killed(self, state):
        raise SystemExit(137)               # the kill, last.pt written, best.pt not

    with monkeypatch.context() as m:
        m.setattr(CheckpointSaver, "_save_best", killed)
        with pytest.raises(SystemExit):
            train(tiny_cfg(tiny_data, *settings), tmp_path / "killed", progress=False)
    assert (tmp_path / "killed" / "last.pt").is_file() and not (tmp_path / "killed" / BEST).exists()
    train(tiny_cfg(tiny_data, *settings), tmp_path / "killed", resume=True, progress=False, stop_after=12)
    assert torch.load(tmp_path / "killed" / BEST, weights_only=True)["step"] == 10      # written at the resume
    resumed = train(tiny_cfg(tiny_data, *settings), tmp_path / "killed", resume=True, progress=False)
    assert resumed["step"] == 20 and resumed["best_step"] == straight["best_step"]
    a, b = _state(tmp_path / "straight" / BEST), _state(tmp_path / "killed" / BEST)
    assert all(torch.equal(a[k], b[k]) for k in a)          # the same best weights as an uninterrupted run


def test_early_stopping_after_patience(tiny_data, tmp_path):
    # lr 0: validation never improves after the first evaluation
    summary = train(tiny_cfg(tiny_data, "train.lr=0", "train.patience=2", "train.eval_every=5"),
                    tmp_path / "run", progress=False)
    assert summary["stopped_reason"] == "early_stop"
    assert summary["step"] == 15 and summary["best_step"] == 5


def test_epoch_budget_and_time_budget(tiny_data, tmp_path):
    by_epochs = train(tiny_cfg(tiny_data, "train.max_epochs=2", "train.eval_every=100"), tmp_path / "e",
                      progress=False)
    assert by_epochs["total_steps"] == 11                      # ceil(2 epochs x 88 utterances / 16)
    timed = train(tiny_cfg(tiny_data, "train.max_minutes=1e-9"), tmp_path / "t", progress=False)
    assert timed["stopped_reason"] == "time" and timed["step"] == 1
    assert (tmp_path / "t" / "last.pt").is_file() and (tmp_path / "t" / "best.pt").is_file()


def test_average_of_last_checkpoints(tiny_data, tmp_path):
    summary = train(tiny_cfg(tiny_data, "train.max_steps=30", "train.eval_every=10", "train.average_last=2"),
                    tmp_path / "run", progress=False)
    assert summary["averaged"] == 2 and 0.0 <= summary["avg_val_acc"] <= 1.0
    model, _ = load_model(tmp_path / "run", "avg")
    assert model(torch.randn(1, 20, 40), torch.tensor([20])).shape == (1, 8)


def test_average_state_dicts_means_floats_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(4)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 9


def test_cli_train_then_resume_with_a_longer_budget(tiny_data, tmp_path, capsys):
    import json

    from kit.cli import main

    run = tmp_path / "run"
    common = ["--set", "model.d_model=16", "--set", "model.ffn_dim=32", "--set", "data.segment_len=48",
              "--set", "train.eval_every=10", "--set", "train.warmup_steps=2", "--set", "train.cpu_threads=1"]
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--no-progress",
                 "--set", "train.max_steps=10", *common]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["step"] == 10 and first["name"] == "run"
    # --resume without --config reuses the run's saved config; --set extends the budget
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--set", "train.max_steps=20"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["step"] == 20 and second["params"] == first["params"]
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["step"].tolist() == [10, 20]
    assert metrics["lr"].iloc[1] > 0            # the schedule stretched to the new budget


@pytest.mark.slow
def test_compiled_training_saves_plain_checkpoints(tiny_data, tmp_path, monkeypatch):
    """train.compile wraps the model in torch.compile (backend forced to eager here: inductor takes
    minutes on a CPU); checkpoints hold the plain module's keys, with the AM-Softmax margin ramping."""
    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **kw):
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    cfg = tiny_cfg(tiny_data, "train.compile=true", "train.max_steps=30", "train.eval_every=15",
                   "model.head=amsoftmax", "model.margin_warmup_steps=20", "model.am_s=10")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert len(compiled) == 1 and summary["step"] == 30
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod") for k in saved)
    model, _ = load_model(tmp_path / "run", "best")
    assert set(model.state_dict()) == set(saved)


def test_step_timer_callback_sees_the_session(tiny_data, tmp_path):
    from kit.train import StepTimer

    timer, events = StepTimer(), []

    class Spy:
        def on_step(self, trainer):
            events.append(trainer.state.step)

        def on_evaluated(self, trainer, seconds):
            events.append(("eval", trainer.state.step))

    summary = train(tiny_cfg(tiny_data, "train.max_steps=12", "train.eval_every=6"), tmp_path / "run",
                    progress=False, callbacks=[timer, Spy()])
    assert timer.steps == summary["step"] == 12
    assert 0 < timer.seconds <= timer.window[1] - timer.window[0]
    assert events[:7] == [1, 2, 3, 4, 5, 6, ("eval", 6)] and events[-1] == ("eval", 12)
