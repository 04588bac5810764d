"""Each send carries its own id in the description Kaggle lists (kit.kaggle.client.tagged): a send whose
answer was lost is found by it, never taken for another's of the same message and file name, and a
FAILED row that "may have been made" is settled by `kit scores`. Also what a Kaggle-like server may send
that kagglesdk reads wrong: a score of 0 as a number, a kernel status it does not know, a list whose
newest rows leave out a ledger's older ones."""
from __future__ import annotations

import re

import pytest

from kit.kaggle import call, read_ledger
from kit.kaggle.client import MAYBE_MADE, same_send, tagged, target, untagged

from conftest import COMP, one_error_line, submit_args, write_submission
from conftest import kit_cli as kit

TAG = re.compile(r"^\[kit [0-9a-f]{10}\] test run$")


def test_a_send_is_listed_with_its_message_and_its_own_id(kaggle_env, standin, sub, capsys):
    from kit.kaggle.notes import sent_as

    assert kit(capsys, *submit_args(sub, standin, "--wait"))[0] == 0
    [made] = standin.submissions
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert TAG.match(made["description"]) and row["message"] == "test run", made["description"]
    assert sent_as(sub, row["sha256"], row["time"]) == made["description"]         # kept in the note beside it
    assert untagged(made["description"]) == "test run" and same_send(made["description"], f"  {made['description']} ")
    assert not same_send(made["description"], "test run") and not same_send(made["description"], None)
    assert same_send("an older kit's", "an older kit's") and tagged("m") != tagged("m")    # never two alike
    long = tagged("x" * 500)                            # the id first: a server that cuts descriptions keeps it
    assert len(long) < 230 and long.endswith("x" * 190 + "...") and same_send(long, long[:20])
    older = "test run [kit 0123456789]"                 # an older kit's description: its id last
    assert untagged(older) == "test run" and same_send(older, older) and not same_send(older, made["description"])
    assert untagged("a [kit 0123456789] in the middle") == "a [kit 0123456789] in the middle"


@pytest.mark.parametrize("theirs", ["plain", "tagged"])
def test_another_senders_submission_of_that_message_is_never_taken_for_a_refused_one(kaggle_env, standin, sub,
                                                                                       capsys, theirs):
    """Probe 28 D3: our create refused (5xx) before Kaggle made it, while a teammate's send of the same
    message and file name landed: kit took the teammate's submission as its own (its ref and score)
    and never sent ours."""
    from kit.kaggle.server_competitions import _ApiError

    real = standin.create_submission

    def refused_while_a_teammate_lands(token: str, description: str, user: str) -> dict:
        if len(standin.submissions) == 0:
            with standin.lock:
                upload = dict(standin.uploads[token])
            teammate = untagged(description) + (" [kit 0123456789]" if theirs == "tagged" else "")
            standin.uploads["theirs"] = upload
            real("theirs", teammate, "teammate")
            raise _ApiError(503, "Service Unavailable")             # ours: not made
        return real(token, description, user)

    standin.create_submission = refused_while_a_teammate_lands
    code, out, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0, err
    teammate, ours = standin.submissions
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["ref"] == str(ours["ref"]) != str(teammate["ref"]) and row["status"] == "COMPLETE", (row, err)
    assert standin.calls.count("CreateSubmission") == 2


def test_kit_scores_settles_a_send_that_may_have_been_made(kaggle_env, standin, sub, capsys):
    """Probe 28 D4: a FAILED row saying "it may have been made" stayed FAILED in the ledger (and the day's
    count wrong) until the same bytes were sent again. `kit scores` looks it up by its send's id."""
    from kit.kaggle.server_competitions import MADE

    standin.inject("ListSubmissions", 503, count=4)            # the look before the create fails
    standin.inject(MADE, 503)                                   # made, and the answer lost
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and MAYBE_MADE in one_error_line(err)
    ledger = sub.parent / "ledger.csv"
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    [made] = standin.submissions
    [row] = read_ledger(ledger).to_dict("records")
    assert code == 0 and row["ref"] == str(made["ref"]) and row["status"] == "COMPLETE", (row, err)
    assert row["public"] != "" and MAYBE_MADE not in row["error"] and "was made: submission" in err
    assert kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)[0] == 0     # settled once
    assert len(read_ledger(ledger)) == 1 and len(standin.submissions) == 1


def test_a_row_the_list_cannot_settle_stays_failed(kaggle_env, standin, sub, capsys):
    from kit.kaggle.server_competitions import MADE

    standin.inject("ListSubmissions", 503, count=4)
    standin.inject(MADE, 503)
    assert kit(capsys, *submit_args(sub, standin))[0] == 2
    standin.submissions.clear()                                 # a stand-in that forgot it: nothing to find
    teammate = sub.parent.parent / "teammate" / sub.name            # but a teammate's send of those bytes and message
    teammate.parent.mkdir()
    teammate.write_bytes(sub.read_bytes())
    call("submit", {"competition": COMP, "file": str(teammate), "message": tagged("test run"), "wait": False,
                    "timeout": 10.0, "poll": 0.1}, standin.url)
    code, _, err = kit(capsys, "scores", "--ledger", sub.parent / "ledger.csv", "--endpoint", standin.url)
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert code == 0 and row["status"] == "FAILED" and MAYBE_MADE in row["error"] and row["ref"] == "", err
    assert len(standin.submissions) == 1


def test_rows_older_than_the_list_kit_reads_are_named_not_passed_over(kaggle_env, standin, sub, capsys):
    """Probe 27 N8: rows past the 1000 newest were left unrefreshed without a word."""
    assert kit(capsys, *submit_args(sub, standin, "--wait"))[0] == 0
    ledger = sub.parent / "ledger.csv"
    lines = ledger.read_text().splitlines()
    ref = read_ledger(ledger).iloc[0]["ref"]
    old = lines[1].replace(f",{ref},", ",400001,")
    private = read_ledger(ledger).iloc[0]["private"]
    ledger.write_text("\n".join([lines[0], lines[1], old.replace(f",{private},", ",,")]) + "\n")
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and "submission(s) 400001 are not among the 1 listed" in err, err


def test_scores_of_zero_sent_as_numbers_and_a_kernel_status_kit_does_not_know(monkeypatch):
    """kagglesdk's getters answer '' for a score of 0 sent as a JSON number (probe 26); a kernel status its
    enum lacks (`FAILED`) failed the wait with a KeyError (probe 28)."""
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission
    from kagglesdk.kaggle_object import DateTimeSerializer, EnumSerializer
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusResponse

    from kit.kaggle.kernel_ops import _op_kernels_wait
    from kit.kaggle.sdk_reading import read_as_kaggle_might_send
    from kit.kaggle.worker import _sub_dict

    monkeypatch.setattr(EnumSerializer, "_from_str", EnumSerializer._from_str)       # restored after the test
    monkeypatch.setattr(DateTimeSerializer, "_from_str", DateTimeSerializer._from_str)
    read_as_kaggle_might_send()
    scored = _sub_dict(ApiSubmission.from_dict({"ref": 7, "status": "COMPLETE", "publicScore": 0,
                                                "privateScore": 0.0}))
    assert (scored["public"], scored["private"]) == ("0", "0.0")

    class Kernels:
        def __init__(self):
            self.looks = 0

        def get_kernel_session_status(self, request):
            self.looks += 1
            if self.looks > 5:
                raise AssertionError("waited on a kernel whose status says it ended")
            return ApiGetKernelSessionStatusResponse.from_dict({"status": "FAILED", "failureMessage": "oom"})

    kernels = Kernels()

    class Api:
        def build_kaggle_client(self):
            client = type("Client", (), {"kernels": type("K", (), {"kernels_api_client": kernels})()})()
            return type("Context", (), {"__enter__": lambda self: client, "__exit__": lambda self, *a: None})()

    events = []
    ended = _op_kernels_wait(Api(), {"refs": ["me/k"], "poll": 0}, lambda line: None, events.append)["ended"]
    assert ended == {"me/k": {"status": "FAILED", "message": "a status kit does not know: oom"}}
    assert kernels.looks == 1 and events[0]["event"]["status"] == "FAILED"


def test_a_cut_off_send_is_found_by_its_id_whatever_the_clocks_say(kaggle_env, standin, sub, tiny_data):
    """Probe 30: a server clock ten minutes behind hid a cut-off send from the re-run's lookup (it looked
    from the note's time less five minutes), which sent the same bytes again."""
    from datetime import datetime, timedelta

    from kit.fsio import sha256_file
    from kit.kaggle import recipe_submit
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    described = tagged("kit recipe r")
    note_sending(sub, sha256_file(sub), sub.parent / "ledger.csv", now(), COMP, target(standin.url), described)
    made = call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)         # Kaggle took it; the answer was lost
    behind = datetime.fromisoformat(standin.submissions[0]["date"].replace("Z", "+00:00")) - timedelta(minutes=10)
    standin.submissions[0]["date"] = behind.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    result = recipe_submit(sub, "kit recipe r", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert result["ref"] == str(made["ref"]) and "not sent again" in result["reason"], result
    assert standin.calls.count("CreateSubmission") == 1


def test_a_re_run_that_finds_a_send_that_may_have_been_made_settles_its_failed_row(kaggle_env, standin, sub,
                                                                                  tiny_data, capsys):
    """Probe 30: the re-run recorded the submission it found in a new row beside the FAILED one, which
    stayed in the table and was looked up by every `kit scores`."""
    from kit.kaggle import recipe_submit
    from kit.kaggle.server_competitions import MADE

    standin.inject("ListSubmissions", 503, count=4)
    standin.inject(MADE, 503)
    assert kit(capsys, *submit_args(sub, standin))[0] == 2
    again = recipe_submit(sub, "a re-run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert "not sent again" in again["reason"] and len(standin.submissions) == 1, again["reason"]
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["ref"] == str(standin.submissions[0]["ref"]) and MAYBE_MADE not in row["error"], again["reason"]
    assert row["message"] == "test run"


@pytest.mark.parametrize("rerun", ["kit submit", "recipe"])
def test_a_cut_off_send_of_bytes_sent_before_is_looked_up_not_sent_again(kaggle_env, standin, sub, tiny_data,
                                                                         capsys, rerun):
    """Probe 32: with an earlier send of these bytes in the ledger, a re-run never looked for a send cut off
    after it: `kit submit` sent once more, and the cut-off submission (made) was recorded nowhere."""
    import time

    from kit.fsio import sha256_file
    from kit.kaggle import recipe_submit
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    assert kit(capsys, *submit_args(sub, standin, "--wait"))[0] == 0              # the earlier send
    time.sleep(1.1)                                                                 # the cut-off one: a later second
    described = tagged("second")
    note_sending(sub, sha256_file(sub), sub.parent / "ledger.csv", now(), COMP, target(standin.url), described)
    cut = call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                          "timeout": 10.0, "poll": 0.1}, standin.url)       # made; the answer lost to a kill
    if rerun == "kit submit":
        code, _, err = kit(capsys, "submit", sub, "-m", "second", "--ledger", sub.parent / "ledger.csv",
                           "--endpoint", standin.url)
        assert code == 0 and "not sent again" in err, err
    else:
        result = recipe_submit(sub, "second", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
        assert result["ref"] == str(cut["ref"]) and "not sent again" in result["reason"], result
    assert standin.calls.count("CreateSubmission") == 2
    refs = sorted(read_ledger(sub.parent / "ledger.csv")["ref"])
    assert refs == sorted(str(s["ref"]) for s in standin.submissions)


def test_a_send_that_cannot_be_noted_beside_its_csv_is_not_sent(kaggle_env, standin, sub, capsys):
    """Probe 32: the send went on without its note, the only record of its id: a lost answer could then
    never be settled, and a re-run sent it again without a word."""
    from kit.submission import submitted_note

    submitted_note(sub).mkdir()                             # a note that cannot be written
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and "its send could not be noted" in one_error_line(err), err
    assert "CreateSubmission" not in standin.calls and "StartSubmissionUpload" not in standin.calls


@pytest.mark.parametrize("where, ledger", [("elsewhere", "../submissions/ledger.csv"), ("submissions", "ledger.csv")])
def test_kit_scores_from_another_folder_finds_the_note_beside_the_ledger(kaggle_env, standin, sub, monkeypatch,
                                                                          capsys, where, ledger):
    """Probe 32: the ledger names the CSV as `kit submit` was given it; `kit scores --ledger ../...` run from
    another folder looked for its note there, and left the row FAILED without a word."""
    from kit.kaggle.server_competitions import MADE
    from kit.submission import submitted_note

    monkeypatch.chdir(sub.parent.parent)
    standin.inject("ListSubmissions", 503, count=4)
    standin.inject(MADE, 503)
    assert kit(capsys, "submit", "submissions/sub.csv", "-m", "m", "--endpoint", standin.url,
               "--ledger", "submissions/ledger.csv")[0] == 2
    (sub.parent.parent / where).mkdir(exist_ok=True)
    monkeypatch.chdir(sub.parent.parent / where)            # probe 33: a relative --ledger beside it too
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert code == 0 and row["ref"] == str(standin.submissions[0]["ref"]), err
    assert f'"ref": "{row["ref"]}"' in submitted_note(sub).read_text()     # probe 34: beside the CSV itself
    assert not (sub.parent / "submissions").exists()


def test_notes_and_ledgers_damaged_by_hand_or_a_kill_are_read_past(kaggle_env, standin, sub, tiny_data, capsys):
    """Probe 32: a note line nested too deeply was a RecursionError traceback; a tagged note with a time
    edited by hand stopped its lookup (the id needs no time); a ledger temp file a kill left stayed."""
    from kit.fsio import sha256_file
    from kit.kaggle import recipe_submit
    from kit.submission import note_sending, submitted_note

    described = tagged("kit recipe r")
    note_sending(sub, sha256_file(sub), sub.parent / "ledger.csv", "yesterday", COMP, target(standin.url), described)
    with submitted_note(sub).open("a") as f:
        f.write("[" * 100000 + "]" * 100000 + "\n")
    made = call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)
    left = sub.parent / ".ledger.csv.k1ll.tmp"
    left.write_text("half a ledger")
    result = recipe_submit(sub, "kit recipe r", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert result["ref"] == str(made["ref"]) and "not sent again" in result["reason"], result
    assert not left.exists() and standin.calls.count("CreateSubmission") == 1


def test_data_fetched_from_a_stand_in_goes_back_to_the_competition_it_came_from(kaggle_env, tiny_data, tiny_answers,
                                                                                tmp_path, monkeypatch, capsys):
    """Probe 33: the zipped synthetic marker's competition overrode the one `kit data download` fetched
    the data from, so a stand-in serving `hw4-custom` had its vote sent to ml2022spring-hw4 (404)."""
    from kit.kaggle.server import StandIn
    from kit.layout import data_competition, is_synthetic

    with StandIn(tiny_data, tiny_answers, competition="hw4-custom") as server:
        monkeypatch.setenv("KIT_KAGGLE_ENDPOINT", server.url)
        code, out, err = kit(capsys, "data", "download", "--competition", "hw4-custom", "--out", tmp_path / "dl")
    assert code == 0, err
    fetched = tmp_path / "dl" / "Dataset"
    assert is_synthetic(fetched) and data_competition(fetched) == "hw4-custom"


def test_kit_submit_wait_waits_for_the_score_of_a_cut_off_send_it_finds(kaggle_env, standin, sub, capsys):
    """Probe 33: `kit submit --wait` that found its cut-off send made recorded it PENDING and ended without
    waiting for the score it was asked to wait for."""
    from kit.fsio import sha256_file
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    standin.pending_polls = 2                               # scored only after two polls
    described = tagged("test run")
    note_sending(sub, sha256_file(sub), sub.parent / "ledger.csv", now(), COMP, target(standin.url), described)
    call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                    "timeout": 10.0, "poll": 0.1}, standin.url)               # made; the answer lost to a kill
    code, out, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0 and "not sent again" in err, err
    assert standin.calls.count("CreateSubmission") == 1
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["status"] == "COMPLETE" and row["public"] != "", row
    assert "COMPLETE" in out and f"public {row['public']}" in out, out


def test_a_message_of_its_own_kit_number_is_never_read_as_the_send_id():
    """Probe 39: an older kit's note ("kit 2026120601 run [kit <id>]", the id last) was matched on the
    message's own "kit 2026120601": `kit scores` settled a send never made as made."""
    from kit.kaggle.client import send_id

    older = "kit 2026120601 run [kit 0123456789]"
    assert send_id(older) == "0123456789" and untagged(older) == "kit 2026120601 run"
    assert not same_send(older, "kit 2026120601 run")               # the message alone is not the send
    assert send_id("[kit 0123456789] kit 2026120601 run") == "0123456789"
    assert send_id("kit 0123456789 run") == "0123456789"            # a server that stripped the brackets
    assert send_id("a run [kit 0123456789] of mine") is None        # never from the middle


def test_a_recipes_re_run_fetches_the_score_its_killed_wait_never_got(kaggle_env, standin, sub, tiny_data, capsys):
    """Probe 39: a kill during the score wait left the row PENDING; every re-run showed "PENDING, public -
    private -" and "not sent again", and nothing fetched the score or said how."""
    from kit.kaggle import recipe_submit

    standin.pending_polls = 1
    assert kit(capsys, *submit_args(sub, standin))[0] == 0                 # sent; its wait cut short
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["status"] == "PENDING"
    again = recipe_submit(sub, "test run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert again["status"] == "COMPLETE" and again["public"] and "not sent again" in again["reason"], again
    assert standin.calls.count("CreateSubmission") == 1
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["status"] == "COMPLETE", row


@pytest.mark.parametrize("rerun", ["kit submit", "recipe"])
def test_a_cut_off_send_of_an_earlier_version_of_the_csv_is_found_and_recorded(kaggle_env, standin, sub, tiny_data,
                                                                                tiny_answers, capsys, rerun):
    """Probe 46: a send killed after Kaggle accepted it, then the CSV changed (a new vote) before the
    re-run: only the note lines of the bytes there now were looked up, so the accepted submission got
    no ledger row and a day's slot was spent unseen. An earlier version found in the list is recorded
    (its own sha256, the file its bytes are kept in); one that never arrived is said, once."""
    from datetime import datetime, timedelta, timezone

    from kit.fsio import sha256_file
    from kit.kaggle import recipe_submit
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    from conftest import write_submission

    ledger, where, old = sub.parent / "ledger.csv", target(standin.url), sha256_file(sub)
    described = tagged("test run")
    note_sending(sub, old, ledger, now(), COMP, where, described)
    made = call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)         # Kaggle took it; the answer was lost
    kept = sub.with_name(sub.name + ".old-20261207-000000")                    # as `kit ensemble` keeps it
    sub.rename(kept)
    sub.with_suffix(".json").rename(kept.with_name("sub.json.old-20261207-000000"))
    write_submission(sub.parent, tiny_answers, tiny_data, "sub", wrong_every=3)           # the new vote
    lines: list[str] = []
    if rerun == "kit submit":
        code, _, err = kit(capsys, *submit_args(sub, standin))
        assert code == 0, err
        lines = err.splitlines()
    else:
        result = recipe_submit(sub, "a re-run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url,
                               log=lines.append)
        assert result["status"] == "COMPLETE" and result["ref"] != str(made["ref"]), result
    assert any("an earlier version" in line and f"reached Kaggle: ref {made['ref']}" in line for line in lines), lines
    rows = read_ledger(ledger).to_dict("records")
    assert sorted((r["ref"], r["sha256"]) for r in rows) == sorted(
        [(str(made["ref"]), old), (str(standin.submissions[-1]["ref"]), sha256_file(sub))])
    assert [r["file"] for r in rows if r["sha256"] == old] == [str(kept)]
    assert len(standin.submissions) == 2                                      # the new bytes, sent once

    # an earlier version that never arrived (noted an hour ago): said, noted answered, not looked for again
    hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    note_sending(sub, sha256_file(sub), ledger, hour_ago, COMP, where, tagged("lost"))
    for wrong_every, said_never in ((5, 1), (6, 0)):
        write_submission(sub.parent, tiny_answers, tiny_data, "sub", wrong_every=wrong_every)
        said: list[str] = []
        recipe_submit(sub, "again", tiny_data, submissions_dir=sub.parent, endpoint=standin.url, log=said.append)
        assert sum("it never arrived" in line for line in said) == said_never, said
    assert len(standin.submissions) == 4


@pytest.mark.parametrize("rerun", ["kit submit", "recipe"])
def test_a_ledger_row_deleted_by_hand_is_put_back_from_the_note_and_not_sent_again(kaggle_env, standin, sub, tiny_data,
                                                                                   capsys, rerun):
    """Probe 47: with its ledger row deleted (a spreadsheet edit), a recipe re-run sent the same bytes again,
    and `kit submit` did not say that sending them again spends another of the day's submissions, though
    the note beside the CSV had the send and its ref."""
    from kit.kaggle import recipe_submit
    from kit.kaggle.notes import noted_sends

    ledger = sub.parent / "ledger.csv"
    assert kit(capsys, *submit_args(sub, standin))[0] == 0
    [row] = read_ledger(ledger).to_dict("records")
    header = ledger.read_text().splitlines()[0]
    ledger.write_text(header + "\n")                                      # the row deleted by hand
    assert any(n["ref"] == row["ref"] for n in noted_sends(sub))
    if rerun == "kit submit":
        code, _, err = kit(capsys, *submit_args(sub, standin))
        assert code == 0 and f"submission {row['ref']} of {sub}" in err and "put back" in err, err
        assert "spends another" in err and len(standin.submissions) == 2     # sent, as asked, and said
    else:
        lines: list[str] = []
        again = recipe_submit(sub, "a re-run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url,
                              log=lines.append)
        assert "already submitted" in again["reason"] and len(standin.submissions) == 1, again
        assert any("put back" in line for line in lines), lines
    rows = read_ledger(ledger).to_dict("records")
    back = [r for r in rows if r["ref"] == row["ref"]]
    assert len(back) == 1 and back[0]["sha256"] == row["sha256"] and back[0]["message"] == "test run"
    assert back[0]["status"] in ("PENDING", "COMPLETE")                  # the recipe waits for its score


@pytest.mark.parametrize("rerun", ["kit submit", "recipe"])
def test_a_send_recorded_in_another_folders_ledger_counts(kaggle_env, standin, sub, tiny_data, tmp_path, capsys,
                                                          monkeypatch, rerun):
    """Probe 47: run from another working folder (another submissions/ledger.csv), a recipe re-run sent the
    same bytes again, and `kit submit` did not say it spends another, though the note beside the CSV names
    the ledger that has the send."""
    from kit.kaggle import recipe_submit

    assert kit(capsys, *submit_args(sub, standin))[0] == 0          # recorded in sub's folder's ledger
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    if rerun == "kit submit":
        code, _, err = kit(capsys, "submit", sub, "-m", "again", "--endpoint", standin.url)
        assert code == 0 and "spends another" in err and f"recorded in {(sub.parent / 'ledger.csv').resolve()}" in err
        assert len(standin.submissions) == 2                                     # sent, as asked, and said
    else:
        again = recipe_submit(sub, "a re-run", tiny_data, submissions_dir=elsewhere / "submissions",
                              endpoint=standin.url)
        assert "already submitted" in again["reason"] and "recorded in" in again["reason"], again
        assert len(standin.submissions) == 1


def test_kit_scores_records_a_send_cut_off_before_its_answer_even_with_its_csv_gone(kaggle_env, standin, sub, capsys):
    """Probe 47: a send killed after Kaggle accepted it became a ledger row only when that same CSV was
    sent again; `kit scores` showed no trace of it, and with the CSV deleted it was never recorded."""
    from kit.fsio import sha256_file
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    ledger, described, digest = sub.parent / "ledger.csv", tagged("test run"), sha256_file(sub)
    note_sending(sub, digest, ledger, now(), COMP, target(standin.url), described)
    made = call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)         # Kaggle took it; the answer was lost
    sub.unlink()                                                               # and the CSV is gone since
    assert not ledger.exists()                                                 # the first send: no ledger yet
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and f"reached Kaggle: ref {made['ref']}" in err, err
    [row] = read_ledger(ledger).to_dict("records")
    assert (row["ref"], row["sha256"], row["message"]) == (str(made["ref"]), digest, "test run")
    assert "test run" in out and len(standin.submissions) == 1
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)   # settled: said once
    assert code == 0 and "reached Kaggle" not in err and len(read_ledger(ledger)) == 1


def test_kit_scores_leaves_a_send_noted_with_another_ledger_to_that_ledger(kaggle_env, standin, sub, tmp_path, capsys):
    """Probe 48: `kit scores` took a send still in flight with another ledger (whose lock it does not
    hold) for one cut off, and recorded it in its own ledger, so the ref sat in two."""
    from kit.fsio import sha256_file
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    ours, theirs, described = sub.parent / "ledger.csv", tmp_path / "mine" / "ledger.csv", tagged("test run")
    theirs.parent.mkdir()
    note_sending(sub, sha256_file(sub), theirs, now(), COMP, target(standin.url), described)
    made = call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)
    code, _, err = kit(capsys, "scores", "--ledger", ours, "--endpoint", standin.url)
    assert code == 0 and "reached Kaggle" not in err and not ours.exists(), err
    assert [str(s["ref"]) for s in standin.submissions] == [str(made["ref"])]


def test_kit_scores_records_a_cut_off_send_of_a_csv_outside_the_ledgers_folder(kaggle_env, standin, sub, tmp_path,
                                                                                monkeypatch, capsys):
    """Probe 48 F1: `kit submit ../csvs/x.csv --ledger submissions/ledger.csv` killed after Kaggle accepted
    it: `kit scores` looked for notes only in the ledger's folder, so the accepted submission was in no
    row until that CSV was sent again. The ledger's index of sent CSVs points it there."""
    import shutil

    from kit.kaggle import submissions
    from kit.kaggle.notes import indexed_csvs, sent_index

    elsewhere = tmp_path / "csvs"
    elsewhere.mkdir()
    for name in ("sub.csv", "sub.json"):
        shutil.copy(sub.parent / name, elsewhere / name)
    sub.unlink()

    def killed(*args, **kwargs):                # Kaggle took it; the process died before its row was written
        raise SystemExit(137)

    real = submissions._Recorder.add
    monkeypatch.setattr(submissions._Recorder, "add", killed)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        kit(capsys, "submit", "csvs/sub.csv", "-m", "test run", "--ledger", "submissions/ledger.csv",
            "--endpoint", standin.url)
    monkeypatch.setattr(submissions._Recorder, "add", real)
    monkeypatch.chdir(tmp_path / "submissions")           # `kit scores` run from the ledger's own folder
    [made] = standin.submissions
    index = sent_index("ledger.csv")
    assert indexed_csvs(index) == [elsewhere / "sub.csv"] and not (sub.parent / "ledger.csv").exists()
    code, out, err = kit(capsys, "scores", "--ledger", "ledger.csv", "--endpoint", standin.url)
    assert code == 0 and f"reached Kaggle: ref {made['ref']}" in err, err
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["ref"] == str(made["ref"]) and row["message"] == "test run", row
    code, _, err = kit(capsys, "scores", "--ledger", "ledger.csv", "--endpoint", standin.url)     # said once
    assert code == 0 and "reached Kaggle" not in err and len(read_ledger("ledger.csv")) == 1
    code, _, err = kit(capsys, "submit", elsewhere / "sub.csv", "-m", "again", "--ledger", "ledger.csv",
                       "--endpoint", standin.url)
    assert code == 0 and len(standin.submissions) == 2 and indexed_csvs(index) == [elsewhere / "sub.csv"], err


def test_a_recipes_vote_sent_from_another_working_folder_counts(kaggle_env, standin, sub, tiny_data, tiny_answers,
                                                                 tmp_path):
    """Probe 47 M2: a recipe re-run from another working folder writes its vote to another submissions/
    (a new CSV path, no note beside it), so the same bytes were sent again into a new ledger. The
    recipe's runs folder lists the CSVs its votes were sent as; their notes count."""
    import shutil

    from kit.kaggle import recipe_submit
    from kit.kaggle.rehearsal import VOTES_SENT

    from conftest import write_submission

    root = tmp_path / "runs" / "r"
    root.mkdir(parents=True)
    first = recipe_submit(sub, "kit recipe r", tiny_data, submissions_dir=sub.parent, endpoint=standin.url,
                          recipe_root=root)
    assert first["status"] == "COMPLETE" and (root / VOTES_SENT).read_text() == f"{sub.absolute()}\n", first
    other = tmp_path / "elsewhere" / "submissions"
    other.mkdir(parents=True)
    for name in ("sub.csv", "sub.json"):                    # the re-run's vote: the same bytes, a new path
        shutil.copy(sub.parent / name, other / name)
    again = recipe_submit(other / "sub.csv", "kit recipe r", tiny_data, submissions_dir=other, endpoint=standin.url,
                          recipe_root=root)
    assert "already submitted" in again["reason"] and str((sub.parent / "ledger.csv").resolve()) in again["reason"]
    assert again["ref"] == first["ref"] and len(standin.submissions) == 1, again
    write_submission(other, tiny_answers, tiny_data, "sub", wrong_every=3)            # another vote: sent
    third = recipe_submit(other / "sub.csv", "kit recipe r", tiny_data, submissions_dir=other, endpoint=standin.url,
                          recipe_root=root)
    assert third["status"] == "COMPLETE" and len(standin.submissions) == 2, third["reason"]
    (root / VOTES_SENT).unlink()
    (root / VOTES_SENT).mkdir()                             # probe 50: a record that cannot be read is said
    lines: list[str] = []
    recipe_submit(other / "sub.csv", "kit recipe r", tiny_data, submissions_dir=other, endpoint=standin.url,
                  recipe_root=root, log=lines.append)
    assert any(f"note: {root / VOTES_SENT} is not a file" in line for line in lines), lines
    assert any(f"could not add {(other / 'sub.csv').absolute()} to {root / VOTES_SENT}" in line for line in lines)


def test_an_index_of_sent_csvs_edited_by_hand_keeps_its_lines_and_says_what_it_skips(kaggle_env, standin, sub,
                                                                                      tmp_path, capsys):
    """Probe 50 F2: relative lines written by hand into a ledger's index of sent CSVs were skipped without a
    word and dropped when the index was next written; a damaged index made `kit scores` say nothing."""
    from kit.kaggle.notes import index_problem, index_sent, indexed_csvs, sent_index

    index = sent_index(sub.parent / "ledger.csv")
    index.write_bytes(b"../A/sub.csv\n\xff\xfe junk\n")
    code, _, err = kit(capsys, "submit", sub, "-m", "x", "--ledger", sub.parent / "ledger.csv",
                       "--endpoint", standin.url)
    assert code == 0 and len(standin.submissions) == 1, err
    assert index.read_bytes().splitlines() == [b"../A/sub.csv", b"\xff\xfe junk", bytes(sub.absolute())]
    assert indexed_csvs(index) == [sub.absolute()] and "2 line(s)" in index_problem(index)
    code, _, err = kit(capsys, "scores", "--ledger", sub.parent / "ledger.csv", "--endpoint", standin.url)
    assert code == 0 and f"note: 2 line(s) of {index} are not absolute paths" in err, err
    index.unlink()
    index.mkdir()
    code, _, err = kit(capsys, "scores", "--ledger", sub.parent / "ledger.csv", "--endpoint", standin.url)
    assert code == 0 and f"note: {index} is not a file" in err, err
    lines: list[str] = []
    index_sent(index, tmp_path / "x.csv", lines.append)
    assert index.is_dir() and len(lines) == 1 and f"could not add {tmp_path / 'x.csv'} to {index}" in lines[0]


def test_kit_scores_names_a_cut_off_send_to_another_server_and_how_to_look_it_up(kaggle_env, standin, sub, capsys):
    """Probe 48 F4: `kit scores --endpoint A` passed over a send to server B cut off before its answer
    without a word; it now says which command looks it up."""
    from kit.fsio import sha256_file
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    ledger, other = sub.parent / "ledger.csv", "http://127.0.0.1:9"
    note_sending(sub, sha256_file(sub), ledger, now(), COMP, target(other), tagged("test run"))
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    [line] = [ln for ln in err.splitlines() if "cut off" in ln]
    assert code == 0 and f"`kit scores --endpoint {other} --ledger {ledger}` looks it up" in line, err
    assert standin.calls.count("ListSubmissions") == 0                  # nothing asked of this server for it


def test_a_refused_csv_names_its_cut_off_send_and_how_to_record_it(kaggle_env, standin, sub, tiny_data,
                                                                   tiny_answers, capsys):
    """Probe 47 L2: the CSV edited after a send cut off before its answer, `kit submit` refused it (its
    manifest was written for other bytes) and said nothing of the send Kaggle may have accepted."""
    from kit.fsio import sha256_file
    from kit.kaggle.ledger import now
    from kit.submission import note_sending

    ledger, described = sub.parent / "ledger.csv", tagged("test run")
    note_sending(sub, sha256_file(sub), ledger, now(), COMP, target(standin.url), described)
    made = call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                           "timeout": 10.0, "poll": 0.1}, standin.url)
    manifest = sub.with_suffix(".json").read_text()
    write_submission(sub.parent, tiny_answers, tiny_data, "sub", wrong_every=3)            # edited by hand
    sub.with_suffix(".json").write_text(manifest[:-1] + f', "csv_sha256": "{"0" * 64}"}}')
    code, _, err = kit(capsys, *submit_args(sub, standin))
    line = one_error_line(err)
    assert code == 2 and "manifest" in line and "was cut off before its answer" in line, err
    assert f"`kit scores --endpoint {standin.url} --ledger {ledger}` looks it up" in line
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and list(read_ledger(ledger)["ref"]) == [str(made["ref"])], err


def test_a_cut_off_send_with_a_time_edited_by_hand_that_never_arrived_is_said_once(kaggle_env, standin, sub, capsys):
    """Probe 48 F5: a noted send whose time was edited by hand, not in the competition's list, was said
    "never arrived" on every `kit scores` (its lag could not be told, so it was never noted answered)."""
    from kit.fsio import sha256_file
    from kit.submission import note_sending

    ledger = sub.parent / "ledger.csv"
    note_sending(sub, sha256_file(sub), ledger, "07/12/2026 07:58", COMP, target(standin.url), tagged("test run"))
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and "it never arrived" in err, err
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and "never arrived" not in err and not standin.submissions, err


def test_a_message_that_is_not_utf8_is_refused_before_anything_is_sent(kaggle_env, standin, sub, capsys):
    """Probe 49 F1: `-m "$(printf 'msg\\xff')"` was sent, then writing the ledger row failed (a traceback,
    exit 1, no row, no pending file: a day's submission spent unrecorded)."""
    from kit.submission import submitted_note

    code, _, err = kit(capsys, "submit", sub, "-m", "msg\udcff", "--ledger", sub.parent / "ledger.csv",
                       "--endpoint", standin.url)
    line = one_error_line(err)
    assert code == 2 and "not UTF-8" in line and "nothing was sent" in line and "Traceback" not in err, err
    assert not standin.submissions and not submitted_note(sub).exists() and not (sub.parent / "ledger.csv").exists()


def test_names_and_notes_that_are_not_utf8_are_recorded_not_a_traceback(kaggle_env, standin, sub, tmp_path, capsys):
    """Probe 49 F1: a CSV in a folder whose name is not UTF-8 (a recipe's --runs, an ensemble's --name) was
    sent, then its ledger row could not be written; every `kit scores` then failed on the note beside it."""
    import shutil

    from kit.fsio import sha256_file
    from kit.kaggle.notes import index_sent, sent_index
    from kit.submission import note_sending

    odd = tmp_path / "r\udce9"                              # the bytes b"r\xe9": Latin-1, not UTF-8
    odd.mkdir()
    for name in ("sub.csv", "sub.json"):
        shutil.copy(sub.parent / name, odd / name)
    ledger = tmp_path / "ledger.csv"
    code, _, err = kit(capsys, "submit", odd / "sub.csv", "-m", "one", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and "Traceback" not in err, err
    [row] = read_ledger(ledger).to_dict("records")
    assert row["file"].endswith("r\ufffd/sub.csv") and row["ref"] == str(standin.submissions[0]["ref"]), row
    code, _, err = kit(capsys, "submit", odd / "sub.csv", "-m", "two", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and f"(these same bytes) was submitted at {row['time']}" in err, err     # probe 50 F4: not
    # "submitted as" a name of its own
    described = tagged("older kit \udcff")                  # a note an older kit wrote, its send cut off
    # (another second than the send above: the same bytes at the same time would be that send's row)
    note_sending(sub, sha256_file(sub), ledger, "2026-12-01T00:00:00Z", COMP, target(standin.url), described)
    call("submit", {"competition": COMP, "file": str(sub), "message": described, "wait": False,
                    "timeout": 10.0, "poll": 0.1}, standin.url)
    index_sent(sent_index(ledger), sub)                     # as the send noted it: its CSV sent with this ledger
    for _ in range(2):
        code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
        assert code == 0 and "Traceback" not in err, err
    assert sorted(read_ledger(ledger)["message"]) == ["older kit \ufffd", "one", "two"]


def test_a_ledger_in_a_folder_whose_name_is_not_utf8_records_its_sends(kaggle_env, standin, sub, tmp_path, capsys):
    """Probe 50 F1: a ledger in a folder named in another encoding (run from it, or --ledger) made `kit
    submit` and `kit scores` fail with a traceback (the pending file's name hashed the path as UTF-8)."""
    ledger = tmp_path / "h\udce9" / "ledger.csv"
    code, _, err = kit(capsys, "submit", sub, "-m", "one", "--ledger", ledger, "--endpoint", standin.url, "--wait")
    assert code == 0 and "Traceback" not in err, err
    [row] = read_ledger(ledger).to_dict("records")
    assert row["ref"] == str(standin.submissions[0]["ref"]) and row["status"] == "COMPLETE", row
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and "Traceback" not in err and row["ref"] not in err and "one" in out, err
