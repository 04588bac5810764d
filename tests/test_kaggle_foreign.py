"""What a Kaggle-like server kit's authors did not write may do (probe 35): list a submission under another
file name, cut descriptions short, date submissions in epoch seconds, answer the day's limit as a 429,
drop the upload's connection, hide the private score; and a zip whose member's data is damaged."""
from __future__ import annotations

import zipfile

import pytest

from kit.kaggle import read_ledger
from kit.kaggle.client import MAYBE_MADE

from conftest import kit_cli as kit
from conftest import one_error_line, submit_args


def _listed_as(standin, **changes):
    """The stand-in keeps each submission as `changes` say (a server's own file name or description)."""
    real = standin.create_submission

    def create(token: str, description: str, user: str) -> dict:
        made = real(token, description, user)
        for key, change in changes.items():
            made[key] = change(made[key])
        return made

    standin.create_submission = create


def test_a_lost_answer_is_found_by_the_send_id_whatever_file_name_the_list_shows(kaggle_env, standin, sub, capsys):
    """The list showed the send (its own id) under another file name: kit sent it again."""
    from kit.kaggle.server_competitions import MADE

    _listed_as(standin, fileName=lambda name: "submission.csv")
    standin.inject(MADE, 503)                                       # made, then the answer lost
    code, out, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0, err
    assert standin.calls.count("CreateSubmission") == 1
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["ref"] == str(standin.submissions[0]["ref"]) and row["status"] == "COMPLETE", row


def test_a_server_that_cuts_descriptions_short_keeps_the_send_id(kaggle_env, standin, sub, capsys):
    """The id went last and a server keeping 30 characters cut it: the lost send was sent again."""
    from kit.kaggle.server_competitions import MADE

    _listed_as(standin, description=lambda text: text[:30])
    standin.inject(MADE, 503)
    code, _, err = kit(capsys, "submit", sub, "-m", "a message longer than the server keeps", "--ledger",
                       sub.parent / "ledger.csv", "--endpoint", standin.url, "--wait")
    assert code == 0, err
    assert standin.calls.count("CreateSubmission") == 1
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["ref"] == str(standin.submissions[0]["ref"]) and row["message"].startswith("a message longer"), row


def test_a_description_cut_before_the_id_is_not_sent_again(kaggle_env, standin, sub, capsys):
    """A server keeping 10 characters: nothing in the list says which send it is; a new one of that file
    whose description is the start of ours may be it, so kit does not send again (one line says so)."""
    from kit.kaggle.server_competitions import MADE

    _listed_as(standin, description=lambda text: text[:10])
    standin.inject(MADE, 503)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and MAYBE_MADE in one_error_line(err) and "cut short" in err, err
    assert standin.calls.count("CreateSubmission") == 1
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["status"] == "FAILED" and MAYBE_MADE in row["error"], row


def test_a_list_dated_in_epoch_seconds_still_gives_the_score(kaggle_env, standin, sub, capsys):
    real = standin.view
    standin.view = lambda made, poll: {**real(made, poll), "date": 1764979200}
    code, out, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0 and "COMPLETE public" in out, err
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["status"] == "COMPLETE" and row["public"] != "", row


def test_the_days_limit_answered_as_429_is_said_and_not_retried(kaggle_env, standin, sub, capsys):
    from kit.kaggle.server_competitions import DAILY_LIMIT, _ApiError

    def spent(token: str, description: str, user: str) -> dict:
        raise _ApiError(429, DAILY_LIMIT.format(5))

    standin.create_submission = spent
    code, _, err = kit(capsys, *submit_args(sub, standin))
    line = one_error_line(err)
    assert code == 2 and "daily submission allowance" in line and line.count("allowance") == 1, err
    assert standin.calls.count("CreateSubmission") == 1
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["status"] == "FAILED" and "allowance" in row["error"] and MAYBE_MADE not in row["error"], row


def test_a_reason_with_doubled_spaces_is_said_once(kaggle_env, standin, sub, capsys):
    from kit.kaggle.server_competitions import _ApiError

    def refused(token: str, description: str, user: str) -> dict:
        raise _ApiError(400, "Submission not allowed:  your file  has the wrong columns")

    standin.create_submission = refused
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 2 and one_error_line(err).count("wrong columns") == 1, err


def test_an_upload_refused_is_retried_by_kit_and_each_try_said(kaggle_env, standin, sub, capsys):
    """The client's own upload retried out of sight (ten tries, their waits growing to two minutes: half an
    hour without a word on a dropped connection); kit puts the file once a try and says why each failed."""
    from kit.kaggle.server import UPLOAD

    standin.inject(UPLOAD, 503, count=2, retry_after=0.1)
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 0, err
    assert "upload of sub.csv failed (HTTP 503); retry 1/" in err and "retry 2/" in err, err
    assert standin.calls.count(UPLOAD) == 3 and standin.calls.count("CreateSubmission") == 1


def test_a_hidden_private_score_is_said_so(kaggle_env, standin, sub, capsys):
    real = standin.view
    standin.view = lambda made, poll: {k: v for k, v in real(made, poll).items() if k != "privateScore"}
    code, out, err = kit(capsys, *submit_args(sub, standin, "--wait"))
    assert code == 0 and "private (hidden until the competition ends)" in out, out


def test_a_zip_whose_member_data_is_damaged_is_one_line(tmp_path):
    from kit.errors import KitError
    from kit.kaggle.downloads import extract_zip

    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Dataset/metadata.json", "{" + '"x": 1, ' * 5000 + '"y": 2}')
    raw = bytearray(path.read_bytes())
    start = 30 + len("Dataset/metadata.json")           # the member's data, after its local header
    raw[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(KitError, match="not a valid zip"):
        extract_zip(path, tmp_path / "out")


def _kernels_api(statuses: list):
    """A kagglesdk-like api whose kernel status answers `statuses` in turn (an exception is raised)."""
    import contextlib
    from types import SimpleNamespace

    class Client:
        def get_kernel_session_status(self, request):
            now = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            if isinstance(now, Exception):
                raise now
            return SimpleNamespace(status=now, failure_message="")

    kaggle = SimpleNamespace(kernels=SimpleNamespace(kernels_api_client=Client()))
    return SimpleNamespace(build_kaggle_client=lambda: contextlib.nullcontext(kaggle))


def test_a_kernel_just_pushed_that_kaggle_does_not_know_yet_is_waited_for(monkeypatch):
    """One 404 right after a push (an index that lags) was taken for a kernel gone, and kit pushed a new
    version from scratch: up to four GPU sessions a kernel. Also: a status sent with its enum's name, and
    a line now and then while kernels run for hours."""
    import requests

    from kit.kaggle import kernel_ops

    monkeypatch.setenv("KIT_KAGGLE_RETRIES", "0")
    missing = requests.Response()
    missing.status_code = 404
    lagging = requests.HTTPError("404", response=missing)
    logs: list[str] = []
    api = _kernels_api([lagging, "RUNNING", "RUNNING", "KernelWorkerStatus.COMPLETE"])
    ended = kernel_ops._op_kernels_wait(api, {"refs": ["me/k"], "poll": 0.02, "heartbeat": 0.01, "pushed": ["me/k"]},
                                        logs.append, lambda event: None)["ended"]
    assert ended == {"me/k": {"status": "COMPLETE", "message": ""}}, ended
    assert any(line.startswith("still waiting") and "me/k RUNNING" in line for line in logs), logs
    earlier = kernel_ops._op_kernels_wait(_kernels_api([lagging]), {"refs": ["me/k"], "poll": 0.02},
                                          logs.append, lambda event: None)["ended"]
    assert earlier["me/k"]["status"] == "GONE"             # one this command did not push: gone at once


def test_every_call_to_kaggle_has_a_timeout(monkeypatch):
    """kagglesdk sets none: a server that never answered held kit without a word until it was killed."""
    import socket

    import requests

    from kit.kaggle import sdk_reading

    monkeypatch.setattr(requests.Session, "send", requests.Session.send)       # put back after the test
    monkeypatch.setattr(sdk_reading, "HTTP_TIMEOUT", (0.5, 0.5))
    sdk_reading.bounded_requests()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        session = requests.Session()
        session.trust_env = False
        with pytest.raises(requests.Timeout):
            session.get(f"http://127.0.0.1:{silent.getsockname()[1]}/")


def test_a_429_after_a_lost_answer_says_it_may_have_been_made(kaggle_env, standin, sub, capsys, monkeypatch):
    """Probe 38: the first create made the submission and lost its answer; the list lagged; the retry got
    429: the row said "nothing was made", and neither `kit scores` nor a re-run ever looked it up."""
    from kit.kaggle.server_competitions import _ApiError

    monkeypatch.setenv("KIT_KAGGLE_RETRIES", "1")
    real = standin.create_submission

    def lost_then_busy(token: str, description: str, user: str) -> dict:
        if not standin.submissions:
            real(token, description, user)["description"] = "listed later"     # a list that lags
            raise _ApiError(502, "Bad Gateway")
        raise _ApiError(429, "Too Many Requests")

    standin.create_submission = lost_then_busy
    code, _, err = kit(capsys, *submit_args(sub, standin))
    line = one_error_line(err)
    assert code == 2 and MAYBE_MADE in line and "nothing was made" not in line, err
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert MAYBE_MADE in row["error"], row


def test_a_send_whose_description_the_server_dropped_is_not_sent_again_by_a_recipe(kaggle_env, standin, sub,
                                                                                      tiny_data, capsys):
    """Probe 38: the first run refused to send again (a new submission of that file, no description: maybe
    the send); a recipe's re-run took "its id is not listed" for "it never arrived" and sent it again."""
    from kit.kaggle import recipe_submit
    from kit.kaggle.server_competitions import MADE

    _listed_as(standin, description=lambda text: "")
    standin.inject(MADE, 503)
    assert kit(capsys, *submit_args(sub, standin))[0] == 2
    again = recipe_submit(sub, "a re-run", tiny_data, submissions_dir=sub.parent, endpoint=standin.url)
    assert again["status"] == "FAILED" and "not sent again" in again["reason"], again
    assert standin.calls.count("CreateSubmission") == 1


def test_a_teammates_submission_without_a_description_does_not_block_a_retry(kaggle_env, standin, sub, capsys):
    """Probe 38: a teammate's submission of the same file name and no description, listed after our lost
    answer, was taken for ours cut short: the retry was refused, and the row never settled."""
    from kit.kaggle.server_competitions import _ApiError

    real = standin.create_submission

    def lost_beside_a_teammates(token: str, description: str, user: str) -> dict:
        if not standin.submissions:
            with standin.lock:
                standin.uploads["theirs"] = dict(standin.uploads[token])
            real("theirs", "", "teammate")
            raise _ApiError(503, "Service Unavailable")             # ours: not made
        return real(token, description, user)

    standin.create_submission = lost_beside_a_teammates
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 0, err
    assert [s["submittedBy"] for s in standin.submissions] == ["teammate", "kit-test"]


def test_a_daily_limit_in_other_words_is_not_retried():
    import requests

    from kit.kaggle.worker import _daily_limit

    def refusal(text: str):
        response = requests.Response()
        response.status_code, response._content = 429, text.encode()
        return requests.HTTPError("429", response=response)

    assert _daily_limit(refusal("You have reached the maximum number of submissions for today"))
    assert _daily_limit(refusal('{"message": "Daily submission limit reached"}'))
    assert not _daily_limit(refusal("Too Many Requests"))


@pytest.mark.parametrize("status, failed", [(200, ""), (201, ""), (204, ""), (403, "HTTP 403"), (503, "HTTP 503")])
def test_an_upload_is_stored_on_any_success(tmp_path, monkeypatch, status, failed):
    import requests

    from kit.kaggle import worker

    answer = requests.Response()
    answer.status_code = status
    monkeypatch.setattr(worker.requests, "put", lambda url, data, timeout: answer)
    (tmp_path / "s.csv").write_text("Id,Category\n")
    assert worker._put(str(tmp_path / "s.csv"), "http://upload") == failed
