"""Predictions that no longer describe the run are never voted: a `kit predict` killed while it
writes, and a data dir whose json files changed after the run trained on it."""
from __future__ import annotations

import json
import shutil

import pytest

import kit.infer
from kit.data import FeatureStore
from kit.ensemble.members import load_member
from kit.errors import KitError
from kit.infer import predict_run

from conftest import kit_cli, one_error, train_tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_on_copy(tiny_data, tmp_path_factory):
    """A writable copy of the tiny competition and a run trained on it (30 steps)."""
    data = shutil.copytree(tiny_data, tmp_path_factory.mktemp("data") / "tiny",
                           ignore=shutil.ignore_patterns(".kit-cache"))
    store = FeatureStore.open(data, dtype="float32", progress=False)
    run = train_tiny_run(store, tmp_path_factory.mktemp("runs") / "tiny")
    return data, run


def test_a_predict_killed_while_writing_leaves_no_predictions_to_vote(run_on_copy, monkeypatch):
    _, run = run_on_copy
    predict_run(run, which="best", progress=False)
    load_member(run)                                    # predicted: a member the vote can use
    real_save = kit.infer.save_numpy

    def killed_at_test_probs(path, array):
        if path.name == "test_probs.npy":
            raise SystemExit(137)                       # the process dies here, as under kill -9
        real_save(path, array)

    monkeypatch.setattr(kit.infer, "save_numpy", killed_at_test_probs)
    with pytest.raises(SystemExit):
        predict_run(run, which="last", mode="full", progress=False)
    # new validation files sit beside the old test file: no ids.json may vouch for them
    assert not (run / "ids.json").exists()
    with pytest.raises(KitError, match="no ids.json; run `kit predict"):
        load_member(run)
    monkeypatch.setattr(kit.infer, "save_numpy", real_save)
    predict_run(run, which="last", mode="full", progress=False)
    assert load_member(run).ids.which == "last"


def test_a_run_is_not_predicted_or_voted_after_its_speaker_mapping_changed(run_on_copy, tmp_path, capsys):
    data, run = run_on_copy
    assert kit_cli(capsys, "predict", run, "--no-progress")[0] == 0
    mapping_file = data / "mapping.json"
    original = mapping_file.read_bytes()
    mapping = json.loads(original)
    speakers = list(mapping["speaker2id"])
    rotated = speakers[1:] + speakers[:1]              # every class index now names another speaker
    mapping["speaker2id"] = {s: i for i, s in enumerate(rotated)}
    mapping["id2speaker"] = {str(i): s for i, s in enumerate(rotated)}
    mapping_file.write_text(json.dumps(mapping))
    try:
        code, _, err = kit_cli(capsys, "ensemble", run, "--name", "x", "--out", tmp_path / "subs")
        one_error(code, err, str(data), "mapping.json", str(run), "changed since")
        assert not (tmp_path / "subs" / "x.csv").exists()
        code, _, err = kit_cli(capsys, "predict", run, "--no-progress")
        one_error(code, err, "mapping.json", "changed since")
    finally:
        mapping_file.write_bytes(original)
    # the same bytes again: the same data, voted as before
    assert kit_cli(capsys, "ensemble", run, "--name", "x", "--out", tmp_path / "subs")[0] == 0


@pytest.mark.parametrize("folds", ["0", "1", "-3"])
def test_fewer_than_two_cross_fitting_folds_is_one_line(run_on_copy, tmp_path, capsys, folds):
    _, run = run_on_copy
    if not (run / "ids.json").exists():
        predict_run(run, progress=False)
    for vote in ("auto", "soft"):                   # refused even where the vote would not use them
        code, _, err = kit_cli(capsys, "ensemble", run, "--vote", vote, "--folds", folds,
                               "--name", "x", "--out", tmp_path)
        one_error(code, err, f"--folds {folds}", "at least 2 folds")   # no numpy warning above it
