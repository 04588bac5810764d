"""A recipe's submission goes where its kernels went: a rehearsal on `kit kaggle serve` never spends a
real Kaggle submission, and a submission that fails ends the run with exit 2 after its table.
"""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

import kit.kaggle.ledger
import kit.kaggle.rehearsal
import kit.kaggle.submissions
import kit.zoo
from kit.cli import main
from kit.fsio import file_lock, sha256_file
from kit.kaggle import read_ledger, recipe_submit, update_ledger
from kit.kaggle.ledger import append_ledger, sending_lock
from kit.kaggle.pending import keep_pending
from kit.layout import synth_marker
from kit.records import SubmissionManifest
from kit.zoo import run_recipe

from conftest import one_error_line

AFTER = {"predict": True, "ensemble": "hard", "submit": True}


class Usage:
    """shutil.disk_usage's answer for a disk with `free` bytes left."""

    def __init__(self, free: int):
        self.total, self.used, self.free = 1 << 30, (1 << 30) - free, free


class NothingToTrain:
    """The Kaggle launcher's options as run_recipe sees them; the members are trained already."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def train(self, *args, **kw) -> None:
        raise AssertionError("every member has finished: nothing goes to the launcher")


@pytest.fixture
def trained(tiny_recipe, tiny_data, tmp_path, monkeypatch):
    """A one-member recipe that submits, its member trained (no vote yet); run in tmp_path."""
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe("mean", base={"train": {"max_steps": 4, "eval_every": 4}}, budget={"full": {}}, after=AFTER)
    run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), after=False, workers=1,
               progress=False)
    return recipe


def test_recipe_submit_goes_to_the_named_endpoint_even_with_credentials(kaggle_env, sub, tiny_data, standin):
    result = recipe_submit(sub, "rehearsal", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert result["status"] == "COMPLETE" and result["target"] == f"local stand-in at {standin.url}", result
    assert "CreateSubmission" in standin.calls
    assert list(read_ledger(sub.parent / "ledger.csv")["target"]) == [f"local stand-in at {standin.url}"]


def test_the_launchers_endpoint_and_the_recipes_folder_reach_the_submission(trained, tiny_data, tmp_path,
                                                                              monkeypatch):
    """The vote goes to the stand-in the kernels used, and its ledger row to the ledger beside the vote's
    CSV (run_recipe's `submissions`), not to ./submissions/ledger.csv."""
    sent = []
    monkeypatch.setenv("KAGGLE_USERNAME", "rehearsal")      # the stand-in takes any credentials, but some
    monkeypatch.setenv("KAGGLE_KEY", "anything")
    monkeypatch.setattr(kit.zoo, "recipe_submit", lambda csv, message, data_dir, **kw: sent.append((csv, kw)) or
                        {"status": "COMPLETE", "public": 0.5, "private": 0.5, "target": "local stand-in"})
    elsewhere = tmp_path / "elsewhere"
    with socket.socket() as listening:              # the stand-in's address answers (nothing is sent to it)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        run_recipe(trained, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), workers=1,
                   progress=False, launcher=NothingToTrain(url), submissions=elsewhere, competition="ml2023springhw4")
    [(csv, kw)] = sent
    kw.pop("log")
    assert Path(kw.pop("recipe_root")).parent == tmp_path / "runs"     # its votes' sends, seen from any folder
    assert kw == {"endpoint": url, "submissions_dir": elsewhere, "competition": "ml2023springhw4"}   # --competition
    assert Path(csv).parent == elsewhere
    # and the vote's manifest says so, for a later `kit submit` of it (probe 15)
    assert json.loads(Path(csv).with_suffix(".json").read_text())["competition"] == "ml2023springhw4"


def test_a_failed_submission_exits_2_after_the_table(trained, tiny_data, tmp_path, monkeypatch, capsys):
    reason = "submission of submissions/tiny.csv failed (HTTP 401); recorded as FAILED in submissions/ledger.csv"
    monkeypatch.setattr(kit.zoo, "recipe_submit", lambda *a, **kw: {
        "status": "FAILED", "public": None, "private": None, "target": "kaggle", "reason": reason})
    code = main(["recipe", "run", str(trained), "--data", str(tiny_data), "--budget", "full",
                 "--runs", str(tmp_path / "runs"), "--workers", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2
    line = one_error_line(err)
    assert "tiny.csv FAILED" in line and "CSV is kept" in line and "ledger row records the failure" in line
    assert "ensemble (single) val acc" in out           # one member: its own predictions (probe 45 #7)
    assert "FAILED on kaggle  public -  private -" in out and "None" not in out
    assert (tmp_path / "submissions" / "tiny.csv").is_file()
    manifest = SubmissionManifest.load(tmp_path / "submissions" / "tiny.json")   # the ledger's vote and the report's
    assert (manifest.voted, manifest.description) == ("auto: single", "single")


def test_a_skipped_submission_is_no_failure(trained, tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kit.zoo, "recipe_submit", lambda *a, **kw: {
        "status": "SKIPPED", "public": None, "private": None, "target": None, "reason": "not submitted: no key"})
    code = main(["recipe", "run", str(trained), "--data", str(tiny_data), "--budget", "full",
                 "--runs", str(tmp_path / "runs"), "--workers", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0 and "kit: error" not in err, err
    assert "SKIPPED on -  public -  private -" in out


def test_a_synthetic_competition_is_rehearsed_even_with_credentials(kaggle_env, sub, tiny_data):
    """Kaggle could only refuse a synthetic competition's ids (and count the try against the day's five):
    with credentials set and no endpoint named, the vote still goes to a rehearsal stand-in."""
    result = recipe_submit(sub, "rehearsal", tiny_data, submissions_dir=sub.parent)
    assert result["status"] == "COMPLETE" and result["target"] == "local stand-in", result
    assert list(read_ledger(sub.parent / "ledger.csv")["target"]) == ["local stand-in"]


def test_a_rehearsal_row_left_pending_by_a_killed_recipe_is_marked_failed_and_sent_again(kaggle_env, sub, tiny_data,
                                                                                       monkeypatch):
    """A recipe killed while its stand-in scored leaves a PENDING row that no server will ever score
    (that stand-in died with the recipe); the re-run marks it FAILED and sends the file to its own."""
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    first = recipe_submit(sub, "recipe", tiny_data, submissions_dir=sub.parent)
    ledger = sub.parent / "ledger.csv"
    update_ledger(ledger, first["row"]["competition"], first["ref"], {"status": "PENDING"}, target="local stand-in")
    again = recipe_submit(sub, "recipe, re-run", tiny_data, submissions_dir=sub.parent)
    rows = read_ledger(ledger).to_dict("records")
    assert again["status"] == "COMPLETE" and "already submitted" not in (again["reason"] or ""), again
    assert [r["status"] for r in rows] == ["FAILED", "COMPLETE"]
    assert "stand-in stopped before scoring it" in rows[0]["error"] and rows[1]["message"] == "recipe, re-run"
    third = recipe_submit(sub, "recipe, third", tiny_data, submissions_dir=sub.parent)
    assert "already submitted" in third["reason"] and len(read_ledger(ledger)) == 2     # a scored row still counts


def test_a_submission_whose_row_waits_in_the_pending_file_is_not_sent_again(kaggle_env, sub, tiny_data,
                                                                            monkeypatch):
    """Kaggle took the file but the ledger could not (a full disk): its row waits in the pending file,
    the recipe says it was made and not recorded, and the re-run counts it as submitted."""
    def full(*args, **kw):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(kit.kaggle.submissions, "append_ledger", full)
        first = recipe_submit(sub, "recipe", tiny_data, submissions_dir=sub.parent)
    assert first["status"] == "COMPLETE" and first["recorded"] is False and first["ref"], first
    assert "could not record it" in first["reason"]
    again = recipe_submit(sub, "recipe, re-run", tiny_data, submissions_dir=sub.parent)
    assert "already submitted" in again["reason"] and again["ref"] == first["ref"], again
    assert list(read_ledger(sub.parent / "ledger.csv")["ref"]) == [first["ref"]]


def test_a_recipe_waits_while_another_submits_with_its_ledger_and_then_sends_nothing_twice(kaggle_env, sub,
                                                                                            tiny_data):
    """Two recipes sharing submissions/ (two notebook cells, `make` twice): the second waits on the ledger's
    sending lock, then finds the first's row and does not send the same bytes again."""
    ledger = sub.parent / "ledger.csv"
    waiting, out = threading.Event(), {}
    with file_lock(sending_lock(ledger)):           # the first recipe, between its check and its row
        second = threading.Thread(target=lambda: out.update(recipe_submit(
            sub, "second", tiny_data, submissions_dir=sub.parent,
            log=lambda line: "another kit is submitting" in line and waiting.set())))
        second.start()
        assert waiting.wait(60), "the second recipe did not wait for the first"
        assert not ledger.is_file()                 # nothing sent while the first holds the lock
        append_ledger(ledger, {"time": "2026-12-05T00:00:00Z", "competition": synth_marker(tiny_data)["competition"],
                               "file": str(sub), "sha256": sha256_file(sub), "message": "first", "ref": "7",
                               "status": "COMPLETE", "public": "0.75", "private": "0.75",
                               "target": "local stand-in"})
    second.join(60)
    assert "already submitted" in out["reason"] and out["ref"] == "7", out
    assert list(read_ledger(ledger)["ref"]) == ["7"]


@pytest.mark.parametrize("damage", ["a file where the folder goes", "a ledger row cut short",
                                    "a folder where the vote's CSV goes", "a full disk"])
def test_a_recipe_whose_vote_or_ledger_cannot_be_written_stops_before_training(tiny_recipe, tiny_data, tmp_path,
                                                                               monkeypatch, capsys, damage):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe("mean", base={"train": {"max_steps": 4, "eval_every": 4}}, budget={"full": {}}, after=AFTER)
    if damage == "a file where the folder goes":
        Path("submissions").write_text("not a folder\n")
    elif damage == "a ledger row cut short":
        Path("submissions").mkdir()
        Path("submissions/ledger.csv").write_text("time,competition,file\n2026-12-05T00:00:00Z,hw4")
    elif damage == "a folder where the vote's CSV goes":
        Path("submissions/tiny.csv").mkdir(parents=True)
    else:
        real = kit.kaggle.ledger.shutil.disk_usage      # the ledger's disk only: shutil is every module's, and a
        monkeypatch.setattr(kit.kaggle.ledger.shutil, "disk_usage",   # store not packed yet failed first (a flake)
                            lambda path: Usage(free=4096) if "submissions" in str(path) else real(path))
    code = main(["recipe", "run", str(recipe), "--data", str(tiny_data), "--budget", "full",
                 "--runs", str(tmp_path / "runs"), "--workers", "1", "--no-progress"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "submissions" in line, line
    assert not (tmp_path / "runs" / "tiny").exists()        # nothing was trained


def test_a_pending_row_only_the_pending_file_holds_is_marked_lost_on_the_first_re_run(kaggle_env, sub, tiny_data,
                                                                                       monkeypatch):
    """The recipe was stopped while its stand-in scored, and the ledger could not take even the PENDING row:
    the re-run merges the pending file first, so the lost row is seen and the file sent again at once."""
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    first = recipe_submit(sub, "recipe", tiny_data, submissions_dir=sub.parent)
    ledger = sub.parent / "ledger.csv"
    row = {**first["row"], "status": "PENDING", "public": "", "private": ""}
    ledger.unlink()
    keep_pending(ledger, row)
    again = recipe_submit(sub, "recipe, re-run", tiny_data, submissions_dir=sub.parent)
    assert again["status"] == "COMPLETE" and "already submitted" not in (again["reason"] or ""), again
    assert [r["status"] for r in read_ledger(ledger).to_dict("records")] == ["FAILED", "COMPLETE"]


@pytest.mark.parametrize("credentials", ["none", "a kaggle.json that is not JSON", "a kaggle.json with no key",
                                         "fine, but nothing listens at the endpoint"])
def test_a_recipe_that_submits_to_a_stand_in_without_usable_credentials_stops_before_training(
        tiny_recipe, tiny_data, tmp_path, monkeypatch, capsys, credentials):
    """KIT_KAGGLE_ENDPOINT names a stand-in: the client needs credentials (any will do) to reach it, so
    their absence is one line before the first step, not a FAILED row after the whole budget."""
    monkeypatch.chdir(tmp_path)
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config"
    config.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    monkeypatch.setenv("KIT_KAGGLE_ENDPOINT", "http://127.0.0.1:9")
    if credentials.startswith("a kaggle.json"):
        (config / "kaggle.json").write_text("{username: me" if "not JSON" in credentials else '{"username": "me"}')
    elif credentials.startswith("fine"):
        monkeypatch.setenv("KAGGLE_USERNAME", "rehearsal")
        monkeypatch.setenv("KAGGLE_KEY", "anything")
    recipe = tiny_recipe("mean", base={"train": {"max_steps": 4, "eval_every": 4}}, budget={"full": {}}, after=AFTER)
    code = main(["recipe", "run", str(recipe), "--data", str(tiny_data), "--budget", "full",
                 "--runs", str(tmp_path / "runs"), "--workers", "1", "--no-progress"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "nothing was trained" in line, line
    expected = {"none": "no Kaggle credentials", "a kaggle.json that is not JSON": "kaggle.json: not valid JSON",
                "a kaggle.json with no key": "kaggle.json: not a JSON object with username and key",
                "fine, but nothing listens at the endpoint": "nothing answers at http://127.0.0.1:9"}
    assert expected[credentials] in line, line
    assert not (tmp_path / "runs" / "tiny").exists()


def test_only_some_members_trains_them_without_a_vote_of_the_few(tiny_recipe, tiny_data, tmp_path, monkeypatch):
    """`--only b` after a whole run: b is trained and predicted, but NAME.csv stays the vote of a and b
    and nothing is submitted (before: a vote of b alone replaced it and spent a submission)."""
    monkeypatch.chdir(tmp_path)
    sent = []
    monkeypatch.setattr(kit.zoo, "recipe_submit", lambda csv, *a, **kw: sent.append(csv) or
                        {"status": "COMPLETE", "public": 0.5, "private": 0.5, "target": "local stand-in"})
    recipe = tiny_recipe("a", "b", base={"train": {"max_steps": 4, "eval_every": 4}}, budget={"full": {}},
                         after=AFTER)
    whole = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), workers=1,
                       progress=False)
    vote = Path(whole.ensemble.csv).read_bytes()
    logs: list[str] = []
    only = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), workers=1,
                      progress=False, only=["b"], fresh=True, log=logs.append)
    assert [m.name for m in only.members] == ["b"] and only.ensemble is None and only.submission is None
    assert len(sent) == 1 and Path(whole.ensemble.csv).read_bytes() == vote
    assert (tmp_path / "runs" / "tiny" / "b" / "test_probs.npy").is_file()       # predicted
    assert any("--only b: trains and predicts it only" in line for line in logs), logs


def test_the_recipes_table_shows_the_students_submission_too(capsys):
    """Probe 11: a recipe that submitted its student said so only in the ledger."""
    from kit.cli.recipe_table import print_recipe_table
    from kit.recipe_result import RecipeResult, StudentResult

    sent = {"status": "COMPLETE", "target": "local stand-in", "public": "0.8", "private": "0.7"}
    print_recipe_table(RecipeResult("tiny", "quick", "data/tiny", student=StudentResult(
        "runs/tiny/student", 0.75, "submissions/tiny-student.csv", submission=sent)))
    assert ("submission: submissions/tiny-student.csv  COMPLETE on local stand-in  public 0.8  private 0.7"
            in capsys.readouterr().out)
