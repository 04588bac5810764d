"""Sliding-window prediction: window arithmetic, batched = one-by-one, a trained run predicted."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kit.cli import main
from kit.config import InferConfig, RunConfig
from kit.data import FeatureStore
from kit.errors import KitError
from kit.infer import (
    _settings,
    centre_windows,
    choose_mode,
    length_batches,
    predict_index,
    predict_one_by_one,
    predict_run,
    sliding_windows,
)
from kit.models import build_model

from conftest import train_tiny_run


# ---------------------------------------------------------------- window arithmetic
@pytest.mark.parametrize("window, hop", [(8, 4), (8, 8), (8, 3), (5, 1)])
def test_sliding_windows_cover_every_frame(window, hop):
    lengths = np.array([1, 3, 7, 8, 9, 12, 16, 17, 40])
    utt, start, valid = sliding_windows(lengths, window, hop)
    for i, n in enumerate(lengths):
        mine = utt == i
        covered = np.zeros(n, dtype=int)
        for s, v in zip(start[mine], valid[mine], strict=True):
            assert 0 <= s and s + v <= n                       # inside the utterance
            covered[s:s + v] += 1
        assert covered.min() >= 1                                # every frame seen
        assert mine.sum() == max(1, int(np.ceil((n - window) / hop)) + 1)   # no spare windows
        assert np.all(np.diff(start[mine]) > 0)                  # in time order, no duplicates
        assert start[mine][-1] + valid[mine][-1] == n            # last window ends at the end


def test_short_utterance_is_one_window_and_bad_settings_are_refused():
    utt, start, valid = sliding_windows([5, 100], window=10, hop=5)
    assert (utt[0], start[0], valid[0]) == (0, 0, 5) and (utt == 0).sum() == 1
    with pytest.raises(KitError, match="hop 20 > window 10"):
        sliding_windows([50], window=10, hop=20)
    _, start, valid = centre_windows([5, 30], window=10)
    assert start.tolist() == [0, 10] and valid.tolist() == [5, 10]


def test_length_batches_group_similar_lengths_within_budget():
    valid = np.array([10, 300, 20, 300, 15, 290, 10])
    batches = length_batches(valid, batch_size=3, max_frames=600)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))      # each window once
    for b in batches:
        assert len(b) <= 3 and len(b) * valid[b].max() <= 600
    assert sorted(valid[batches[0]].tolist()) == [300, 300]                # longest together
    for b in length_batches(valid, batch_size=8, max_frames=10_000, max_area=300 * 300):
        assert len(b) == 1 or len(b) * valid[b].max() ** 2 <= 300 * 300     # attention area capped


def test_choose_mode_prefers_the_lower_calibrated_nll_and_ties_to_sliding():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    z = rng.normal(0, 1, (200, 4))
    sharp = z.copy()
    sharp[np.arange(200), labels] += 3                       # informative
    softmax = lambda a: np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)   # noqa: E731
    mode, nll = choose_mode({"full": softmax(sharp), "sliding": softmax(z)}, labels)
    assert mode == "full" and nll["full"] < nll["sliding"]
    # over-confidence alone does not lose: the NLL is compared after temperature scaling
    assert choose_mode({"full": softmax(5 * sharp), "sliding": softmax(z)}, labels)[0] == "full"
    assert choose_mode({"full": softmax(z), "sliding": softmax(z)}, labels)[0] == "sliding"
    assert choose_mode({"full": softmax(z[:0]), "sliding": softmax(z[:0])}, labels[:0]) == ("sliding", {})


# ---------------------------------------------------------------- batched prediction
@pytest.fixture(scope="module")
def store(tiny_data, tmp_path_factory):
    # the cache goes outside tiny_data, which is shared and read-only
    return FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path_factory.mktemp("cache"),
                             progress=False)


def tiny_model(store, pooling="mean"):
    cfg = RunConfig().model
    cfg.d_model, cfg.ffn_dim, cfg.pooling = 16, 32, pooling
    cfg.n_mels, cfg.n_classes = store.n_mels, len(store.speakers)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_batched_full_length_matches_one_by_one(store):
    model = tiny_model(store, pooling="sap")
    index = store.test_index
    batched = predict_index(model, store, index, mode="full", batch_size=7, window=64)
    single = predict_one_by_one(model, store, index)
    assert batched.shape == single.shape == (len(index), len(store.speakers))
    np.testing.assert_allclose(batched, single, atol=1e-5)      # padding is fully masked


@pytest.mark.parametrize("average", ["probs", "logits"])
def test_sliding_window_average_is_a_distribution(store, average):
    model = tiny_model(store)
    index = store.test_index
    probs = predict_index(model, store, index, mode="sliding", window=40, hop=20, average=average,
                          batch_size=16)
    assert probs.dtype == np.float32 and probs.shape == (len(index), len(store.speakers))
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    # the same windows in another batching give the same answer
    again = predict_index(model, store, index, mode="sliding", window=40, hop=20, average=average,
                          batch_size=3)
    np.testing.assert_allclose(probs, again, atol=1e-5)


# ---------------------------------------------------------------- a trained run
@pytest.fixture(scope="module")
def trained_run(store, tmp_path_factory):
    return train_tiny_run(store, tmp_path_factory.mktemp("runs") / "tiny")


def test_no_compare_without_a_mode_that_allows_it_is_said(trained_run, tmp_path, capsys):
    """probe 40: --no-compare without --mode full or sliding was ignored without a word."""
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))          # predicted here, not in the module's run
    assert main(["predict", str(run), "--no-compare", "--no-progress"]) == 0      # the run's mode: auto
    assert "--no-compare ignored: its mode is auto" in capsys.readouterr().err
    assert main(["predict", str(run), "--no-compare", "--mode", "full", "--no-progress"]) == 0
    assert "--no-compare ignored" not in capsys.readouterr().err


def test_predict_run_writes_probabilities_and_ids(trained_run, store):
    r = predict_run(trained_run, store=store, progress=False)
    val, test = np.load(trained_run / "val_probs.npy"), np.load(trained_run / "test_probs.npy")
    ids = json.loads((trained_run / "ids.json").read_text())
    c = len(store.speakers)
    assert val.dtype == test.dtype == np.float32
    assert val.shape == (len(ids["val"]), c) and test.shape == (store.n_test, c)
    np.testing.assert_allclose(val.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(test.sum(axis=1), 1, atol=1e-5)
    assert ids["test"] == [store.paths[i] for i in store.test_index]
    assert len(ids["val_labels"]) == len(ids["val"]) == r["n_val"] > 0
    assert (ids["window"], ids["hop"], ids["average"]) == (64, 32, "probs")
    for key in ("val_acc", "val_acc_centre", "val_acc_full", "val_acc_sliding"):
        assert 0.0 <= r[key] <= 1.0
    assert ids["mode_requested"] == "auto"                     # the default: chosen on validation
    assert r["val_acc"] == r[f"val_acc_{ids['mode']}"] and ids["full"] == (ids["mode"] == "full")
    assert r["val_acc"] == pytest.approx(float((val.argmax(1) == np.array(ids["val_labels"])).mean()))


def test_predict_run_auto_mode_chooses_on_validation_and_saves_every_way(trained_run, store):
    r = predict_run(trained_run, store=store, progress=False, mode="auto")
    ids = json.loads((trained_run / "ids.json").read_text())
    assert ids["mode_requested"] == "auto" and r["mode"] == ids["mode"] in ("full", "sliding")
    assert ids["full"] == (ids["mode"] == "full")
    assert ids["mode"] == ("full" if ids["val_nll_full"] < ids["val_nll_sliding"] else "sliding")
    labels = np.array(ids["val_labels"])
    for way in ("centre", "full", "sliding"):
        probs = np.load(trained_run / f"val_probs_{way}.npy")
        assert ids[f"val_acc_{way}"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    np.testing.assert_array_equal(np.load(trained_run / "val_probs.npy"),
                                  np.load(trained_run / f"val_probs_{ids['mode']}.npy"))
    with pytest.raises(KitError, match="either mode or full"):
        predict_run(trained_run, store=store, progress=False, mode="auto", full=True)


def test_cli_predict_full_then_ensemble(trained_run, store, tiny_answers, tmp_path, capsys, monkeypatch):
    import kit.infer

    # the CLI opens the store from the run's config; point it at this module's cache
    monkeypatch.setattr(kit.infer.FeatureStore, "open", classmethod(lambda cls, *a, **k: store))
    assert main(["predict", str(trained_run), "--full", "--average", "logits", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "centre" in out and str(trained_run) in out
    ids = json.loads((trained_run / "ids.json").read_text())
    assert ids["full"] is True and ids["mode"] == "full" and ids["average"] == "logits"
    assert ids["val_acc"] == ids["val_acc_full"]
    subs = tmp_path / "subs"
    assert main(["ensemble", str(trained_run), "--vote", "soft", "--name", "x", "--out", str(subs)]) == 0
    assert main(["validate", str(subs / "x.csv"), "--data", str(store.layout.data_dir)]) == 0
    # the local score agrees with the saved probabilities and the answer key
    import pandas as pd

    key = pd.read_csv(tiny_answers).set_index("Id").loc[ids["test"]]
    pred = [store.speakers[k] for k in np.load(trained_run / "test_probs.npy").argmax(1)]
    capsys.readouterr()
    assert main(["score", str(subs / "x.csv"), "--answers", str(tiny_answers), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["overall"]["correct"] == int((key["Category"].to_numpy() == np.array(pred)).sum())
    assert r["public"]["n"] + r["private"]["n"] == store.n_test


def test_a_window_under_the_runs_hop_brings_the_hop_down_with_it(tmp_path):
    inf = InferConfig(window=256, hop=128)
    asked = _settings(inf, tmp_path, window=64, hop=None, full=None, average=None, batch_size=None, mode="full")
    assert (asked["window"], asked["hop"]) == (64, 64)        # not "hop 128 > window 64", a hop never given
    assert _settings(inf, tmp_path, None, None, None, None, None, None)["hop"] == 128
    with pytest.raises(KitError, match="hop 100 > window 64"):      # a hop the user gave is still checked
        _settings(inf, tmp_path, window=64, hop=100, full=None, average=None, batch_size=None, mode=None)
