"""A submission sent is a submission recorded: a ledger that cannot be written stops `kit submit`
before anything is sent; a row the ledger still cannot take after Kaggle accepted the submission
is kept in a pending file that the next `kit scores` or `kit submit` merges. And the stand-in
refuses a fault it could never fire.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import stat

import pytest

from kit import env as kit_env
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle import read_ledger, submissions
from kit.kaggle.ledger import merge_rows, update_ledger
from kit.kaggle.pending import keep_pending, merge_pending, pending_files

from conftest import COMP, one_error_line, submit_args, write_submission
from conftest import kit_cli as kit


@pytest.fixture
def read_only_dir(monkeypatch):
    """Make a folder unwritable (chmod a-w; as root, where chmod does not stop writes, kit is also
    told it is not writable); writable again after the test."""
    made = []

    def make(folder):
        folder.chmod(folder.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        made.append(folder)
        if os.access(folder, os.W_OK):
            real = kit_env.writable
            monkeypatch.setattr(kit_env, "writable", lambda path: real(path) and str(path) != str(folder))
        return folder

    yield make
    for folder in made:
        folder.chmod(folder.stat().st_mode | stat.S_IWUSR)


def ledger_refused_before_sending(capsys, standin, sub, *extra) -> str:
    code, _, err = kit(capsys, *submit_args(sub, standin, *extra))
    assert code == 2
    line = one_error_line(err)
    assert "nothing was sent" in line and "--ledger" in line
    assert standin.calls == [] and standin.submissions == []      # the stand-in received nothing
    return line


def test_a_read_only_ledger_dir_is_refused_before_anything_is_sent(kaggle_env, standin, sub, read_only_dir,
                                                                   capsys):
    read_only_dir(sub.parent)
    code, _, err = kit(capsys, *submit_args(sub, standin))         # its CSV there too: that is said first
    assert code == 2 and "its folder cannot be written" in one_error_line(err) and standin.calls == []
    assert not (sub.parent / "ledger.csv").exists()
    elsewhere = sub.parent.parent / "csvs"                          # the CSV in a folder kit can write
    elsewhere.mkdir()
    for f in (sub, sub.with_suffix(".json")):
        (elsewhere / f.name).write_bytes(f.read_bytes())
    code, _, err = kit(capsys, "submit", elsewhere / sub.name, "-m", "m", "--ledger", sub.parent / "ledger.csv",
                       "--endpoint", standin.url)
    line = one_error_line(err)
    assert code == 2 and f"{sub.parent} is not writable" in line and "--ledger" in line and standin.calls == []


def test_a_ledger_whose_lock_cannot_be_taken_is_refused_before_sending(kaggle_env, standin, sub, capsys):
    (sub.parent / ".ledger.csv.lock").mkdir()           # a folder where the lock file must go
    line = ledger_refused_before_sending(capsys, standin, sub)
    assert "take its lock" in line


def test_a_ledger_that_is_a_folder_is_refused_before_sending(kaggle_env, standin, sub, capsys):
    (sub.parent / "ledger.csv").mkdir()
    assert "the ledger is not a file" in ledger_refused_before_sending(capsys, standin, sub)


def test_a_submission_that_is_a_folder_or_missing_is_named_so(kaggle_env, standin, sub, capsys):
    """Probe 53 F4: a folder given as the CSV was "submission file not found"."""
    for given, said in ((sub.parent, "a folder, not a submission CSV"),
                        (sub.parent / "nope.csv", "submission file not found")):
        code, _, err = kit(capsys, *submit_args(given, standin))
        assert code == 2 and one_error_line(err) == f"kit: error: {given}: {said}" and standin.submissions == [], err


def failing_append(monkeypatch, ledger):
    def append(path, row):
        raise OSError(errno.EROFS, "Read-only file system", str(ledger))

    monkeypatch.setattr(submissions, "append_ledger", append)


def test_a_row_the_ledger_cannot_take_after_acceptance_is_kept_and_merged_by_kit_scores(kaggle_env, standin, sub,
                                                                                       monkeypatch, capsys):
    ledger = sub.parent / "ledger.csv"
    real_append = submissions.append_ledger
    failing_append(monkeypatch, ledger)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2
    [accepted] = standin.submissions                  # Kaggle has it ...
    ref = str(accepted["ref"])
    [kept] = [ln for ln in err.splitlines() if "could not be recorded" in ln]
    assert f"submission {ref} of {sub}" in kept and sha256_file(sub) in kept and "'test run'" in kept
    assert f"kept in {ledger}.pending" in kept
    assert ref in one_error_line(err) and f"kit scores --ledger {ledger}" in one_error_line(err)
    assert not ledger.exists()                        # ... the ledger does not, the pending file does
    [row] = read_ledger(f"{ledger}.pending").to_dict("records")
    assert row["ref"] == ref and row["status"] == "PENDING" and row["sha256"] == sha256_file(sub)

    monkeypatch.setattr(submissions, "append_ledger", real_append)      # the ledger can be written again
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0, err
    assert f"added 1 submission row(s) from {ledger}.pending" in err
    [row] = read_ledger(ledger).to_dict("records")
    assert row["ref"] == ref and row["status"] == "COMPLETE" and row["public"]     # merged, then refreshed
    assert not (sub.parent / "ledger.csv.pending").exists()


def test_the_next_kit_submit_merges_a_kept_row_with_its_score(kaggle_env, standin, sub, tiny_data, tiny_answers,
                                                              monkeypatch, capsys):
    ledger = sub.parent / "ledger.csv"
    real_append = submissions.append_ledger
    failing_append(monkeypatch, ledger)
    code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 2
    [kept] = read_ledger(f"{ledger}.pending").to_dict("records")
    assert kept["status"] == "COMPLETE" and kept["public"]            # the waited-for score was kept too

    monkeypatch.setattr(submissions, "append_ledger", real_append)
    other = write_submission(sub.parent, tiny_answers, tiny_data, name="other")
    code, _, err = kit(capsys, *submit_args(other, standin))
    assert code == 0, err
    rows = read_ledger(ledger)
    assert list(rows["file"]) == [str(sub), str(other)]               # the kept row first: it was sent first
    assert rows.iloc[0]["ref"] == kept["ref"] and rows.iloc[0]["public"] == kept["public"]
    assert not (sub.parent / "ledger.csv.pending").exists()


def test_a_pending_row_goes_to_the_cache_when_the_ledger_dir_is_read_only(tmp_path, monkeypatch, read_only_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ledger = tmp_path / "subs" / "ledger.csv"
    ledger.parent.mkdir()
    read_only_dir(ledger.parent)
    row = {"time": "t", "competition": COMP, "file": "a.csv", "sha256": "ab", "message": "m", "ref": "1001",
           "status": "PENDING"}
    kept = keep_pending(ledger, row)
    assert kept == pending_files(ledger)[1] and kept.is_relative_to(tmp_path / "cache" / "kit" / "pending")
    assert keep_pending(ledger, dict(row, status="COMPLETE", public="0.5")) == kept      # replaced, not added
    assert read_ledger(kept)[["ref", "status", "public"]].values.tolist() == [["1001", "COMPLETE", "0.5"]]
    with pytest.raises(KitError, match=r"1 submission\(s\) wait to be added to .*ledger.csv"):
        merge_pending(ledger)                       # the ledger is still read-only: one line, the row kept
    assert kept.is_file()


def test_merging_a_row_twice_changes_nothing_and_never_takes_a_score_back(tmp_path):
    ledger = tmp_path / "ledger.csv"
    row = {"time": "t", "competition": COMP, "file": "a.csv", "ref": "1001", "status": "PENDING"}
    merge_rows(ledger, [row])
    merge_rows(ledger, [dict(row, status="COMPLETE", public="0.9")])
    backups = sorted(tmp_path.glob("ledger.csv.bak-*"))
    merge_rows(ledger, [row])                       # an old PENDING copy of the same submission
    [merged] = read_ledger(ledger).to_dict("records")
    assert merged["status"] == "COMPLETE" and merged["public"] == "0.9"
    assert sorted(tmp_path.glob("ledger.csv.bak-*")) == backups     # nothing changed, nothing rewritten


# ---------------------------------------------------------------- `kit kaggle serve --fail`
def test_a_fault_for_a_method_the_stand_in_does_not_have_is_refused(tiny_data, standin, capsys):
    code, _, err = kit(capsys, "kaggle", "serve", "--data", tiny_data, "--port", "0", "--fail", "NoSuchMethod:500:2")
    assert code == 2
    line = one_error_line(err)
    assert "unknown method 'NoSuchMethod'" in line and "CreateSubmission" in line and "upload" in line
    with pytest.raises(KitError, match="no such method"):
        standin.inject("createsubmission", 500)
    standin.inject("CreateSubmission", 500)         # the known ones still work


def test_the_stand_in_refuses_a_submission_past_the_daily_limit_as_kaggle_does(kaggle_env, tiny_data, tiny_answers,
                                                                               sub, capsys):
    """Kaggle's five a day, rehearsed: past the limit the submission is refused with a 400 naming the
    allowance, and the ledger row says FAILED with that reason (the CSV is kept)."""
    from kit.kaggle.server import StandIn

    with StandIn(tiny_data, tiny_answers, competition=COMP, daily_limit=1) as standin:
        assert kit(capsys, *submit_args(sub, standin, "--wait"))[0] == 0
        code, _, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 2 and "daily submission allowance (1)" in one_error_line(err), err
    rows = read_ledger(sub.parent / "ledger.csv")
    assert list(rows["status"]) == ["COMPLETE", "FAILED"] and "allowance (1)" in rows["error"].iloc[1]
    assert sub.is_file() and len(standin.submissions) == 1
    code, out, _ = kit(capsys, "scores", "--ledger", sub.parent / "ledger.csv", "--no-refresh")
    assert code == 0 and "Submission not allowed: your team has used its daily submission allowance (1)" in out


@pytest.mark.parametrize("flag,value", [("--port", "99999"), ("--port", "-1"), ("--kernel-slots", "0"),
                                        ("--pending-polls", "-1"), ("--kernel-timeout", "-5"),
                                        ("--gpu-quota-used", "nan"), ("--daily-limit", "-1"),
                                        ("--fail", "CreateSubmission:999"), ("--fail", "CreateSubmission:429:-1"),
                                        ("--fail", "CreateSubmission:429:1:-2"), ("--fail", "CreateSubmission:200"),
                                        ("--fail", "CreateSubmission:429:1:2:3"), ("--competition", "../x")])
def test_a_stand_in_option_out_of_range_is_one_line(tiny_data, capsys, flag, value):
    code, _, err = kit(capsys, "kaggle", "serve", "--data", tiny_data, "--port", "0", flag, value)
    assert code == 2 and flag in one_error_line(err), err


def test_serving_a_data_dir_that_is_not_there_says_so(tmp_path, capsys):
    code, _, err = kit(capsys, "kaggle", "serve", "--data", tmp_path / "nope", "--port", "0")
    assert code == 2 and one_error_line(err) == f"kit: error: {tmp_path / 'nope'}: no such data dir"


def test_a_message_of_several_lines_is_one_row_of_the_scores_table(tmp_path, capsys):
    ledger = tmp_path / "ledger.csv"
    merge_rows(ledger, [{"time": "2026-12-05T00:00:00Z", "competition": COMP, "file": "a.csv", "sha256": "0" * 64,
                         "message": "first line\nsecond line", "ref": "1", "status": "COMPLETE", "public": "0.5",
                         "private": "0.5", "target": "kaggle"}])
    code, out, _ = kit(capsys, "scores", "--ledger", ledger, "--no-refresh")
    assert code == 0 and any(line.endswith("first line second line") for line in out.splitlines()), out


@pytest.mark.parametrize("message", ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "'=x", "''",
                                     "'", "'a", "a=b", ""])
def test_a_message_a_spreadsheet_would_run_is_written_as_text_and_read_back_as_given(tmp_path, capsys, message):
    """Probe 44 F3: a `-m` message starting with `=` went into ledger.csv as it was, a formula when the
    ledger is opened in a spreadsheet."""
    ledger = tmp_path / "ledger.csv"
    merge_rows(ledger, [{"time": "2026-12-05T00:00:00Z", "competition": COMP, "file": "a.csv", "sha256": "0" * 64,
                         "message": message, "ref": "1", "status": "COMPLETE", "public": "0.5",
                         "private": "0.5", "target": "kaggle"}])
    [row] = list(csv.DictReader(io.StringIO(ledger.read_text())))
    assert not row["message"].startswith(("=", "+", "-", "@", "\t"))        # what a spreadsheet reads
    assert row["message"] in (message, "'" + message)
    assert read_ledger(ledger)["message"].tolist() == [message]
    update_ledger(ledger, COMP, "1", {"public": "0.6"})                       # a rewrite keeps it as it was
    assert read_ledger(ledger)["message"].tolist() == [message]


def test_serving_with_another_competitions_answer_key_says_so(tiny_data, tiny_answers, tmp_path, capsys):
    other = tmp_path / "other_answers.csv"
    rows = tiny_answers.read_text().splitlines()
    other.write_text("\n".join([rows[0], *(f"other-{r}" for r in rows[1:])]) + "\n")
    code, _, err = kit(capsys, "kaggle", "serve", "--data", tiny_data, "--port", "0", "--answers", other)
    line = one_error_line(err)
    assert code == 2 and f"{other}: its Ids are not the test utterances of {tiny_data} (20 missing, 20 unknown)" in line


def test_a_csv_in_a_folder_kit_cannot_write_is_refused_naming_what_to_do(kaggle_env, standin, sub, read_only_dir,
                                                                         capsys):
    """Probe 33: its lock failed first, advising --out, --runs or --cache, which `kit submit` has not."""
    read_only_dir(sub.parent)
    code, _, err = kit(capsys, "submit", sub, "-m", "m", "--ledger", sub.parent.parent / "ledger.csv",
                       "--endpoint", standin.url)          # the ledger elsewhere, writable
    line = one_error_line(err)
    assert code == 2 and "its folder cannot be written" in line and "submit a copy" in line, err
    assert "--cache" not in line and not standin.submissions
