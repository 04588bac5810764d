"""A vote is of one version of the data and of each member's own weights (probe 29): another run's
checkpoint copied in with its predictions, test features replaced after prediction, members predicted
from two versions of the features, and a member trained on another layout listed after the first."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from kit.data import FeatureStore
from kit.infer import predict_run
from kit.records import predictions_current

from conftest import kit_cli, one_error, train_tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def two_runs(tiny_data, tmp_path):
    """A writable copy of the tiny competition and two runs trained and predicted on it."""
    data = shutil.copytree(tiny_data, tmp_path / "data", ignore=shutil.ignore_patterns(".kit-cache"))
    store = FeatureStore.open(data, dtype="float32", progress=False)
    runs = []
    for name in ("a", "b"):
        run = train_tiny_run(store, tmp_path / "runs" / name)
        predict_run(run, progress=False)
        runs.append(run)
    return data, *runs


def _vote(capsys, tmp_path, *runs, vote: str = "hard"):
    return kit_cli(capsys, "ensemble", *runs, "--name", "v", "--out", tmp_path / "subs", "--vote", vote)


def test_another_runs_checkpoint_copied_in_with_its_predictions_is_never_voted(two_runs, tmp_path, capsys):
    """The recipe said "finished earlier", and `kit ensemble` voted run c's weights as member a: only
    a checkpoint copied alone was refused."""
    data, a, b = two_runs
    c = tmp_path / "runs" / "c"
    shutil.copytree(a, c)
    shutil.copy(b / "best.pt", c / "best.pt")                       # another run's weights ...
    for name in ("ids.json", "val_probs.npy", "test_probs.npy"):     # ... with their own predictions
        shutil.copy(b / name, c / name)
    assert not predictions_current(c)                               # a recipe predicts it again (and refuses)
    code, _, err = _vote(capsys, tmp_path, c, a)
    one_error(code, err, str(c), "did not write last", "checkpoints.json")
    assert not (tmp_path / "subs" / "v.csv").exists()
    assert predictions_current(a) and _vote(capsys, tmp_path, a, b)[0] == 0


def _replace_a_test_file(data) -> None:
    """One test utterance's features replaced in place by others of the same shape (a newer mtime)."""
    test = json.loads((data / "testdata.json").read_text())["utterances"][0]["feature_path"]
    path = data / test
    x = torch.load(path)
    torch.save(torch.flip(x, dims=[0]) + 1.0, path)
    later = os.stat(path).st_mtime + 10
    os.utime(path, (later, later))


def _refused_after_reading(code: int, err: str, *needles: str) -> None:
    """The line that says the files are read again to compare (minutes at full size), then one error."""
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "reading them to compare contents" in lines[0], err
    one_error(code, lines[1], *needles)


def test_test_features_replaced_after_prediction_are_never_voted_from_old_predictions(two_runs, tmp_path, capsys,
                                                                                     monkeypatch):
    """`kit ensemble` voted old predictions of replaced test files, and a member predicted again on the new
    ones beside one predicted on the old (the recipe refused; the CLI did not)."""
    monkeypatch.setenv("KIT_PROGRESS", "0")                         # the data is packed again to compare
    data, a, b = two_runs
    _replace_a_test_file(data)
    FeatureStore.open(data, dtype="float32", progress=False)        # the recipe's own store, packed again
    code, _, err = _vote(capsys, tmp_path, a, b)
    _refused_after_reading(code, err, str(data), "feature files changed since", "kit predict")
    assert not list(data.rglob("store-*-float16"))                 # compared in it: no second copy packed
    # probe 30: distill read the members without it, and an older kit's member listed first hid it
    code, _, err = kit_cli(capsys, "distill", a, b, "--out", tmp_path / "student", "--minutes", "0.1")
    _refused_after_reading(code, err, str(data), "feature files changed since")
    older = json.loads((a / "ids.json").read_text())
    (a / "ids.json").write_text(json.dumps({k: v for k, v in older.items() if k not in ("data_features", "data_key")}))
    _refused_after_reading(*_vote(capsys, tmp_path, a, b)[::2], str(b), "feature files changed since")
    (a / "ids.json").write_text(json.dumps(older))
    predict_run(a, progress=False)                                  # a on the new features, b on the old
    code, _, err = _vote(capsys, tmp_path, b, a)
    one_error(code, err, str(a), str(b), "different contents")
    predict_run(b, progress=False)
    assert _vote(capsys, tmp_path, a, b)[0] == 0


def test_every_members_data_is_checked_not_only_the_first(two_runs, tmp_path, capsys):
    """The same two runs were refused in one order and voted in the other."""
    data, a, b = two_runs
    meta = data / "metadata.json"
    meta.write_text(json.dumps(json.loads(meta.read_text())))      # the same content, another layout hash
    store = FeatureStore.open(data, dtype="float32", progress=False)
    c = train_tiny_run(store, tmp_path / "runs" / "c")
    predict_run(c, progress=False)
    for order in ((c, a), (a, c)):
        code, _, err = _vote(capsys, tmp_path, *order)
        one_error(code, err, str(a), "changed since")


def test_a_vote_older_than_its_members_is_sent_with_a_note(two_runs, tmp_path, capsys, kaggle_env, tiny_answers):
    """`kit submit` sent a vote whose member had trained on since without a word; the ledger's vote column
    said `auto`, not what the vote chose."""
    from kit import DEFAULT_COMPETITION
    from kit.kaggle import read_ledger
    from kit.kaggle.server import StandIn
    from kit.records import SubmissionManifest

    data, a, b = two_runs
    assert _vote(capsys, tmp_path, a, b, vote="auto")[0] == 0
    csv = tmp_path / "subs" / "v.csv"
    ledger = tmp_path / "subs" / "ledger.csv"
    with StandIn(data, tiny_answers, competition=DEFAULT_COMPETITION) as standin:
        code, _, err = kit_cli(capsys, "submit", csv, "-m", "fresh", "--ledger", ledger, "--endpoint", standin.url)
        assert code == 0 and "older than its members" not in err, err
        code, _, err = kit_cli(capsys, "train", "--out", a, "--resume", "--set", "train.max_steps=45", "--no-progress")
        assert code == 0, err
        # best.pt changed if validation improved (trained on since); predicted from last.pt either way
        assert kit_cli(capsys, "predict", a, "--which", "last", "--no-progress")[0] == 0
        code, _, err = kit_cli(capsys, "submit", csv, "-m", "stale", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and "v.csv's vote is older than its members" in err, err
    assert f"{a}: trained on since (its best.pt is not the one voted)" in err or f"{a}: predicted again since" in err
    voted = SubmissionManifest.beside(csv)
    assert read_ledger(ledger).iloc[0]["vote"] == voted.voted != "auto" and ":" in voted.voted


def test_predicting_a_run_again_keeps_the_checkpoint_it_was_predicted_from(two_runs, capsys):
    """Probe 31: `kit predict RUN` (kit's own advice after a refusal) switched a recipe member from its last
    checkpoint to best without a word."""
    from kit.records import PredictionIds

    _, a, _ = two_runs
    assert kit_cli(capsys, "predict", a, "--which", "last", "--no-progress")[0] == 0
    code, _, err = kit_cli(capsys, "predict", a, "--no-progress")
    assert code == 0 and "last checkpoint" in err and PredictionIds.load(a).which == "last", err
    assert kit_cli(capsys, "predict", a, "--which", "best", "--no-progress")[0] == 0
    assert PredictionIds.load(a).which == "best"


def test_a_run_whose_training_has_not_finished_is_said_wherever_it_is_used_by_hand(two_runs, tmp_path, capsys,
                                                                                 kaggle_env, tiny_answers):
    """Probe 57: a run stopped at a session's time limit (`--max-minutes`), or killed before its first summary, was
    predicted, voted, reported and submitted by hand without a word (a recipe trains its members to the end)."""
    from kit import DEFAULT_COMPETITION
    from kit.kaggle.server import StandIn

    data, a, b = two_runs
    stopped = tmp_path / "runs" / "stopped"
    code, _, err = kit_cli(capsys, "train", "--config", a / "config.toml", "--out", stopped, "--max-minutes", "0.0001",
                           "--set", "train.max_steps=40", "--no-progress")      # a's data and split
    assert code == 0 and json.loads((stopped / "summary.json").read_text())["stopped_reason"] == "time", err
    (b / "summary.json").unlink()                               # as a kill before the session's end leaves it
    code, _, err = kit_cli(capsys, "predict", stopped, "--no-progress")
    assert code == 0 and f"kit: warning: {stopped}: its training stopped at a session's time limit at step " in err
    assert "of 40 (summary.json); it is predicted from its checkpoint as it stands" in err, err
    for command, done in ((("ensemble", a, b, stopped, "--name", "v", "--out", tmp_path / "subs"), "voted"),
                          (("report", a, b, stopped), "reported")):
        code, _, err = kit_cli(capsys, *command)
        said = [line for line in err.splitlines() if "not finished" in line or "time limit" in line]
        assert code == 0 and len(said) == 2, err                # a finished run is not named
        assert f"{b}: its training has not finished (checkpoints, no summary.json" in said[0]
        assert f"{stopped}: its training stopped" in said[1] and f"it is {done} from its checkpoint" in said[1]
    with StandIn(data, tiny_answers, competition=DEFAULT_COMPETITION) as standin:
        code, _, err = kit_cli(capsys, "submit", tmp_path / "subs" / "v.csv", "-m", "m", "--ledger",
                               tmp_path / "subs" / "ledger.csv", "--endpoint", standin.url)
    assert code == 0 and "v.csv votes member(s) whose training has not finished" in err, err
    assert f"{b}: its training has not finished" in err and f"{stopped}: its training stopped" in err
