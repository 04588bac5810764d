"""The worker: `python -m kit.kaggle.worker` reads one {"op", "params"} request on stdin, runs it
with the official `kaggle` client and answers in JSON lines on stdout (see kit.kaggle.client).

With kernel_ops (its kernel operations) and sdk_reading (its readers), the only modules that import
`kaggle`/`kagglesdk`; whatever they print goes to stderr.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import requests

from kit.errors import KitError
from kit.kaggle.client import MAYBE_MADE, RETRY_STATUSES, backoff, is_tagged, may_be_cut_short, retries, same_send
from kit.kaggle.credentials import CREDENTIALS_HELP, kaggle_json, kaggle_json_problem
from kit.kaggle.kernel_ops import OPS as KERNEL_OPS
from kit.kaggle.retrying import RetriesSpent, http_message, retry_after, server_says
from kit.kaggle.retrying import retrying as _retrying
from kit.kaggle.sdk_reading import HTTP_TIMEOUT, read_as_kaggle_might_send


def config_dir_ready() -> None:
    """Create the client's config dir where it will look for it, tolerating that it exists. The
    client creates it on import with a check-then-create, so two workers starting at once (two
    `kit submit`s on a fresh machine) could race and one fail with FileExistsError."""
    folder = kaggle_json(os.environ).parent
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        pass                    # unwritable: the client's own import reports it


def _api(log):
    """The authenticated KaggleApi; importing kaggle already tried once and printed any help to stderr.
    A kaggle.json the client cannot use is named first: the client would say only that no
    credentials were found, or fail with a TypeError."""
    problem = kaggle_json_problem(os.environ)
    if problem:
        raise KitError(problem)
    config_dir_ready()
    from kaggle import api  # kaggle authenticates and prints on import: only here, after the redirect in main

    try:
        _retrying("authentication", api.authenticate, log)
    except SystemExit:
        problem = kaggle_json_problem(os.environ, need_key=True)
        raise KitError(f"{problem} (and no other Kaggle credentials were found)" if problem
                       else CREDENTIALS_HELP) from None
    return api


def _score(value) -> str:
    """A score as the ledger writes it: '' while there is none (PENDING, or a private score Kaggle hides
    until the competition ends); a score of 0 is a score."""
    return "" if value is None or value == "" else str(value)


def _sub_dict(s) -> dict:
    # the fields as sent: kagglesdk's getters answer '' for a score of 0 sent as a JSON number
    public, private = (getattr(s, f"_{name}_score", None) for name in ("public", "private"))
    return {"ref": _ref(s.ref), "status": s.status.name, "public": _score(public), "private": _score(private),
            "error": s.error_description or "", "description": s.description or "", "file": s.file_name or "",
            "date": s.date.isoformat() if s.date else "", "bytes": s.total_bytes,
            "by": getattr(s, "submitted_by_ref", "") or ""}    # the user name (submitted_by: a display name)


def _list_submissions(client, competition: str, want: set | None, log, max_pages: int = 20) -> list[dict]:
    # optional: kagglesdk is imported only when talking to Kaggle
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    subs: dict[str, dict] = {}
    token, page = "", 1
    for _ in range(max_pages):
        request = ApiListSubmissionsRequest()
        request.competition_name = competition
        request.page_size = 50
        request.page_token = token
        if not token:           # the first page, or a server that pages by number (no token given back)
            request.page = page
        response = _retrying("ListSubmissions", functools.partial(client.list_submissions, request), log)
        fresh = [s for s in response.submissions if str(s.ref) not in subs]
        subs.update((str(s.ref), _sub_dict(s)) for s in fresh)
        token, page = response.next_page_token or "", page + 1
        if not fresh or (want and {str(w) for w in want} <= set(subs)):
            break
    return list(subs.values())


def _op_submit(api, p: dict, log, emit) -> dict:
    # optional: kaggle and kagglesdk are imported only when talking to Kaggle
    from kagglesdk.competitions.types.competition_api_service import (
        ApiCreateSubmissionRequest,
        ApiStartSubmissionUploadRequest,
    )

    path = p["file"]
    with api.build_kaggle_client() as kaggle:
        client = kaggle.competitions.competition_api_client
        start = ApiStartSubmissionUploadRequest()
        start.competition_name = p["competition"]
        start.file_name = os.path.basename(path)
        start.content_length = os.path.getsize(path)
        start.last_modified_epoch_seconds = int(os.path.getmtime(path))
        attempts = retries()
        for attempt in range(attempts + 1):
            upload = _retrying("StartSubmissionUpload", lambda: client.start_submission_upload(start), log)
            failed = _put(path, upload.create_url)
            if not failed:
                break
            if attempt == attempts:
                raise KitError(f"upload of {os.path.basename(path)} failed {attempts + 1} times ({failed})")
            log(f"upload of {os.path.basename(path)} failed ({failed}); retry {attempt + 1}/{attempts}")
            time.sleep(backoff() * 2 ** attempt)
        create = ApiCreateSubmissionRequest()
        create.competition_name = p["competition"]
        create.blob_file_tokens = upload.token
        create.submission_description = p["message"]
        try:
            before: set | None = {s["ref"] for s in _list_submissions(client, p["competition"], None, log)} | \
                set(p.get("known") or [])      # the ledger's refs too: a list may lag a send made just before
        except Exception as e:  # the list is down: the submission goes on; a lost answer is then not retried
            log(f"{e}; submitting without a list to look a lost answer up in")
            before = None
        user = api.get_config_value(api.CONFIG_NAME_USER) or ""
        ref, message = _create(client, create, start.file_name, before, log, user)
    emit({"event": {"kind": "submitted", "ref": ref, "message": message}})
    if not p.get("wait"):
        return {"ref": ref, "message": message}
    return _op_wait(api, dict(p, ref=ref), log, emit)


def _put(path: str, url: str) -> str:
    """PUT the file to the upload URL as the client's upload_complete does (one request from the start),
    but once, bounded, and saying why it failed ('' when stored): the client's own retries (ten, their
    waits growing to two minutes) sat several minutes a try without a word (probe 35)."""
    try:
        with open(path, "rb") as fp:
            response = requests.put(url, data=fp, timeout=HTTP_TIMEOUT)
    except requests.RequestException as e:
        return f"{type(e).__name__}: the connection failed or dropped"
    return "" if response.status_code in (200, 201, 204) else f"HTTP {response.status_code}"


def _create(client, create, file_name: str, before: set | None, log, user: str = "") -> tuple[str, str]:
    """CreateSubmission, which is not idempotent: an answer lost (a 5xx, a dropped connection, a body cut
    off or not JSON) may come after Kaggle made the submission, so before any retry the list is read
    for a new one (a ref not among `before`, the list read just before) of this send's id; the one
    found is the answer. An answer without a ref is found the same way (never an older submission of
    that message). When kit cannot tell (no `before`, two candidates, the list unreadable, a refusal
    after an answer lost), nothing is sent again and the error says MAYBE_MADE: a re-run looks it up
    first (kit.kaggle.notes.interrupted_send). A 429 is retried (nothing was made), unless it says
    the day's submissions are spent. Returns (ref, Kaggle's message)."""
    attempts, lost = retries(), ""
    for attempt in range(attempts + 1):
        try:
            response = client.create_submission(create)
        except Exception as e:      # requests' errors, and an answer cut off or not JSON (the client's own)
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status is not None and (status not in RETRY_STATUSES
                                       or status == 429 and (_daily_limit(e) or attempt == attempts)):
                raise KitError(_refused(status, e, attempt, lost)) from None
            if status != 429:
                lost = f"HTTP {status}" if status else f"{type(e).__name__}"
                made = _made(client, create, file_name, before, log, lost, user=user)
                if made:
                    log(f"CreateSubmission: the answer was lost ({lost}), but the submission was made: "
                        f"ref {made['ref']}")
                    return made["ref"], "made (the answer was lost)"
                if attempt == attempts:
                    raise KitError(f"CreateSubmission failed {attempts + 1} times ({lost}); no new submission of "
                                   "it is in the competition's list") from None
            delay = (retry_after(getattr(e, "response", None)) if status == 429 else None) or backoff() * 2 ** attempt
            says = server_says(getattr(e, "response", None))
            what = f"Kaggle answered HTTP {status} to CreateSubmission" if status else f"CreateSubmission: {lost}"
            log(f"{what}{f' ({says})' if says else ''}; retry {attempt + 1}/{attempts} in {delay:.2g}s")
            time.sleep(delay)
            continue
        ref = _ref(response.ref)
        made = {"ref": ref} if ref else _made(client, create, file_name, before, log, "no ref in the answer",
                                              user=user)
        if not made:
            raise KitError(f"Kaggle did not confirm the submission ({response.message or 'no reference returned'}), "
                           "and no new submission of it is in the competition's list")
        return made["ref"], response.message or ""
    raise AssertionError("unreachable")


def _refused(status: int, e, attempt: int, lost: str) -> str:
    """The line for a refused CreateSubmission: after an answer lost, the first try may have been made
    (probe 38: a 429 after a 502 was recorded "nothing was made", and the made submission never looked up)."""
    refused = http_message("CreateSubmission", status, e, attempt)
    if lost:
        return f"{refused} after an answer lost ({lost}): {MAYBE_MADE}; look at the competition's submissions"
    return refused + ("; nothing was made" if status == 429 else "")


_SPENT = ("allowance", "per day", "daily", "today")


def _daily_limit(e) -> bool:
    """Whether a refusal says the day's submissions are spent (Kaggle: "...used its daily Submission
    allowance..."; others: "maximum number of submissions for today"), whatever its HTTP status: a
    429 saying so is not retried."""
    says = server_says(getattr(e, "response", None)).lower()
    return "allowance" in says or (any(w in says for w in _SPENT)
                                   and any(w in says for w in ("limit", "maximum", "max ")))


def _made(client, create, file_name: str, before: set | None, log, lost: str, looks: int = 6,
          user: str = "") -> dict | None:
    """The submission this CreateSubmission made, if the list shows it: new since `before`, of its
    send's id (kit.kaggle.client.tagged) and file name (a server may leave the name out); looked for
    `looks` times, the backoff doubling (a list may lag the create: about a minute at the default
    backoff), every page read (a list may be oldest first). None when none is there; KitError
    (MAYBE_MADE) when kit cannot tell: no `before` (the list was down), two new ones (an older kit's
    untagged message sent twice at once), the list unreadable."""
    def unsure(why: str) -> KitError:
        return KitError(f"CreateSubmission's answer was lost ({lost}) and {why}: {MAYBE_MADE}; look at the "
                        "competition's submissions before sending it again")

    if before is None:
        raise unsure("the list could not be read before it")
    for look in range(looks):
        if look:
            time.sleep(backoff() * 2 ** (look - 1))
        try:
            subs = _list_submissions(client, create.competition_name, None, log)
        except Exception as e:
            raise unsure(f"the list cannot tell ({e})") from None
        sent, fresh = create.submission_description, [s for s in subs if s["ref"] and s["ref"] not in before]
        # its id says it is ours, whatever file name a server lists (probe 35: a renamed file was sent again)
        new = [s for s in fresh if same_send(sent, s["description"])
               and (is_tagged(sent) or s["file"] in ("", file_name))]
        if len(new) > 1:
            raise unsure(f"{len(new)} new submissions of that message are listed (refs "
                         f"{', '.join(str(s['ref']) for s in new)})")
        if new:
            return new[0]
        if cut := [s for s in fresh if may_be_cut_short(sent, s, file_name, user)]:
            raise unsure(f"a new submission of that file is listed whose description could be this one's cut "
                         f"short (ref {cut[0]['ref']}: {cut[0]['description']!r})")
    return None


def _ref(value) -> str:
    """A submission ref as the ledger writes it: digits (a server may send 500001.0 or "500001"); ''
    for one that is no submission number (none, "abc", -5): never recorded, never matched."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return str(int(number)) if number.is_integer() and number > 0 else ""


UNLISTED_GRACE = 60.0       # seconds a new ref may be missing from the list before the wait gives up


def _op_wait(api, p: dict, log, emit=None) -> dict:
    deadline = time.monotonic() + float(p["timeout"])
    poll = float(p["poll"])
    with api.build_kaggle_client() as kaggle:
        client = kaggle.competitions.competition_api_client
        polls, began = 0, time.monotonic()
        pending = {"ref": p["ref"], "status": "PENDING", "public": "", "private": "", "error": ""}
        while True:
            try:
                subs = _list_submissions(client, p["competition"], {p["ref"]}, log)
            except RetriesSpent as e:   # an outage longer than the retries (5xx, no connection): waited out
                if deadline - time.monotonic() <= 0:
                    raise
                log(f"{e}; still waiting for submission {p['ref']}")
                subs = [pending]
            sub = next((s for s in subs if str(s["ref"]) == str(p["ref"])), None)
            if sub is None and time.monotonic() - began > UNLISTED_GRACE:
                raise KitError(f"submission {p['ref']} is not in {p['competition']}'s submission list")
            sub = sub or pending        # a list may lag the create: as PENDING, for a while
            if sub["status"] != "PENDING":
                return sub
            left = deadline - time.monotonic()
            if left <= 0:
                return dict(sub, timed_out=True)
            polls += 1
            if polls == 1 or polls % 6 == 0:
                log(f"submission {p['ref']} is PENDING; polling every {poll:g}s")
            time.sleep(min(poll, left))         # a poll longer than the time left: one last look at the end


def _op_list(api, p: dict, log, emit=None) -> dict:
    with api.build_kaggle_client() as kaggle:
        client = kaggle.competitions.competition_api_client
        want = set(p.get("refs") or [])     # refs asked about: read until all are seen (or 100 pages)
        return {"submissions": _list_submissions(client, p["competition"], want, log, 100 if want else 20)}


def _op_download(api, p: dict, log, emit=None) -> dict:
    _retrying("DownloadDataFiles", lambda: api.competition_download_files(p["competition"], p["path"],
                                                                                  quiet=True), log)
    # The client names the file <competition>.<extension of the redirect URL>; normally .zip. A URL
    # without one (`.../dl?name=x`) makes it a path of folders below <competition>.<host...>/: the file
    # at its end is taken, as <competition>.zip.
    saved = [f for f in Path(p["path"]).glob(f"{p['competition']}.*") if "partial" not in f.name]
    found = sorted((f for f in saved if f.is_file()), key=lambda f: (f.suffix == ".zip", f.stat().st_mtime))
    nested = [(d, f) for d in saved if d.is_dir() for f in d.rglob("*") if f.is_file() and "partial" not in f.name]
    if not found and nested:
        top, newest = max(nested, key=lambda pair: pair[1].stat().st_mtime)
        found = [Path(p["path"]) / f"{p['competition']}.zip"]
        os.replace(newest, found[0])
        if not any(f.is_file() for f in top.rglob("*")):      # only the folders the client made for it
            shutil.rmtree(top, ignore_errors=True)
    if not found:
        raise KitError(f"DownloadDataFiles: the client saved no {p['competition']}.* file in {p['path']}")
    return {"zip": str(found[-1])}


_OPS = {"submit": _op_submit, "wait": _op_wait, "list": _op_list, "download": _op_download}


def main() -> int:
    """Read {"op", "params"} from stdin; JSON lines on stdout: {"log"}..., then {"result"} or {"error"}."""
    request = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)               # whatever the client prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        read_as_kaggle_might_send()
        api = _api(lambda line: emit({"log": line}))
        op = {**_OPS, **KERNEL_OPS}[request["op"]]
        emit({"result": op(api, request["params"], lambda line: emit({"log": line}), emit)})
    except KitError as e:
        emit({"error": str(e)})
    except Exception as e:  # the client raises many types; report one line, not a traceback
        emit({"error": f"{request['op']}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
