"""Predictions that no longer describe the run are never voted: a `kit predict` killed while it
writes, a data dir whose json files changed after the run trained on it, a run its trainer is
training now, and probability files that are not the ones ids.json recorded, or not probabilities."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import kit.infer
from kit.data import FeatureStore
from kit.ensemble.members import load_member
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.infer import predict_run
from kit.runs import run_lock

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


# every command that reads a run's predictions: (command, its arguments after the run dir)
READERS = {
    "ensemble": lambda out: ["--name", "x", "--out", out / "subs"],
    "report": lambda out: ["--json"],
    "pseudo": lambda out: ["--out", out / "pseudo"],
    "distill": lambda out: ["--out", out / "student", "--set", "train.max_steps=1", "--no-progress"],
}


def _read(capsys, command: str, run, tmp_path) -> tuple[int, str]:
    code, _, err = kit_cli(capsys, command, run, *READERS[command](tmp_path))
    return code, err


def _predicted(run) -> None:
    """The shared run predicted from best.pt: another test of this module may have left it predicted from
    last.pt (a re-run's order under xdist), and the remedy then names `--which last`."""
    if not (run / "ids.json").exists() or json.loads((run / "ids.json").read_text()).get("which") != "best":
        predict_run(run, which="best", progress=False)


@pytest.mark.parametrize("command", list(READERS))
def test_no_reader_uses_the_predictions_of_a_run_its_trainer_is_training(run_on_copy, tmp_path, capsys,
                                                                          command):
    _, run = run_on_copy
    _predicted(run)
    with run_lock(run):                             # as `kit train --resume RUN` holds it
        code, err = _read(capsys, command, run, tmp_path)
    one_error(code, err, f"{run}: a trainer (pid {os.getpid()}) is training this run now",
              f"`kit predict {run}` again")
    assert not list(tmp_path.iterdir())             # no vote, no pseudo-labels, no student
    assert _read(capsys, "report", run, tmp_path)[0] == 0       # the lock gone: read as before


def test_predict_records_the_digests_of_its_probability_files(run_on_copy):
    _, run = run_on_copy
    predict_run(run, progress=False)
    ids = json.loads((run / "ids.json").read_text())
    assert ids["val_probs_sha256"] == sha256_file(run / "val_probs.npy")
    assert ids["test_probs_sha256"] == sha256_file(run / "test_probs.npy")


def _rows_of_another_run(p):
    return np.roll(p, 1, axis=0)                    # same shape, valid probabilities, other bytes


DAMAGES = {
    "test swapped": ("test_probs.npy", _rows_of_another_run),
    "val swapped": ("val_probs.npy", _rows_of_another_run),
    "test negated": ("test_probs.npy", lambda p: -p),
    "test int64 zeros": ("test_probs.npy", lambda p: np.zeros(p.shape, dtype=np.int64)),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_probability_file_ids_json_did_not_record_is_refused_by_every_reader(run_on_copy, tmp_path, capsys,
                                                                               damage):
    _, run = run_on_copy
    _predicted(run)
    name, change = DAMAGES[damage]
    original = (run / name).read_bytes()
    np.save(run / name, change(np.load(run / name)))
    try:
        for command in READERS:
            code, err = _read(capsys, command, run, tmp_path)
            one_error(code, err, f"{run / name}: not the predictions ids.json recorded (sha256 ",
                      f"run `kit predict {run}` again")
        assert not list(tmp_path.iterdir())
    finally:
        (run / name).write_bytes(original)
    assert _read(capsys, "ensemble", run, tmp_path)[0] == 0       # the recorded bytes again: voted


NOT_PROBABILITIES = {
    "negated": (lambda p: -p, "negative"),
    "int64 zeros": (lambda p: np.zeros(p.shape, dtype=np.int64), "int64"),
    "log-probabilities": (lambda p: np.log(p), "negative"),
    "rows not summing to 1": (lambda p: p * 0.5, "sum"),
    "one number per utterance": (lambda p: p[:, 0].copy(), "(rows, classes)"),     # in both files
}


@pytest.mark.parametrize("damage", list(NOT_PROBABILITIES))
def test_values_that_are_not_probabilities_are_refused_even_without_digests(predicted, damage):
    run = predicted.run("old", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])      # an ids.json of an older kit
    load_member(run)                                                  # no digests: accepted as before
    change, why = NOT_PROBABILITIES[damage]
    for name in ("val_probs.npy", "test_probs.npy") if damage == "one number per utterance" else ("test_probs.npy",):
        np.save(run / name, change(np.load(run / name)))
    with pytest.raises(KitError) as e:
        load_member(run)
    first = "val_probs.npy" if damage == "one number per utterance" else "test_probs.npy"
    assert str(e.value).startswith(f"{run / first}: not probabilities") and why in str(e.value)
    assert f"run `kit predict {run}` again" in str(e.value) and "\n" not in str(e.value)


def test_an_ids_json_without_digests_is_still_voted(run_on_copy, tmp_path, capsys):
    _, run = run_on_copy
    _predicted(run)
    ids_file = run / "ids.json"
    original = ids_file.read_bytes()
    ids = json.loads(original)
    ids.pop("val_probs_sha256", None), ids.pop("test_probs_sha256", None)   # as an older kit wrote it
    ids_file.write_text(json.dumps(ids))
    try:
        assert load_member(run).test_probs.shape[0] == len(ids["test"])
        assert _read(capsys, "ensemble", run, tmp_path)[0] == 0
    finally:
        ids_file.write_bytes(original)


def _interrupted_student(run, tmp_path, capsys) -> tuple:
    """A student of `run` and a copy of it, stopped at step 1 of 4 as a killed distill leaves it."""
    other = tmp_path / "copy"
    shutil.copytree(run, other)
    student = tmp_path / "student"
    code, _, err = kit_cli(capsys, "distill", run, other, "--out", student, "--no-progress",
                           "--set", "train.max_steps=4", "--set", "train.stop_step=1")
    assert code == 0, err
    return other, student


def test_distill_resume_refuses_other_teachers_or_settings_than_the_interrupted_run(run_on_copy, tmp_path, capsys):
    _, run = run_on_copy
    _predicted(run)
    other, student = _interrupted_student(run, tmp_path, capsys)
    teacher = sha256_file(student / "teacher.npz")
    resume = ["--out", student, "--resume", "--no-progress", "--set", "train.max_steps=4"]
    for given, extra, needle in (([other], [], "teachers"), ([run, other], ["--temperature", "2"], "temperature"),
                                 ([run, other], ["--distill-weight", "0.9"], "distill weight")):
        code, _, err = kit_cli(capsys, "distill", *given, *resume, *extra)
        one_error(code, err, str(student), needle, "--fresh")
        assert sha256_file(student / "teacher.npz") == teacher
    np.save(other / "test_probs.npy", _rows_of_another_run(np.load(other / "test_probs.npy")))
    ids = json.loads((other / "ids.json").read_text())
    ids["test_probs_sha256"] = sha256_file(other / "test_probs.npy")      # re-predicted since
    (other / "ids.json").write_text(json.dumps(ids))
    one_error(*kit_cli(capsys, "distill", run, other, *resume)[::2], str(other), "--fresh")
    shutil.rmtree(other)
    shutil.copytree(run, other)                                           # the same teachers again
    code, _, err = kit_cli(capsys, "distill", run, other, *resume)
    assert code == 0, err
    assert sha256_file(student / "teacher.npz") == teacher and json.loads((student / "summary.json").read_text())


@pytest.mark.parametrize("edit", ["a label changed", "the val list reordered", "a label too few"])
def test_validation_labels_that_are_not_the_datas_are_refused_before_a_vote(run_on_copy, tmp_path, capsys, edit):
    """The vote fits temperatures and weights on ids.json's validation labels: edited by hand, they are
    refused with one line naming the file, before any CSV is written."""
    _, run = run_on_copy
    _predicted(run)
    ids_file = run / "ids.json"
    original = ids_file.read_bytes()
    ids = json.loads(original)
    if edit == "a label changed":
        ids["val_labels"][0] = (ids["val_labels"][0] + 1) % 8
    elif edit == "the val list reordered":
        ids["val"] = ids["val"][::-1]
    else:
        ids["val_labels"] = ids["val_labels"][:-1]
    ids_file.write_text(json.dumps(ids))
    try:
        code, err = _read(capsys, "ensemble", run, tmp_path)
        one_error(code, err, f"{run}/ids.json")
        assert not list(tmp_path.rglob("*.csv"))
    finally:
        ids_file.write_bytes(original)
