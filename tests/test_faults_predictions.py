"""Predictions a submission is made from, as a careless-but-realistic user would leave them (issue 19):
bound to the weights they came from, never NaN, and whole utterances of any length in bounded
memory. A problem is one line and exit 2 (README, "What kit promises")."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import kit.fsio
import kit.infer
from kit.cli import main
from kit.config import RunConfig
from kit.data import FeatureStore
from kit.ensemble import auto_ensemble, fit_temperature, hard_vote, load_member, pool_log_probs, soft_vote
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.infer import MAX_FULL_FRAMES, full_windows, predict_index
from kit.models import build_model
from kit.records import predictions_current
from kit.runs import run_lock
from kit.written import check_written, record_written

from conftest import kit_cli, one_error

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_SMALL = ["--set", "model.d_model=16", "--set", "model.ffn_dim=32", "--set", "data.segment_len=48",
               "--set", "data.store_dtype=float32", "--set", "train.eval_every=5", "--set", "train.warmup_steps=2",
               "--set", "train.cpu_threads=1", "--set", "train.max_steps=20", "--no-progress"]


@pytest.fixture(scope="module")
def trained_once(tiny_data, tmp_path_factory) -> Path:
    """A finished 20-step `kit train` run dir, trained once for the module (copy it before use)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *TRAIN_SMALL]) == 0
    return run


@pytest.fixture
def trained(trained_once, tmp_path) -> Path:
    """A private copy of the 20-step run (mtimes kept, as a user's copy would)."""
    return Path(shutil.copytree(trained_once, tmp_path / "run"))


# ---------------------------------------------------------------- 1. predictions belong to their weights
def test_ensemble_refuses_predictions_of_a_run_that_trained_on_since(trained, tmp_path, capsys):
    out = tmp_path / "subs"
    assert kit_cli(capsys, "predict", trained, "--no-progress")[0] == 0
    ids = json.loads((trained / "ids.json").read_text())
    assert ids["checkpoint_sha256"] == sha256_file(trained / "best.pt") and predictions_current(trained)
    best_at_20 = sha256_file(trained / "best.pt")

    assert kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress",
                   "--set", "train.max_steps=40")[0] == 0
    assert sha256_file(trained / "best.pt") != best_at_20           # the resumed run found better weights
    assert not predictions_current(trained)
    one_error(*kit_cli(capsys, "ensemble", trained, "--out", out)[::2],
              f"{trained}: its predictions do not come from the best.pt there now (trained on since, or "
              "replaced or damaged)",
              f"run `kit predict {trained}` again")
    assert not out.exists()                                         # nothing written from stale predictions

    assert kit_cli(capsys, "predict", trained, "--no-progress")[0] == 0
    code, _, _ = kit_cli(capsys, "ensemble", trained, "--out", out, "--name", "fresh")
    assert code == 0 and predictions_current(trained)
    manifest = json.loads((out / "fresh.json").read_text())
    assert manifest["member_settings"][0]["checkpoint_sha256"] == sha256_file(trained / "best.pt")


def test_predictions_current_asks_for_the_checkpoint_named(trained, capsys):
    assert not predictions_current(trained)                         # nothing predicted yet
    assert kit_cli(capsys, "predict", trained, "--which", "last", "--no-progress")[0] == 0
    assert predictions_current(trained) and predictions_current(trained, "last")
    assert predictions_current(trained, "best") == (sha256_file(trained / "best.pt")
                                                    == sha256_file(trained / "last.pt"))
    assert not predictions_current(trained, "avg")                  # no avg.pt: nothing came from it


def test_prediction_files_that_are_not_the_ones_ids_json_names_are_not_current(trained, capsys):
    """Probe 46: a kill between val_probs.npy and ids.json left files the vote refused; a recipe re-run
    took the member as predicted (its checkpoint matched) and stopped at the vote, asking for a
    `kit predict` by hand, where it could predict it again itself."""
    assert kit_cli(capsys, "predict", trained, "--which", "last", "--no-progress")[0] == 0
    assert predictions_current(trained)
    kept = (trained / "val_probs.npy").read_bytes()
    np.save(trained / "val_probs.npy", np.load(trained / "val_probs.npy")[::-1])      # another prediction's file
    assert not predictions_current(trained)
    (trained / "val_probs.npy").write_bytes(kept)
    assert predictions_current(trained)


def test_old_ids_json_without_a_hash_is_judged_by_time(predicted):
    run = predicted.run("old", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    assert load_member(run).ids.checkpoint_sha256 is None            # no checkpoint beside it: it still votes
    (run / "best.pt").write_bytes(b"weights")
    probs_time = (run / "test_probs.npy").stat().st_mtime
    os.utime(run / "best.pt", (probs_time - 60, probs_time - 60))    # saved before it was predicted
    assert predictions_current(run) and load_member(run)
    os.utime(run / "best.pt", (probs_time + 60, probs_time + 60))    # saved after
    assert not predictions_current(run)
    with pytest.raises(KitError, match=r"old: its predictions do not come from the best.pt there now .*kit predict"):
        load_member(run)


def test_a_recorded_hash_beats_the_clock(predicted):
    run = predicted.run("hashed", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    (run / "last.pt").write_bytes(b"weights at step 20")
    ids = json.loads((run / "ids.json").read_text())
    (run / "ids.json").write_text(json.dumps({**ids, "which": "last",
                                              "checkpoint_sha256": sha256_file(run / "last.pt")}))
    later = (run / "test_probs.npy").stat().st_mtime + 60
    os.utime(run / "last.pt", (later, later))                         # touched, same bytes: still current
    assert predictions_current(run) and load_member(run)
    (run / "last.pt").write_bytes(b"weights at step 400")
    with pytest.raises(KitError, match=r"the last.pt there now .*`kit predict .*hashed --which last` again"):
        load_member(run)


def test_a_checkpoint_copied_into_a_finished_run_is_not_predicted_as_its_own(trained, tiny_data, tmp_path, capsys):
    written = json.loads((trained / "checkpoints.json").read_text())
    assert written == {n: sha256_file(trained / n) for n in ("best.pt", "last.pt", "summary.json")} | {
        ".run": json.loads((trained / "identity.json").read_text())["run"],       # recorded as training wrote
        ".summaries": "recorded"}                                                 # them, under its run
    other = torch.load(trained / "best.pt", weights_only=True)
    other["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in other["model"].items()}
    torch.save(other, trained / "best.pt")                  # another run's weights of the same shape, copied in
    one_error(*kit_cli(capsys, "predict", trained, "--no-progress")[::2],
              f"{trained / 'best.pt'}: not the checkpoint this run's training wrote")
    assert not (trained / "ids.json").exists()
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "tune", *TRAIN_SMALL,
                       "--set", f"train.init_from={trained / 'best.pt'}")[::2],
              "not the checkpoint this run's training wrote")           # nor fine-tuned from
    one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress",        # nor resumed, which
                       "--set", "train.max_steps=40")[::2],                   # recorded it as the run's own
              f"{trained / 'best.pt'}: not the checkpoint this run's training wrote")
    assert json.loads((trained / "checkpoints.json").read_text()) == written


def test_a_kill_between_a_checkpoint_and_its_record_leaves_one_the_record_accepts(trained, monkeypatch):
    """The record takes the new file's digest beside the old one before the rename, and alone after it."""
    from kit.train.checkpoints import _save

    old = sha256_file(trained / "best.pt")
    seen = []
    real_replace = kit.fsio._replace

    def killed_before_rename(tmp, path):
        if Path(path).name != "best.pt":
            return real_replace(tmp, path)      # the record's own atomic write
        seen.append(json.loads((trained / "checkpoints.json").read_text())["best.pt"])
        raise KeyboardInterrupt                 # the kill, with the new file written but not yet in place

    monkeypatch.setattr(kit.fsio, "_replace", killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        _save({"model": {"w": torch.ones(3)}}, trained / "best.pt")
    assert seen[0][0] == old and len(seen[0]) == 2         # both accepted while the rename was pending
    assert sha256_file(trained / "best.pt") == old
    check_written(trained / "best.pt")                     # the old file, still accepted
    monkeypatch.setattr(kit.fsio, "_replace", real_replace)
    _save({"model": {"w": torch.ones(3)}}, trained / "best.pt")
    assert json.loads((trained / "checkpoints.json").read_text())["best.pt"] == sha256_file(trained / "best.pt")


def test_predict_refuses_a_run_a_trainer_is_training(trained, capsys):
    with run_lock(trained):
        one_error(*kit_cli(capsys, "predict", trained, "--no-progress")[::2],
                  f"{trained}: a trainer (pid {os.getpid()}) is training this run now")
    assert not (trained / "ids.json").exists()
    one_error(*kit_cli(capsys, "predict", trained, "--window", 100_000, "--no-progress")[::2],
              f"window 100000: at most {MAX_FULL_FRAMES} frames")


# ---------------------------------------------------------------- 2. a diverged member never reaches a vote
def test_predict_refuses_a_checkpoint_that_predicts_nan_and_writes_nothing(trained, capsys):
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    first = next(iter(ckpt["model"]))
    ckpt["model"][first] = torch.full_like(ckpt["model"][first], float("nan"))   # weights of a diverged run
    torch.save(ckpt, trained / "best.pt")
    record_written(trained / "best.pt")                     # as its training would have
    one_error(*kit_cli(capsys, "predict", trained, "--no-progress")[::2],
              f"{trained}: its best.pt predicts non-finite probabilities", "(the run diverged)")
    assert not list(trained.glob("*probs*.npy")) and not (trained / "ids.json").exists()


@pytest.mark.parametrize("vote", ["auto", "soft", "hard"])
def test_ensemble_refuses_a_member_with_nan_probabilities(predicted, tmp_path, capsys, vote):
    good = predicted.run("good", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    diverged = predicted.run("diverged", [0, 0, 0, 0, 0, 0], np.full((4, 3), np.nan))
    one_error(*kit_cli(capsys, "ensemble", good, diverged, "--vote", vote, "--folds", 3,
                       "--out", tmp_path / "subs")[::2],
              f"{diverged}: test_probs.npy holds non-finite probabilities (the run diverged)")
    assert not (tmp_path / "subs").exists()


def test_ensemble_names_a_cut_short_prediction_file(predicted, tmp_path, capsys):
    """Probe 45 #5: a truncated test_probs.npy was refused naming its run dir, not the file."""
    good = predicted.run("good", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    cut = predicted.run("cut", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    data = (cut / "test_probs.npy").read_bytes()
    (cut / "test_probs.npy").write_bytes(data[:len(data) - 20])
    code, _, err = kit_cli(capsys, "ensemble", good, cut, "--out", tmp_path / "subs")
    assert code == 2 and err.startswith(f"kit: error: {cut / 'test_probs.npy'}: unreadable predictions ("), err
    assert not (tmp_path / "subs").exists()


def test_a_member_collapsed_to_one_speaker_and_a_vote_under_its_best_member_are_said(predicted, tmp_path, capsys):
    good = predicted.run("good", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    fair = predicted.run("fair", [0, 1, 2, 0, 2, 2], [0, 1, 2, 1])
    stuck = predicted.run("stuck", [0, 0, 0, 0, 0, 0], [0, 0, 0, 0])       # finite, but one speaker everywhere
    code, out, err = kit_cli(capsys, "ensemble", good, stuck, "--vote", "soft", "--out", tmp_path / "subs")
    assert code == 0
    assert f"warning: {stuck} gives one speaker to 100% of the test utterances" in err
    assert f"warning: the soft vote scores 0.333 on validation, under its best member {good} (1.000)" in err
    code, out, err = kit_cli(capsys, "ensemble", good, fair, "--vote", "soft", "--out", tmp_path / "subs")
    assert code == 0 and "warning" not in err                   # a vote as good as its best member: nothing said
    code, out, err = kit_cli(capsys, "ensemble", good, stuck, "--vote", "soft", "--weights", "1,0", "--out",
                             tmp_path / "subs")
    assert code == 0 and f"{stuck} gives one speaker to 100% of the test utterances" in err
    assert "this vote gives it no weight" in err and "pulls" not in err       # probe 13


def test_the_vote_functions_refuse_nan_instead_of_crashing():
    labels = np.array([0, 1, 2, 0, 1, 2])
    good = np.eye(3)[labels] * 0.7 + 0.1
    nan = np.full_like(good, np.nan)
    with pytest.raises(KitError, match="member 2 of 2: its validation probabilities hold NaN"):
        auto_ensemble([good, nan], labels, [good, good], folds=3)   # was AttributeError: 'int' ... 'max'
    with pytest.raises(KitError, match="member 1 of 2: its test probabilities hold NaN"):
        auto_ensemble([good, good], labels, [nan, good], folds=3)
    with pytest.raises(KitError, match="NaN or inf"):
        soft_vote([good, nan])
    with pytest.raises(KitError, match="NaN or inf"):
        hard_vote([nan, good])
    with pytest.raises(KitError, match="NaN or inf"):
        fit_temperature(np.log(nan), labels)
    with pytest.raises(KitError, match="must be finite, non-negative and not all zero"):
        pool_log_probs([np.log(good), np.log(good)], [np.nan, np.nan], "geo")
    with pytest.raises(KitError, match="weights 1e[+]308, 1e[+]308: must be finite"):     # their sum overflows
        pool_log_probs([np.log(good), np.log(good)], [1e308, 1e308], "geo")


# ---------------------------------------------------------------- 5. long utterances in bounded memory
def test_a_long_utterance_is_cut_into_windows_no_longer_than_the_cap():
    lengths = [30_000, 100, MAX_FULL_FRAMES]
    utt, start, valid = full_windows(lengths)
    assert valid.max() == MAX_FULL_FRAMES                            # not one 30,000-frame window
    assert (utt == 1).sum() == 1 and (utt == 2).sum() == 1           # shorter ones stay whole
    covered = np.zeros(30_000, dtype=int)
    for s, v in zip(start[utt == 0], valid[utt == 0], strict=True):
        covered[s:s + v] += 1
    assert covered.min() >= 1 and (utt == 0).sum() == 14             # every frame; windows overlap by half


class FramesSeen(torch.nn.Module):
    """A model that records the frames of each window it is given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.windows = model, []

    def forward(self, x, lengths):                                  # x (B, T, D)
        self.windows += [x.shape[1]] * x.shape[0]
        return self.model(x, lengths)


def test_full_mode_feeds_a_long_utterance_in_windows_of_at_most_the_cap(monkeypatch):
    monkeypatch.setattr(kit.infer, "MAX_FULL_FRAMES", 256)           # the same arithmetic, small enough to run fast
    lengths = np.array([3000, 80])
    rng = np.random.default_rng(0)
    store = FeatureStore.__new__(FeatureStore)          # in memory, no files: what predict_index reads of a store
    store.lengths, store.offsets = lengths, np.array([0, 3000])
    store.features = rng.normal(size=(int(lengths.sum()), 40)).astype(np.float32)
    cfg = RunConfig().model
    cfg.d_model, cfg.ffn_dim, cfg.n_mels, cfg.n_classes = 16, 32, 40, 5
    torch.manual_seed(0)
    model = FramesSeen(build_model(cfg).eval())
    probs = predict_index(model, store, [0, 1], mode="full", batch_size=4)
    assert max(model.windows) == 256 and len(model.windows) == len(full_windows(lengths)[0]) == 23 + 1
    assert probs.shape == (2, 5) and np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # the long one is the average of its windows, as sliding windows of the cap would give it
    sliding = predict_index(model, store, [0], mode="sliding", window=256, hop=128, batch_size=4)
    np.testing.assert_allclose(probs[:1], sliding, atol=1e-6)
