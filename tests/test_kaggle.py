"""The Kaggle flow end to end: the real `kaggle` client against the local stand-in.

Each test gets its own stand-in on a free port, its own HOME/KAGGLE_CONFIG_DIR and fake credentials;
retry and poll delays are milliseconds (KIT_KAGGLE_BACKOFF / KIT_KAGGLE_POLL).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

import kit.kaggle.server as standin_module
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle import append_ledger, call, extract_zip, read_ledger, recipe_competition, recipe_submit
from kit.kaggle.ledger import sending_lock
from kit.kaggle.server import StandIn
from kit.layout import SYNTH_MARKER, downloaded_from, is_synthetic
from kit.submission import score_submission

from conftest import COMP, FAKE_KEY, FAKE_TOKEN, one_error_line, submit_args, write_submission
from conftest import kit_cli as kit


def ledger_rows(sub: Path) -> list[dict]:
    return read_ledger(sub.parent / "ledger.csv").to_dict("records")


# ---------------------------------------------------------------- the happy path
def test_submit_wait_records_scores_in_ledger(kaggle_env, standin, sub, tiny_answers, capsys):
    standin.pending_polls = 2
    code, out, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0, err
    expected = score_submission(sub, tiny_answers)
    [row] = ledger_rows(sub)
    assert row["status"] == "COMPLETE" and row["target"] == f"local stand-in at {standin.url}"
    assert float(row["public"]) == pytest.approx(expected["public"]["acc"], abs=1e-5)
    assert float(row["private"]) == pytest.approx(expected["private"]["acc"], abs=1e-5)
    assert row["sha256"] == sha256_file(sub) and row["competition"] == COMP
    assert row["members"] == "runs/simple/m0;runs/simple/m1" and row["vote"] == "soft"
    assert row["ref"] in out and "COMPLETE" in out
    assert "PENDING" in err                                   # it really waited through PENDING polls
    assert standin.calls.count("ListSubmissions") >= 3


def test_sending_the_same_bytes_again_is_allowed_with_a_note(kaggle_env, standin, sub, capsys):
    """A plain `kit submit` does what it is told, but says that it spends another of the day's five."""
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0 and "already" not in err and "was submitted at" not in err, err
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    [first, _] = ledger_rows(sub)
    assert code == 0 and f"was submitted at {first['time']} (ref {first['ref']}, COMPLETE)" in err, err
    assert "spends another of the day's submissions" in err
    # a send that a check refuses says nothing of spending: the note comes once every check has passed
    code, _, err = kit(capsys, "submit", sub, "-m", " ", "--ledger", sub.parent / "ledger.csv", "--endpoint",
                       standin.url)
    assert code == 2 and "message is required" in err and "was submitted at" not in err, err
    # the same bytes under another name: the note names the file the ledger says was sent (probe 13)
    copy = sub.with_name("copy.csv")
    shutil.copy(sub, copy)
    shutil.copy(sub.with_suffix(".json"), copy.with_suffix(".json"))
    code, _, err = kit(capsys, "submit", copy, "-m", "copy", "--ledger", sub.parent / "ledger.csv", "--endpoint",
                       standin.url)
    assert f"note: {copy} (these same bytes) was submitted as {sub} at" in err, err


@pytest.mark.parametrize("where", ["Kernels", "start"])
def test_a_stand_in_stopped_while_it_starts_leaves_no_folder(tiny_data, tiny_answers, tmp_path, monkeypatch, where):
    """Ctrl-C while a stand-in is built or started (a recipe's rehearsal, `kit kaggle serve`) removes
    its kit-standin-* folder and closes its port: __exit__ never runs for a `with` not yet entered."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    target = standin_module if where == "Kernels" else StandIn
    monkeypatch.setattr(target, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        with StandIn(tiny_data, tiny_answers, competition=COMP):
            pass
    assert list(tmp_path.glob("kit-standin-*")) == []


def test_invalid_csv_is_refused_before_sending(kaggle_env, standin, sub, capsys):
    sub.write_text("Id,Category\nnot-a-test-file.pt,id00001\n")
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2
    line = one_error_line(err)
    assert "rows, expected" in line
    assert line.startswith(f"kit: error: {sub}:") and "kit-submit-" not in line, line   # the user's file, not the copy
    assert standin.calls == [] and not (sub.parent / "ledger.csv").exists()


def test_a_ledger_on_a_full_disk_is_refused_before_sending(kaggle_env, standin, sub, monkeypatch, capsys):
    """Probe 12: with 0 bytes free the file was sent, and its row could only go to the pending file."""
    usage = shutil.disk_usage(sub.parent)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and "0 bytes free on the ledger's disk" in one_error_line(err)
    assert standin.calls == []


def test_submit_without_manifest_needs_data_dir(kaggle_env, standin, sub, tiny_data, capsys):
    sub.with_suffix(".json").unlink()
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and "--data DIR" in one_error_line(err)
    code, _, err = kit(capsys, *submit_args(sub, standin, "--data", tiny_data))
    assert code == 0, err
    assert ledger_rows(sub)[0]["status"] == "PENDING"


# ---------------------------------------------------------------- errors, each with the real client
def assert_failed_row(sub: Path, reason_part: str) -> None:
    [row] = ledger_rows(sub)
    assert row["status"] == "FAILED" and reason_part in row["error"] and row["ref"] == ""
    assert sub.is_file()                                      # the CSV is never lost


def test_no_credentials(kaggle_env, standin, sub, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    code, out, err = kit(capsys, *submit_args(sub, standin))
    line = one_error_line(err)
    assert code == 2 and out == ""
    assert "kaggle.json" in line and "KAGGLE_USERNAME" in line and "KAGGLE_API_TOKEN" in line
    assert "Authentication required" not in err               # the client's own help stays out of our output
    assert_failed_row(sub, "no Kaggle credentials")
    assert standin.calls == []


def test_401_is_a_credentials_message(kaggle_env, standin, sub, capsys):
    standin.inject("StartSubmissionUpload", 401)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and "refused the credentials (HTTP 401)" in one_error_line(err)
    assert_failed_row(sub, "HTTP 401")


def test_404_wrong_competition(kaggle_env, standin, sub, capsys):
    code, _, err = kit(capsys, *submit_args(sub, standin, "--competition", "ml2099spring-nope"))
    assert code == 2 and "competition not found (HTTP 404)" in one_error_line(err)
    assert_failed_row(sub, "HTTP 404")


def test_429_is_retried_honouring_retry_after(kaggle_env, standin, sub, capsys):
    standin.inject("CreateSubmission", 429, count=2, retry_after=0.2)
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0, err
    retries = [ln for ln in err.splitlines() if "HTTP 429 to CreateSubmission" in ln]
    assert len(retries) == 2 and all("in 0.2s" in ln for ln in retries)   # Retry-After, not the 0.01 backoff
    assert ledger_rows(sub)[0]["status"] == "COMPLETE"
    assert standin.calls.count("CreateSubmission") == 3


def test_500_then_success(kaggle_env, standin, sub, capsys):
    standin.inject("StartSubmissionUpload", 500, count=2)
    standin.inject("ListSubmissions", 503, count=1)
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0, err
    assert ledger_rows(sub)[0]["status"] == "COMPLETE"
    assert "HTTP 500" in err and "HTTP 503" in err


def test_500_forever_gives_up(kaggle_env, standin, sub, capsys):
    standin.inject("StartSubmissionUpload", 500, count=1000)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and "HTTP 500 to StartSubmissionUpload after 4 attempts" in one_error_line(err)
    assert standin.calls.count("StartSubmissionUpload") == 4
    assert_failed_row(sub, "HTTP 500")


def test_connection_refused(kaggle_env, sub, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                             # closed again: nothing listens there
    code, _, err = kit(capsys, "submit", sub, "-m", "x", "--ledger", sub.parent / "ledger.csv",
                       "--endpoint", f"http://127.0.0.1:{port}")
    assert code == 2 and "cannot reach" in one_error_line(err)
    assert_failed_row(sub, "connection refused")


def test_upload_failure_is_a_failure_not_ref_zero(kaggle_env, standin, sub, capsys):
    standin.inject("upload", 500, count=1000)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and "upload of sub.csv failed" in one_error_line(err)
    assert "CreateSubmission" not in standin.calls
    assert_failed_row(sub, "upload")


def test_one_failed_upload_is_retried(kaggle_env, standin, sub, capsys):
    standin.inject("upload", 500, count=1)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 0, err
    assert standin.calls.count("upload") == 2 and ledger_rows(sub)[0]["status"] == "PENDING"


def test_submission_scored_error(kaggle_env, standin, sub, capsys):
    standin.score_errors(1, reason="Evaluation failed: injected")
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 2 and "ERROR: Evaluation failed: injected" in one_error_line(err)
    [row] = ledger_rows(sub)
    assert row["status"] == "ERROR" and row["error"] == "Evaluation failed: injected" and row["ref"]


def test_wait_is_bounded(kaggle_env, standin, sub, capsys):
    standin.pending_polls = 10**6
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait", "--timeout", "0.05"))
    assert code == 2 and "still PENDING after 0.05s" in one_error_line(err)
    assert ledger_rows(sub)[0]["status"] == "PENDING"


def test_standin_scores_a_bad_file_error_with_reason(kaggle_env, standin, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Id,Category\nuttr-unknown.pt,id00001\n")       # kit would refuse it; Kaggle scores it
    done = call("submit", {"competition": COMP, "file": str(bad), "message": "bad", "wait": True,
                            "timeout": 5, "poll": 0.01}, standin.url)
    assert done["status"] == "ERROR" and "missing" in done["error"] and done["public"] == ""


def test_listing_follows_pages(kaggle_env, standin, sub, capsys):
    assert kit(capsys, *submit_args(sub, standin))[0] == 0
    first = standin.submissions[0]["ref"]
    for i in range(70):                                        # bury it under two pages of later submissions
        standin.submissions.append(dict(standin.submissions[0], ref=5000 + i, polls=0))
    listed = standin.calls.count("ListSubmissions")
    found = call("list", {"competition": COMP, "refs": [first]}, standin.url)["submissions"]
    assert str(first) in {s["ref"] for s in found} and len(found) == 71
    assert standin.calls.count("ListSubmissions") - listed == 2


# ---------------------------------------------------------------- ledger, scores, secrets
@pytest.mark.slow
def test_credentials_never_appear(kaggle_env, standin, sub, monkeypatch, capsys):
    outputs = []
    outputs.append(kit(capsys, *submit_args(sub, standin, "--wait")))
    standin.inject("CreateSubmission", 401)
    outputs.append(kit(capsys, *submit_args(sub, standin)))
    standin.inject("StartSubmissionUpload", 500, count=1000)
    outputs.append(kit(capsys, *submit_args(sub, standin)))
    outputs.append(kit(capsys, "scores", "--ledger", sub.parent / "ledger.csv", "--endpoint", standin.url))
    # An access token instead of username/key: the client introspects it, then sends it as Bearer.
    standin.faults.clear()
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_TOKEN)
    outputs.append(kit(capsys, *submit_args(sub, standin, "--wait")))
    standin.inject("ListSubmissions", 401, count=2)      # the look before the create, then the wait's
    outputs.append(kit(capsys, *submit_args(sub, standin, "--wait")))
    assert [o[0] for o in outputs] == [0, 2, 2, 0, 0, 2]
    assert "IntrospectToken" in standin.calls
    text = "".join(o[1] + o[2] for o in outputs) + (sub.parent / "ledger.csv").read_text()
    assert FAKE_KEY not in text and FAKE_TOKEN not in text and "kit-test:" not in text


@pytest.mark.slow
def test_scores_refreshes_pending_and_sorts_by_public(kaggle_env, standin, tmp_path, tiny_data, tiny_answers,
                                                      capsys):
    folder = tmp_path / "submissions"
    good = write_submission(folder, tiny_answers, tiny_data, "good", wrong_every=10)
    poor = write_submission(folder, tiny_answers, tiny_data, "poor", wrong_every=2)
    ledger = folder / "ledger.csv"
    for path in (poor, good):                                  # no --wait: both stay PENDING in the ledger
        assert kit(capsys, "submit", path, "-m", path.stem, "--ledger", ledger, "--endpoint", standin.url)[0] == 0
    assert set(read_ledger(ledger)["status"]) == {"PENDING"}
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0, err
    assert set(read_ledger(ledger)["status"]) == {"COMPLETE"}
    lines = [ln for ln in out.splitlines() if "COMPLETE" in ln]
    assert "good.csv" in lines[0] and "poor.csv" in lines[1]    # best public score first
    rows = read_ledger(ledger).set_index("message")
    gap = float(rows.loc["good", "public"]) - float(rows.loc["good", "private"])
    assert f"{gap:+.5f}" in lines[0]
    assert (folder / "scores.png").stat().st_size > 1000
    assert "wrote" not in out and f"wrote {folder / 'scores.png'}" in err     # stdout: the table alone (probe 17)


def test_concurrent_appends_keep_every_row(tmp_path):
    ledger = tmp_path / "ledger.csv"

    def writer(k: int) -> None:
        for i in range(8):
            append_ledger(ledger, {"time": "t", "competition": COMP, "file": f"w{k}-{i}.csv", "status": "PENDING"})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = list(read_ledger(ledger)["file"])
    assert sorted(files) == sorted(f"w{k}-{i}.csv" for k in range(4) for i in range(8))


@pytest.mark.slow
def test_two_kit_submit_of_one_file_at_once_the_second_is_told_it_was_sent(kaggle_env, standin, tmp_path, tiny_data,
                                                                            tiny_answers):
    """Probe 11: both sent, and neither said so (the second had not seen the first's row yet)."""
    folder = tmp_path / "submissions"
    same = write_submission(folder, tiny_answers, tiny_data, "same")
    procs = [subprocess.Popen([sys.executable, "-m", "kit", "submit", same, "-m", f"try {k}", "--ledger",
                               folder / "ledger.csv", "--endpoint", standin.url, "--wait"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    notes = [err for _, err in results if f"note: {same} (these same bytes) was submitted at" in err]
    assert len(notes) == 1 and len(read_ledger(folder / "ledger.csv")) == 2


@pytest.mark.slow
def test_kit_submit_lets_go_of_the_sending_lock_while_it_waits_for_the_score(kaggle_env, tmp_path, tiny_data,
                                                                              tiny_answers):
    """Probe 13: `--wait` held the lock until the score came, so every other submission sharing the ledger
    (a recipe's end too) waited up to --timeout; the lock is for "was it sent?" until its row is written."""
    folder = tmp_path / "submissions"
    csv = write_submission(folder, tiny_answers, tiny_data, "slow")
    with StandIn(tiny_data, tiny_answers, pending_polls=10**6) as server:        # never scored
        proc = subprocess.Popen([sys.executable, "-m", "kit", "submit", csv, "-m", "m", "--ledger",
                                 folder / "ledger.csv", "--endpoint", server.url, "--wait", "--timeout", "600"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None and not ((folder / "ledger.csv").is_file()
                                               and "PENDING" in (folder / "ledger.csv").read_text()):
                time.sleep(0.1)                 # polling for the row, not timing anything
            assert proc.poll() is None, "kit submit ended before its row was PENDING"
            with open(sending_lock(folder / "ledger.csv"), "a") as f:
                deadline = time.time() + 60     # it lets go just after the row (its note beside the CSV first)
                while True:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free while it waits: held to the end before
                        break
                    except BlockingIOError:
                        assert proc.poll() is None and time.time() < deadline, "the lock was held while it waited"
                        time.sleep(0.1)
            assert proc.poll() is None                                  # still waiting for the score
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_kit_submit_processes_at_once(kaggle_env, standin, tmp_path, tiny_data, tiny_answers):
    folder = tmp_path / "submissions"
    subs = [write_submission(folder, tiny_answers, tiny_data, f"s{k}") for k in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "kit", "submit", s, "-m", s.stem, "--ledger",
                               folder / "ledger.csv", "--endpoint", standin.url, "--wait"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in subs]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    frame = read_ledger(folder / "ledger.csv")
    assert sorted(frame["message"]) == ["s0", "s1"] and set(frame["status"]) == {"COMPLETE"}


# ---------------------------------------------------------------- download
def test_download_unpacks_validates_and_skips_on_rerun(kaggle_env, standin, tmp_path, tiny_data, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("KIT_KAGGLE_ENDPOINT", standin.url)
    standin.inject("download", 500, count=1)                   # one failed transfer, then success
    out_dir = tmp_path / "download"
    code, out, err = kit(capsys, "data", "download", "--competition", COMP, "--out", out_dir)
    assert code == 0, err
    data_dir = out_dir / "Dataset"
    assert f"data ready: {data_dir}" in out
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(p.name for p in tiny_data.iterdir()
                                                                if not p.name.startswith(".") or p.name == SYNTH_MARKER)
    assert is_synthetic(data_dir)      # probe 31: a stand-in's synthetic competition was real data once fetched
    calls = list(standin.calls)
    code, out, _ = kit(capsys, "data", "download", "--competition", COMP, "--out", out_dir)
    assert code == 0 and f"data ready: {data_dir}" in out
    assert standin.calls == calls                              # complete already: nothing fetched again
    code, _, err = kit(capsys, "data", "download", "--competition", "nope", "--out", tmp_path / "other" / "x" / "y")
    assert code == 2 and "HTTP 404" in one_error_line(err)
    assert not (tmp_path / "other").exists()                   # no empty --out (nor its parents) left behind
    # probe 11: the marker named the data dir relative to the folder kit ran in; a copy said "ready" for
    # the original, and from another folder it was not found
    copy, calls = Path(shutil.copytree(out_dir, tmp_path / "elsewhere" / "copy")), list(standin.calls)
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, _ = kit(capsys, "data", "download", "--competition", COMP, "--out", "copy")
    assert code == 0 and "data ready: copy/Dataset" in out and standin.calls == calls
    # and a recipe on that data submits to the competition it came from
    assert downloaded_from(copy / "Dataset") == COMP and downloaded_from(tiny_data) is None
    assert recipe_competition(copy / "Dataset") == COMP and recipe_competition(copy / "Dataset", "other") == "other"


def test_extract_refuses_members_escaping_the_target(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("Dataset/metadata.json", "{}")
        zf.writestr("../escaped.txt", "gotcha")
    with pytest.raises(KitError, match="outside"):
        extract_zip(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("Dataset/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(KitError, match="symbolic link"):
        extract_zip(link, tmp_path / "out2")


# ---------------------------------------------------------------- the recipes' submit step
def test_recipe_submit_rehearses_on_the_standin(kaggle_env, sub, tiny_data, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    said: list[str] = []
    result = recipe_submit(sub, "recipe simple", tiny_data, submissions_dir=sub.parent, log=said.append)
    assert result["status"] == "COMPLETE" and result["target"] == "local stand-in", result
    assert result["public"] and result["private"] and result["row"]["ref"] == result["ref"]
    assert ledger_rows(sub)[0]["message"] == "recipe simple" and f"submitting {sub}" in said
    said.clear()
    again = recipe_submit(sub, "recipe simple, re-run", tiny_data, submissions_dir=sub.parent, log=said.append)
    assert again["ref"] == result["ref"] and "already submitted" in again["reason"]
    assert len(ledger_rows(sub)) == 1                     # an identical CSV is not sent twice
    assert not any(line.startswith("submitting") for line in said) and said[-1].startswith(f"not submitting {sub}")


def test_a_recipes_competition_given_beats_the_synthetic_datas(kaggle_env, sub, tiny_data, tiny_answers):
    """Probe 13: with a stand-in named, the synthetic data's competition won over --competition, and the
    404 told the user to check the --competition they had given right."""
    with StandIn(tiny_data, tiny_answers, competition="ml2023springhw4") as server:
        result = recipe_submit(sub, "m", tiny_data, competition="ml2023springhw4", submissions_dir=sub.parent,
                               endpoint=server.url)
        assert result["status"] in ("PENDING", "COMPLETE"), result
        assert [row["competition"] for row in ledger_rows(sub)] == ["ml2023springhw4"]
    # and with no stand-in named, on the recipe's own rehearsal stand-in (probe 14)
    other = sub.with_name("other.csv")
    shutil.copy(sub, other)
    shutil.copy(sub.with_suffix(".json"), other.with_suffix(".json"))
    result = recipe_submit(other, "m2", tiny_data, competition="ml2021spring-hw2", submissions_dir=sub.parent)
    assert result["status"] == "COMPLETE" and ledger_rows(sub)[-1]["competition"] == "ml2021spring-hw2", result


def test_kit_submit_sends_a_vote_to_the_competition_its_data_came_from(kaggle_env, tiny_data, tiny_answers,
                                                                       tmp_path, capsys):
    """Probe 13: a recipe sent its vote on downloaded ml2023springhw4 data there, but `kit submit` of the
    same CSV, without --competition, sent it to ml2022spring-hw4."""
    real = Path(shutil.copytree(tiny_data, tmp_path / "dl" / "Dataset",
                                ignore=shutil.ignore_patterns(".kit-synth.json", ".kit-cache")))
    (tmp_path / "dl" / ".kit-download.json").write_text(json.dumps({"competition": "ml2023springhw4",
                                                                    "in_out": "Dataset"}))
    csv = write_submission(tmp_path / "submissions", tiny_answers, real, "vote")
    with StandIn(tiny_data, tiny_answers, competition="ml2023springhw4") as server:
        code, out, err = kit(capsys, "submit", csv, "-m", "again", "--ledger", tmp_path / "ledger.csv",
                             "--endpoint", server.url)
    assert code == 0 and "to ml2023springhw4" in out, err
    assert list(read_ledger(tmp_path / "ledger.csv")["competition"]) == ["ml2023springhw4"]
    # probe 14: with --data a copy of Dataset/ (no marker above it), the manifest's competition decides
    manifest = json.loads(csv.with_suffix(".json").read_text())
    csv.with_suffix(".json").write_text(json.dumps({**manifest, "competition": "ml2023springhw4"}))
    copy = shutil.copytree(real, tmp_path / "copy")
    with StandIn(tiny_data, tiny_answers, competition="ml2023springhw4") as server:
        code, out, err = kit(capsys, "submit", csv, "-m", "copy", "--data", copy, "--ledger", tmp_path / "l2.csv",
                             "--endpoint", server.url)
        assert code == 0 and "to ml2023springhw4" in out, err
        code, out, err = kit(capsys, "submit", csv, "-m", "x", "--competition", "ml2022spring-hw4", "--ledger",
                             tmp_path / "l3.csv", "--endpoint", server.url)       # said, then sent as asked
    assert f"note: {csv} was voted on data of ml2023springhw4; sending it to ml2022spring-hw4" in err


def test_recipe_submit_skips_real_data_without_credentials(kaggle_env, sub, tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    real = tmp_path / "real"
    shutil.copytree(tiny_data, real, ignore=shutil.ignore_patterns(".kit-synth.json", ".kit-cache"))
    result = recipe_submit(sub, "recipe simple", real, submissions_dir=sub.parent)
    assert result["status"] == "SKIPPED" and "kaggle.json" in result["reason"]
    assert not (sub.parent / "ledger.csv").exists()


# ---------------------------------------------------------------- `kit kaggle serve` and the bare client
@pytest.mark.slow
def test_kaggle_serve_cli_with_fault_and_the_kaggle_cli(kaggle_env, sub, tiny_data):
    serve = subprocess.Popen([sys.executable, "-m", "kit", "kaggle", "serve", "--data", tiny_data, "--port", "0",
                              "--pending-polls", "0", "--fail", "CreateSubmission:500:1"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = serve.stdout.readline().split(" on ")[1].split()[0]
        code = subprocess.run([sys.executable, "-m", "kit", "submit", sub, "-m", "via serve", "--wait",
                               "--ledger", sub.parent / "ledger.csv", "--endpoint", url],
                              capture_output=True, text=True, timeout=120)
        assert code.returncode == 0, code.stderr
        # The bare `kaggle` CLI, pointed at the stand-in the way the serve banner says, lists it too.
        env = dict(os.environ, KAGGLE_API_ENVIRONMENT="LOCALHOST", HTTP_PROXY=url, http_proxy=url,
                   NO_PROXY="", no_proxy="")
        listing = subprocess.run([str(Path(sys.executable).with_name("kaggle")), "competitions", "submissions",
                                  "-c", COMP, "-v"], capture_output=True, text=True, timeout=120, env=env)
        assert listing.returncode == 0, listing.stderr
        assert "via serve" in listing.stdout and "COMPLETE" in listing.stdout
        by_hand = subprocess.run([str(Path(sys.executable).with_name("kaggle")), "competitions", "submit", COMP,
                                  "-f", str(sub), "-m", "by hand"], capture_output=True, text=True, timeout=120,
                                 env=env)
        assert by_hand.returncode == 0 and "submissions remaining today" in by_hand.stdout, by_hand.stdout
        board = subprocess.run([str(Path(sys.executable).with_name("kaggle")), "competitions", "leaderboard",
                                COMP, "-s"], capture_output=True, text=True, timeout=120, env=env)
        assert board.returncode == 0 and "kit-test" in board.stdout, board.stdout
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_the_worker_makes_the_clients_config_dir_first_and_tolerates_it_existing(tmp_path, monkeypatch):
    # the client makes it with a check-then-create on import: two workers at once could race
    from kit.kaggle.worker import config_dir_ready

    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "a" / "kaggle-config"))
    config_dir_ready()
    config_dir_ready()                          # the other worker, a moment later: no FileExistsError
    assert (tmp_path / "a" / "kaggle-config").is_dir()
    monkeypatch.delenv("KAGGLE_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config_dir_ready()                          # no ~/.kaggle on Linux: the client looks in $XDG_CONFIG_HOME/kaggle
    assert (tmp_path / "xdg" / "kaggle").is_dir() and not (tmp_path / "home" / ".kaggle").exists()


def test_the_kaggle_worker_loads_neither_torch_nor_pandas():
    """Every Kaggle call runs in a fresh `python -m kit.kaggle.worker`: torch would cost each call seconds."""
    code = ("import sys, kit.kaggle.worker; "
            "print(' '.join(m for m in ('torch', 'pandas', 'accelerate') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_folder_a_sigkilled_stand_in_left_goes_when_the_next_one_starts(tiny_data, tiny_answers, tmp_path,
                                                                           monkeypatch):
    """A SIGKILL runs no cleanup, so `kit kaggle serve` left /tmp/kit-standin-* (probe 9); its name holds the
    pid, and the next stand-in on this machine removes the folders of processes that are gone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    left = tmp_path / f"kit-standin-{gone.pid}@{host}.abc123"
    running = tmp_path / f"kit-standin-{os.getpid()}@{host}.def456"
    for folder in (left, running):
        (folder / "kernels").mkdir(parents=True)
    with StandIn(tiny_data, tiny_answers, competition=COMP) as server:
        assert server._tmp.parent == tmp_path and server._tmp.name.startswith(f"kit-standin-{os.getpid()}@")
        assert not left.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name]


def test_a_recipe_on_real_data_without_credentials_says_so_before_it_trains(kaggle_env, tiny_data, tmp_path,
                                                                            monkeypatch):
    """Probe 19: the README said the recipe's first lines say its submission will be skipped; only the
    end said so, after hours of training in a notebook."""
    from kit.kaggle import check_recipe_submissions

    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KIT_KAGGLE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    real = tmp_path / "real"
    shutil.copytree(tiny_data, real, ignore=shutil.ignore_patterns(".kit-synth.json", ".kit-cache"))
    lines: list[str] = []
    after = {"ensemble": "auto", "submit": True}
    check_recipe_submissions(tmp_path / "submissions", "boss", after, True, real, None, lines.append)
    assert len(lines) == 1 and "no Kaggle credentials found" in lines[0] and "will be skipped" in lines[0]
    check_recipe_submissions(tmp_path / "submissions", "boss", after, True, tiny_data, None, lines.append)
    assert len(lines) == 1                                  # synthetic data rehearses: nothing to say


def test_a_send_cut_off_before_its_answer_is_not_repeated_by_a_recipe(kaggle_env, standin, sub, tiny_data, capsys):
    """Probe 20: a recipe killed after Kaggle accepted the upload but before the ref came back left only
    the note `kit submit` writes before sending; the re-run sent the same bytes again (a second of the
    day's five). Now the re-run says so and sends nothing; `kit submit` by hand sends, with a note."""
    from kit.kaggle.client import target
    from kit.submission import note_sending

    ledger = sub.parent / "ledger.csv"
    note_sending(sub, sha256_file(sub), ledger, "2026-12-06T08:00:00Z", COMP, target(standin.url))
    result = recipe_submit(sub, "recipe re-run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert result["status"] == "FAILED" and "was cut off before the answer came back" in result["reason"]
    assert "CreateSubmission" not in standin.calls and not ledger.exists()          # nothing sent
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 0 and "cut off before the answer came back, and kit could not tell whether it was made" in err, err
    again = recipe_submit(sub, "recipe re-run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert "already submitted" in again["reason"] and len(ledger_rows(sub)) == 1    # the row now answers


def test_a_cut_off_send_is_looked_up_in_the_competitions_list_before_a_recipe_sends_again(
        kaggle_env, standin, sub, tiny_data, tiny_answers, tmp_path, capsys):
    """Probe 20 left the user to look: a send cut off before Kaggle's answer is now looked up in the
    competition's submission list by its noted message and file name. One that arrived is recorded
    (its ref and score) and not sent again; one that never arrived is sent."""
    from kit.kaggle.client import target
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    ledger, where = sub.parent / "ledger.csv", target(standin.url)
    note_sending(sub, sha256_file(sub), ledger, now(), COMP, where, "kit recipe r")
    made = call("submit", {"competition": COMP, "file": str(sub), "message": "kit recipe r", "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)         # Kaggle took it; the answer was lost
    result = recipe_submit(sub, "kit recipe r", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert result["status"] == "COMPLETE" and result["ref"] == str(made["ref"]) and result["public"], result
    assert "not sent again" in result["reason"] and standin.calls.count("CreateSubmission") == 1
    rows = ledger_rows(sub)
    assert [(r["ref"], r["status"], r["sha256"]) for r in rows] == [(str(made["ref"]), "COMPLETE", sha256_file(sub))]
    again = recipe_submit(sub, "kit recipe r", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert "already submitted" in again["reason"] and standin.calls.count("CreateSubmission") == 1

    other = write_submission(tmp_path / "again", tiny_answers, tiny_data, "other", wrong_every=3)  # never arrived
    note_sending(other, sha256_file(other), other.parent / "ledger.csv", now(), COMP, where, "kit recipe r")
    sent = recipe_submit(other, "kit recipe r", tiny_data, submissions_dir=other.parent, endpoint=standin.url)
    assert sent["status"] == "COMPLETE" and sent["ref"] != str(made["ref"]) and sent["reason"] is None, sent
    assert standin.calls.count("CreateSubmission") == 2

    by_hand = write_submission(tmp_path / "hand", tiny_answers, tiny_data, "mine", wrong_every=4)
    args = submit_args(by_hand, standin)            # `kit submit` by hand: the one it finds is recorded, not resent
    note_sending(by_hand, sha256_file(by_hand), by_hand.parent / "ledger.csv", now(), COMP, where, "test run")
    lost = call("submit", {"competition": COMP, "file": str(by_hand), "message": "test run", "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)
    code, out, err = kit(capsys, *args)
    assert code == 0 and f"reached Kaggle: ref {lost['ref']}" in err and "not sent again" in err, err
    assert f"ref {lost['ref']}" in out and standin.calls.count("CreateSubmission") == 3    # probe 28: not twice
    refs = [r["ref"] for r in read_ledger(by_hand.parent / "ledger.csv").to_dict("records")]
    assert refs == [str(lost["ref"])]
    code, _, err = kit(capsys, *args)               # asked again: sent, with the note that it spends another
    assert code == 0 and "spends another" in err and standin.calls.count("CreateSubmission") == 4, err


def _send_by_another(csv: Path, message: str, url: str, name: str | None = None, tmp: Path | None = None) -> dict:
    """A send the ledger knows nothing of (a teammate's, another checkout's), of CSV's bytes or of other
    bytes under CSV's file name (`name`: a different vote copied into tmp/<csv's name>)."""
    sent = csv
    if name is not None and tmp is not None:
        sent = tmp / csv.name
        sent.parent.mkdir(parents=True, exist_ok=True)
        sent.write_text(name)
    return call("submit", {"competition": COMP, "file": str(sent), "message": message, "wait": False,
                           "timeout": 10.0, "poll": 0.1}, url)


def test_a_cut_off_send_is_not_mistaken_for_another_send_of_that_name(kaggle_env, standin, sub, tiny_data,
                                                                      tiny_answers, tmp_path, capsys):
    """Probe 25: another CSV under the same file name and message (a teammate's, a second checkout's) was
    taken for the cut-off send, and its scores recorded for this CSV, which was then never sent. The size
    must match too, and two that could be it are the user's to look at; a match whose wait fails keeps its
    PENDING row and says so; `kit submit` looks only once the CSV has passed its checks."""
    from kit.kaggle.client import target
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    where, message = target(standin.url), "kit recipe r (quick budget)"
    note_sending(sub, sha256_file(sub), sub.parent / "ledger.csv", now(), COMP, where, message)
    _send_by_another(sub, message, standin.url, "Id,Category\nother,vote\n", tmp_path / "theirs")
    sent = recipe_submit(sub, message, tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert sent["status"] == "COMPLETE" and sent["reason"] is None, sent          # theirs is not ours: sent
    assert standin.calls.count("CreateSubmission") == 2

    two = write_submission(tmp_path / "two", tiny_answers, tiny_data, "two", wrong_every=5)
    note_sending(two, sha256_file(two), two.parent / "ledger.csv", now(), COMP, where, message)
    for _ in range(2):
        _send_by_another(two, message, standin.url)
    again = recipe_submit(two, message, tiny_data, submissions_dir=two.parent, endpoint=standin.url)
    assert again["status"] == "FAILED" and "2 submissions in the list could be it" in again["reason"], again
    assert standin.calls.count("CreateSubmission") == 4 and not (two.parent / "ledger.csv").exists()

    slow = write_submission(tmp_path / "slow", tiny_answers, tiny_data, "slow", wrong_every=6)
    note_sending(slow, sha256_file(slow), slow.parent / "ledger.csv", now(), COMP, where, message)
    standin.pending_polls = 10**6                                                 # PENDING when found
    made = _send_by_another(slow, message, standin.url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("kit.kaggle.submissions.call", _wait_fails(call))
        found = recipe_submit(slow, message, tiny_data, submissions_dir=slow.parent, endpoint=standin.url)
    assert found["status"] == "PENDING" and found["ref"] == str(made["ref"]), found
    assert "waiting for its score failed" in found["reason"] and "could not tell" not in found["reason"]
    assert [r["status"] for r in read_ledger(slow.parent / "ledger.csv").to_dict("records")] == ["PENDING"]

    hand = write_submission(tmp_path / "hand", tiny_answers, tiny_data, "hand", wrong_every=7)
    note_sending(hand, sha256_file(hand), hand.parent / "ledger.csv", now(), COMP, where, "test run")
    _send_by_another(hand, "test run", standin.url)
    with pytest.MonkeyPatch.context() as mp:                                       # refused by its checks
        mp.setenv("KIT_KAGGLE_BACKOFF", "nan")
        code, _, err = kit(capsys, *submit_args(hand, standin))
    assert code == 2 and "reached Kaggle" not in err and not (hand.parent / "ledger.csv").exists(), err


def _wait_fails(real_call):
    def call_but_wait(op, params, *args, **kwargs):
        if op == "wait":
            raise KitError("the stand-in went away")
        return real_call(op, params, *args, **kwargs)
    return call_but_wait


def test_a_send_answered_in_another_ledger_or_noted_by_hand_is_not_taken_as_cut_off(kaggle_env, standin, sub,
                                                                                       tiny_data, capsys):
    """Probe 22: a send Kaggle accepted (or refused) and recorded in a ledger of one's own (`kit submit
    --ledger`) was reported by the recipe as cut off, FAILED; a note line edited by hand gave a traceback."""
    from kit.kaggle.client import target
    from kit.kaggle.notes import interrupted_send
    from kit.submission import note_sending, submitted_note

    mine = sub.parent / "hw4-mine.csv"
    args = submit_args(sub, standin)
    args[args.index("--ledger") + 1] = mine
    assert kit(capsys, *args)[0] == 0                                               # accepted, noted with its ref
    assert interrupted_send(sub.parent / "ledger.csv", sub, COMP, target(standin.url)) is None
    result = recipe_submit(sub, "recipe", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert "cut off" not in (result["reason"] or "")
    # refused by Kaggle and recorded FAILED in the ledger of one's own: answered too
    submitted_note(sub).unlink()
    note_sending(sub, sha256_file(sub), mine, "2026-12-06T09:00:00Z", COMP, target(standin.url))
    from kit.kaggle import append_ledger

    append_ledger(mine, {"time": "2026-12-06T09:00:00Z", "competition": COMP, "file": str(sub),
                         "sha256": sha256_file(sub), "status": "FAILED", "target": target(standin.url)})
    assert interrupted_send(sub.parent / "ledger.csv", sub, COMP, target(standin.url)) is None
    with submitted_note(sub).open("a") as f:                                        # a line edited by hand
        bad = {"sha256": sha256_file(sub), "ref": "", "time": ["x"], "competition": COMP}
        f.write(json.dumps(bad) + "\nnot json\n")
    assert interrupted_send(sub.parent / "ledger.csv", sub, COMP, target(standin.url)) is None


# ---------------------------------------------------------------- probe 26: a server unlike kit's stand-in
def test_a_create_whose_answer_is_lost_after_kaggle_made_it_is_not_sent_twice(kaggle_env, standin, sub, capsys):
    """The stand-in failed CreateSubmission before making anything; Kaggle may make the submission and then
    answer 5xx (or drop the connection): kit retried, and two of the day's five were spent, one recorded
    nowhere. The list is read for it before any retry."""
    from kit.kaggle.server_competitions import MADE

    standin.inject(MADE, 503)
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0 and "the answer was lost (HTTP 503), but the submission was made" in err, err
    assert standin.calls.count("CreateSubmission") == 1 and len(standin.submissions) == 1
    [row] = ledger_rows(sub)
    assert row["ref"] == str(standin.submissions[0]["ref"]) and row["status"] == "COMPLETE"


def test_an_answer_without_a_ref_is_never_taken_for_an_older_submission_of_that_message(kaggle_env, standin, sub,
                                                                                         tiny_answers, tiny_data,
                                                                                         tmp_path, capsys):
    """Recipes repeat their message and file name: a create answered without a ref took the first listed
    submission of them, an older one, and its score was recorded for new bytes."""
    from kit.kaggle.server_competitions import MADE

    assert kit(capsys, *submit_args(sub, standin, "--wait"))[0] == 0                # an older one, scored
    worse = write_submission(tmp_path / "later", tiny_answers, tiny_data, sub.stem, wrong_every=2)
    standin.inject(MADE, 200)                                                       # made; answered without a ref
    code, out, err = kit(capsys, *submit_args(worse, standin, "--wait"))
    assert code == 0, err
    new = str(standin.submissions[-1]["ref"])
    [row] = read_ledger(worse.parent / "ledger.csv").to_dict("records")
    assert row["ref"] == new != ledger_rows(sub)[0]["ref"] and f"ref {new}" in out
    standin.inject(MADE, 204)                                                       # "success", nothing made
    code, _, err = kit(capsys, *submit_args(worse, standin, "--wait", "--ledger", tmp_path / "other.csv"))
    assert code == 2 and "no new submission of it is in the competition's list" in one_error_line(err)
    assert read_ledger(tmp_path / "other.csv").iloc[0]["status"] == "FAILED"        # not the older one's score


def test_scores_of_zero_are_scores_and_a_hidden_private_score_is_fetched_later(kaggle_env, standin, sub, capsys):
    """A score of 0 sent as a number was written as empty; a private score Kaggle hides until the
    competition ends was never asked for again (`kit scores` refreshed PENDING rows only)."""
    from kit.kaggle.ledger import LEDGER_COLUMNS
    from kit.kaggle.worker import _score

    assert (_score(0.0), _score(0), _score("0.12"), _score(None), _score("")) == ("0.0", "0", "0.12", "", "")
    assert kit(capsys, *submit_args(sub, standin, "--wait"))[0] == 0
    ledger = sub.parent / "ledger.csv"
    text = ledger.read_text().splitlines()
    row = dict(zip(LEDGER_COLUMNS, text[1].split(","), strict=True))
    hidden = text[1].replace(f",{row['private']},", ",,")                           # as Kaggle showed it then
    ledger.write_text("\n".join([text[0], hidden]) + "\n")
    assert read_ledger(ledger).iloc[0]["private"] == ""
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and read_ledger(ledger).iloc[0]["private"] == row["private"] != "", (out, err)


def test_a_403_keeps_kaggles_own_reason(kaggle_env, standin, sub, capsys):
    standin.inject("CreateSubmission", 403)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    line = one_error_line(err)
    assert code == 2 and "HTTP 403: Permission denied" in line and "if it is the rules" in line, line


def test_a_wait_is_bounded_while_one_http_call_hangs(kaggle_env, monkeypatch):
    """The client sets no timeout of its own: a server that takes the connection and never answers hung
    `--wait` (and `kit scores`) past --timeout for ever."""
    import kit.kaggle.client as client_module

    monkeypatch.setattr(client_module, "STALLED", 1.0)
    with socket.socket() as silent:                 # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(KitError, match="did not answer within --timeout 1s"):      # stopped, not hung
            call("wait", {"competition": COMP, "ref": 1, "timeout": 1.0, "poll": 0.1}, url)


def test_an_outage_longer_than_the_retries_is_waited_out_until_the_timeout(kaggle_env, standin, sub, capsys):
    """A list failing past the retries (about a minute at the default backoff) ended --wait long before
    its --timeout; the wait now goes on, and the score comes."""
    standin.pending_polls = 1
    submitted = standin.calls.count("ListSubmissions")
    standin.inject("ListSubmissions", 503, count=12)            # more than two rounds of retries
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0 and "still waiting for submission" in err, err
    assert ledger_rows(sub)[0]["status"] == "COMPLETE" and standin.calls.count("ListSubmissions") - submitted > 12


def test_a_submission_dated_with_a_zone_after_its_fractional_seconds_is_read_in_utc():
    """kagglesdk drops a zone that follows fractional seconds: a cut-off send dated `...21.259-05:00` read
    as five hours before it was sent, so it was not found, and it was sent again (probe 26)."""
    from datetime import datetime

    from kit.kaggle.sdk_reading import iso_utc

    utc = datetime(2026, 12, 6, 11, 11, 21, 259000)
    assert iso_utc("2026-12-06T06:11:21.259-05:00") == utc == iso_utc("2026-12-06T11:11:21.259Z")
    assert iso_utc("2026-12-06T13:11:21.259+0200") == utc and iso_utc("2026-12-06T11:11:21.2590001") == utc
    assert iso_utc("2026-12-06") == datetime(2026, 12, 6)


def test_a_status_kagglesdk_does_not_know_is_pending_not_a_failed_list(monkeypatch):
    """One submission with a status the client's enum lacks (`RUNNING`), or sent as a number, failed
    the whole list, and with it every --wait and `kit scores` (probe 26)."""
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission
    from kagglesdk.competitions.types.submission_status import SubmissionStatus
    from kagglesdk.kaggle_object import DateTimeSerializer, EnumSerializer

    from kit.kaggle.sdk_reading import read_as_kaggle_might_send

    monkeypatch.setattr(EnumSerializer, "_from_str", EnumSerializer._from_str)       # restored after the test
    monkeypatch.setattr(DateTimeSerializer, "_from_str", DateTimeSerializer._from_str)
    read_as_kaggle_might_send()
    read = [ApiSubmission.from_dict({"ref": 7, "status": status}).status for status in ("RUNNING", 1, "complete")]
    assert read == [SubmissionStatus.PENDING, SubmissionStatus.COMPLETE, SubmissionStatus.COMPLETE]


def test_a_send_kit_cannot_tell_was_made_is_looked_up_not_sent_again(kaggle_env, standin, sub, tiny_data,
                                                                     capsys):
    """Probe 27: an answer lost while kit could not read the list (down before the create) was retried
    blindly (two submissions), or, refused, left a FAILED row that a re-run sent again. Now the attempt
    is FAILED saying it may have been made, and a re-run looks it up first: found, not sent again."""
    from kit.kaggle.client import MAYBE_MADE
    from kit.kaggle.server_competitions import MADE

    standin.inject("ListSubmissions", 503, count=4)            # the look before the create fails
    standin.inject(MADE, 503)                                   # made, and the answer lost
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and MAYBE_MADE in one_error_line(err) and standin.calls.count("CreateSubmission") == 1
    [row] = ledger_rows(sub)
    assert row["status"] == "FAILED" and MAYBE_MADE in row["error"]
    again = recipe_submit(sub, "a re-run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert again["ref"] == str(standin.submissions[0]["ref"]) and "not sent again" in again["reason"], again
    assert standin.calls.count("CreateSubmission") == 1 and len(standin.submissions) == 1


def test_refs_as_a_server_may_send_them_are_digits_in_the_ledger():
    from kit.kaggle.worker import _ref

    assert [_ref(v) for v in (500001, "500001", 500001.0, "500001.0")] == ["500001"] * 4


def test_kit_scores_rewrites_the_ledger_once_however_many_rows_it_fills(kaggle_env, standin, tmp_path, tiny_data,
                                                                         tiny_answers, capsys):
    """Probe 27: one rewrite (and one backup) per filled row: eleven rows left no backup of the ledger as
    it was before `kit scores`."""
    folder = tmp_path / "submissions"
    ledger = folder / "ledger.csv"
    for k in range(3):
        csv = write_submission(folder, tiny_answers, tiny_data, f"s{k}", wrong_every=k + 2)
        assert kit(capsys, "submit", csv, "-m", csv.stem, "--ledger", ledger, "--endpoint", standin.url)[0] == 0
    backups = len(list(folder.glob("ledger.csv.bak-*")))
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and set(read_ledger(ledger)["status"]) == {"COMPLETE"}, (out, err)
    assert len(list(folder.glob("ledger.csv.bak-*"))) == backups + 1


def test_retry_after_as_an_http_date_is_honoured():
    """HTTP allows Retry-After as a date; it was ignored, and kit's own backoff (about a minute in all)
    used instead of the wait the server asked for (probe 26)."""
    import email.utils

    from kit.kaggle.retrying import retry_after

    class Answer:
        def __init__(self, value: str):
            self.headers = {"Retry-After": value}

    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after(Answer(later)) <= 30 and retry_after(Answer("7")) == 7.0
    assert retry_after(Answer("soon")) is None


def test_a_download_redirected_to_a_url_without_an_extension_is_still_the_zip(tmp_path):
    """The client names the file after the redirect URL's extension; without one (`.../dl?name=x`) it
    made folders of the URL and kit said the zip "is a folder" (probe 26)."""
    from kit.kaggle.worker import _op_download

    class Client:
        def competition_download_files(self, competition, path, quiet=True):
            folder = Path(path) / f"{competition}.1:9100" / "files"          # what the client makes of it
            folder.mkdir(parents=True)
            (folder / "dl").write_bytes(b"PK\x05\x06" + b"\x00" * 18)       # an empty zip

    mine = tmp_path / f"{COMP}.notes"                                        # a folder of the user's: kept
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    got = _op_download(Client(), {"competition": COMP, "path": str(tmp_path)}, lambda line: None)
    assert got == {"zip": str(tmp_path / f"{COMP}.zip")} and zipfile.is_zipfile(got["zip"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{COMP}.notes", f"{COMP}.zip"]


def test_a_retry_refused_after_a_lost_answer_says_it_may_have_been_made(kaggle_env):
    """Probe 28: a list lagging past kit's looks, the retry refused ("blob already used"): a plain FAILED
    row, and the re-run sent the same bytes again. The refusal now says it may have been made."""
    import requests

    from kit.kaggle.client import MAYBE_MADE
    from kit.kaggle.worker import _create, _ref

    class Answer:
        def __init__(self, status: int):
            self.status_code, self.headers, self.text = status, {}, '{"message": "blob already used"}'

        def json(self):
            return {"message": "blob already used"}

    class Lagging:                  # makes it, loses the answer, then refuses the retry; lists nothing yet
        def __init__(self):
            self.creates = 0

        def create_submission(self, request):
            self.creates += 1
            raise requests.HTTPError(response=Answer(503 if self.creates == 1 else 400))

        def list_submissions(self, request):
            return type("Page", (), {"submissions": [], "next_page_token": ""})()

    create = type("Create", (), {"competition_name": COMP, "submission_description": "m"})()
    client = Lagging()
    with pytest.raises(KitError) as refused:
        _create(client, create, "sub.csv", set(), lambda line: None)
    assert client.creates == 2 and MAYBE_MADE in str(refused.value) and "blob already used" in str(refused.value)
    assert [_ref(v) for v in ("abc", -5, None, 0)] == ["", "", "", ""]


def test_the_ledger_names_only_the_members_the_vote_uses(kaggle_env, standin, sub, capsys):
    """Probe 47 L5: a vote that chose one member alone (weights 1, 0) was recorded with every member in
    the ledger's `members` column; the Kaggle message named the one."""
    import json

    manifest = json.loads(sub.with_suffix(".json").read_text())
    sub.with_suffix(".json").write_text(json.dumps({**manifest, "weights": [0.0, 1.0], "method": "single",
                                                    "vote": "auto"}))
    assert kit(capsys, *submit_args(sub, standin))[0] == 0
    [row] = ledger_rows(sub)
    assert row["members"] == "runs/simple/m1" and row["vote"] == "auto: single", row
