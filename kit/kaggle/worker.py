"""The worker: `python -m kit.kaggle.worker` reads one {"op", "params"} request on stdin, runs it
with the official `kaggle` client and answers in JSON lines on stdout (see kit.kaggle.client).

With kernel_ops (its kernel operations), the only module that imports `kaggle`/`kagglesdk`;
whatever they print goes to stderr.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

from kit.errors import KitError
from kit.kaggle.client import backoff, retries
from kit.kaggle.credentials import CREDENTIALS_HELP, kaggle_json, kaggle_json_problem
from kit.kaggle.kernel_ops import OPS as KERNEL_OPS
from kit.kaggle.retrying import retrying as _retrying


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


def _sub_dict(s) -> dict:
    return {"ref": s.ref, "status": s.status.name, "public": s.public_score or "", "private": s.private_score or "",
            "error": s.error_description or "", "description": s.description or "", "file": s.file_name or "",
            "date": s.date.isoformat() if s.date else ""}


def _list_submissions(client, competition: str, want: set | None, log, max_pages: int = 20) -> list[dict]:
    # optional: kagglesdk is imported only when talking to Kaggle
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    subs: dict[int, dict] = {}
    token = ""
    for _ in range(max_pages):
        request = ApiListSubmissionsRequest()
        request.competition_name = competition
        request.page_size = 50
        request.page_token = token
        if not token:
            request.page = 1
        response = _retrying("ListSubmissions", functools.partial(client.list_submissions, request), log)
        fresh = [s for s in response.submissions if s.ref not in subs]
        subs.update((s.ref, _sub_dict(s)) for s in fresh)
        token = response.next_page_token
        if not fresh or not token or (want and want <= set(subs)):
            break
    return list(subs.values())


def _op_submit(api, p: dict, log, emit) -> dict:
    # optional: kaggle and kagglesdk are imported only when talking to Kaggle
    from kaggle.models.kaggle_models_extended import ResumableUploadResult
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
            # The client reports a failed PUT only as a result code (its CLI then exits 0).
            if api.upload_complete(path, upload.create_url, quiet=True) == ResumableUploadResult.COMPLETE:
                break
            if attempt == attempts:
                raise KitError(f"upload of {os.path.basename(path)} failed {attempts + 1} times "
                               f"(the upload URL refused the file)")
            log(f"upload of {os.path.basename(path)} failed; retry {attempt + 1}/{attempts}")
            time.sleep(backoff() * 2 ** attempt)
        create = ApiCreateSubmissionRequest()
        create.competition_name = p["competition"]
        create.blob_file_tokens = upload.token
        create.submission_description = p["message"]
        response = _retrying("CreateSubmission", lambda: client.create_submission(create), log)
        ref = response.ref
        if not ref:   # older servers answer without a ref: find it by description and file name
            for sub in _list_submissions(client, p["competition"], None, log, max_pages=1):
                if sub["description"] == p["message"] and sub["file"] == start.file_name:
                    ref = sub["ref"]
                    break
        if not ref:
            raise KitError(f"Kaggle did not confirm the submission ({response.message or 'no reference returned'})")
    emit({"event": {"kind": "submitted", "ref": ref, "message": response.message}})
    if not p.get("wait"):
        return {"ref": ref, "message": response.message}
    return _op_wait(api, dict(p, ref=ref), log, emit)


def _op_wait(api, p: dict, log, emit=None) -> dict:
    deadline = time.monotonic() + float(p["timeout"])
    poll = float(p["poll"])
    with api.build_kaggle_client() as kaggle:
        client = kaggle.competitions.competition_api_client
        polls = 0
        while True:
            subs = _list_submissions(client, p["competition"], {p["ref"]}, log)
            sub = next((s for s in subs if s["ref"] == p["ref"]), None)
            if sub is None:
                raise KitError(f"submission {p['ref']} is not in {p['competition']}'s submission list")
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
        return {"submissions": _list_submissions(client, p["competition"], set(p.get("refs") or []), log)}


def _op_download(api, p: dict, log, emit=None) -> dict:
    _retrying("DownloadDataFiles", lambda: api.competition_download_files(p["competition"], p["path"],
                                                                                  quiet=True), log)
    # The client names the file <competition>.<extension of the redirect URL>; normally .zip.
    found = sorted((f for f in Path(p["path"]).glob(f"{p['competition']}.*") if "partial" not in f.name),
                   key=lambda f: (f.suffix == ".zip", f.stat().st_mtime))
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
