"""The worker's kernel operations (run in `python -m kit.kaggle.worker`, see kit.kaggle.client):
GPU quota, push a kernel, wait for kernels to end, pull a kernel's output. Every request goes
through the worker's retries (429/5xx, dropped connections).
"""
from __future__ import annotations

import fnmatch
import functools
import os
import time
from pathlib import Path

import requests

from kit.errors import KitError
from kit.fsio import atomic_path
from kit.kaggle.client import RETRY_STATUSES, backoff
from kit.kaggle.retrying import retrying as _retrying

# KernelWorkerStatus names that end a session (a cancel asked for ends it: nothing more will come of it)
ENDED = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED")
RUNNING = ("QUEUED", "RUNNING", "NEW_SCRIPT")      # the others: a status kit does not know ends the wait too
PAGE_SIZE = 100
HEARTBEAT = 1800.0     # seconds between "still waiting" lines while kernels run
GONE_GRACE = 120.0      # seconds a kernel this command pushed may be unknown to Kaggle before it counts as gone


def _hours(delta) -> float:
    return delta.total_seconds() / 3600 if delta is not None else 0.0


def _op_quota(api, p: dict, log, emit=None) -> dict:
    """The account (owner of the kernels to push) and its weekly GPU quota, as `kaggle quota` shows it
    (KaggleApi.quota_view: KernelsApiService/GetAcceleratorQuotaStatistics)."""
    user = api.get_config_value(api.CONFIG_NAME_USER)
    if not user:
        raise KitError("the Kaggle credentials name no user (kernels are pushed as owner/slug): set "
                       "KAGGLE_USERNAME, or use kaggle.json with its username")
    response = _retrying("GetAcceleratorQuotaStatistics", api.quota_view, log)
    gpu = response.gpu_quota
    out = {"user": user, "known": gpu is not None and gpu.total_time_allowed is not None,
           "refresh": response.quota_refresh_time.isoformat() if response.quota_refresh_time else ""}
    if out["known"]:
        out.update(total=_hours(gpu.total_time_allowed), used=_hours(gpu.time_used),
                   reserved=_hours(gpu.time_reserved))
    return out


def _op_kernel_push(api, p: dict, log, emit=None) -> dict:
    """`kaggle kernels push` of the folder kit wrote; Kaggle's refusals become one line. SaveKernel is
    not idempotent: an answer lost (5xx, a dropped connection) may come after Kaggle made the version,
    so before a retry the kernel's status is asked: a session queued or running is that version
    (kit pushes only kernels that run nothing: KernelRun.check_free), and is not pushed twice
    (probe 37: a second GPU session, the first one unwatched)."""
    timeout = str(int(p["timeout"])) if p.get("timeout") else None

    def push():
        try:
            return api.kernels_push(p["folder"], timeout=timeout)
        except (requests.HTTPError, requests.ConnectionError, requests.Timeout) as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status == 429 or status not in (None, *RETRY_STATUSES):     # refused: nothing was made
                raise
            with api.build_kaggle_client() as kaggle:
                for look in range(3):               # a status may lag the push a moment
                    time.sleep(backoff() * 2 ** look)
                    now = _status(kaggle.kernels.kernels_api_client, p["ref"], log)[0]
                    if now in RUNNING:
                        log(f"SaveKernel's answer was lost ({f'HTTP {status}' if status else type(e).__name__}), "
                            f"but kernel {p['ref']} is {now}: that is this push")
                        return None
            raise

    response = _retrying("SaveKernel", push, log)
    if response is None:
        return {"ref": p["ref"], "url": "", "version": None}
    if response.error:
        raise KitError(f"Kaggle refused kernel {p['ref']}: {response.error}")
    if response.invalid_competition_sources:
        raise KitError(f"kernel {p['ref']}: Kaggle did not attach the competition "
                       f"{', '.join(response.invalid_competition_sources)}: join it and accept its rules on its page")
    if response.invalid_kernel_sources:
        log(f"kernel {p['ref']}: its earlier output could not be attached "
            f"({', '.join(response.invalid_kernel_sources)}); its members start over there (local run dirs are kept)")
    return {"ref": response.ref, "url": response.url, "version": response.version_number}


def _not_found_is(fn, message: str):
    """fn, with an HTTP 404 answered as a KitError saying `message` (the worker's own 404 line speaks
    of competitions)."""
    def call():
        try:
            return fn()
        except requests.HTTPError as e:
            if e.response is not None and e.response.status_code == 404:
                raise KitError(message) from None
            raise

    return call


def _status(client, ref: str, log) -> tuple[str, str]:
    """(status name, failure message) of a kernel's latest session; ("GONE", ...) when Kaggle does not
    know it (deleted, or a stand-in that was restarted)."""
    # optional: kagglesdk is imported only in the worker, when talking to Kaggle
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

    request = ApiGetKernelSessionStatusRequest()
    request.user_name, request.kernel_slug = ref.split("/")
    gone = f"Kaggle does not know kernel {ref} (HTTP 404)"
    try:
        response = _retrying("GetKernelSessionStatus",
                             _not_found_is(lambda: client.get_kernel_session_status(request), gone), log)
    except KitError as e:
        if str(e) != gone:
            raise
        return "GONE", gone
    status = getattr(response.status, "name", str(response.status)).upper()
    return status.rsplit(".", 1)[-1], response.failure_message or ""    # "KernelWorkerStatus.COMPLETE" too


def _op_kernels_status(api, p: dict, log, emit=None) -> dict:
    """{ref: status} of each kernel's latest session now (GONE: Kaggle does not know it)."""
    with api.build_kaggle_client() as kaggle:
        client = kaggle.kernels.kernels_api_client
        return {"status": {ref: _status(client, ref, log)[0] for ref in p["refs"]}}


def _op_kernels_wait(api, p: dict, log, emit) -> dict:
    """Poll the kernels' status every p["poll"] seconds until at least one has ended; each change of
    status is an event as it happens. Returns {"ended": {ref: {status, message}}} of those that ended,
    or, when none has after p["limit"] seconds (when given), {"ended": {}, "overdue": {ref: status}}."""
    seen: dict[str, str] = dict(p.get("seen") or {})        # what the caller already knows
    gone_since: dict[str, float] = {}
    began = said = time.time()
    with api.build_kaggle_client() as kaggle:
        client = kaggle.kernels.kernels_api_client
        while True:
            ended = {}
            for ref in p["refs"]:
                status, message = _status(client, ref, log)
                if status == "GONE" and ref in (p.get("pushed") or []):    # just pushed: an index that lags
                    if time.time() - gone_since.setdefault(ref, time.time()) < GONE_GRACE:
                        continue                    # (probe 37: one 404 pushed a new version from scratch)
                else:
                    gone_since.pop(ref, None)
                if seen.get(ref) != status:
                    seen[ref] = status
                    emit({"event": {"kind": "status", "ref": ref, "status": status, "message": message}})
                if status not in RUNNING:       # one kit does not know: said, and not waited on for ever
                    known = status in ENDED or status == "GONE"
                    ended[ref] = {"status": status, "message": message if known else
                                  f"a status kit does not know{': ' + message if message else ''}"}
            if ended:
                return {"ended": ended}
            if p.get("limit") and time.time() - began > float(p["limit"]):
                return {"ended": {}, "overdue": {ref: seen.get(ref, "?") for ref in p["refs"]}}
            if time.time() - said >= float(p.get("heartbeat") or HEARTBEAT):    # hours of polls, not a word
                said = time.time()
                log(f"still waiting ({(said - began) / 60:.0f} min): "
                    + ", ".join(f"{ref} {seen.get(ref, '?')}" for ref in p["refs"]))
            time.sleep(float(p["poll"]))


def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not name or os.path.isabs(name) or root.resolve() not in target.parents:
        raise KitError(f"kernel output file {name!r} would land outside {root}; refused")
    return target


def _safe_files(root: Path, files: list, log) -> list:
    """(file, target) of the output files that land inside root; one that would not is said and left
    out (probe 37: one such name threw the good files away, and a new version was pushed)."""
    safe = []
    for f in files:
        try:
            safe.append((f, _safe_target(root, f.file_name)))
        except KitError as e:
            log(str(e))
    return safe


def _fetch(url: str, target: Path, log) -> None:
    """GET one output file (checked: an error page is never saved as the file), written atomically."""
    def get():
        response = requests.get(url, stream=True, timeout=60)
        response.raise_for_status()
        if "text/html" in response.headers.get("Content-Type", "") and target.suffix not in (".html", ".htm"):
            raise KitError(f"kernel output file {target.name}: the server sent a web page instead (a sign-in "
                           "or error page?)")
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            for chunk in response.iter_content(1 << 20):
                f.write(chunk)

    _retrying(f"download of {target.name}", _not_found_is(get, f"kernel output file {target.name}: not found "
                                                                 "(HTTP 404)"), log)


def pulled(name: str, prefixes, skip) -> bool:
    """Whether a kernel's output file comes back: under one of `prefixes`, its file name matching
    none of the `skip` patterns (shell-style: ".*.tmp" is a killed save's temp file)."""
    return (any(name.startswith(prefix) for prefix in prefixes)
            and not any(fnmatch.fnmatchcase(Path(name).name, pattern) for pattern in skip))


def _op_kernel_output(api, p: dict, log, emit=None) -> dict:
    """The latest session's output files under p["prefixes"] into p["path"] (kept in their folders),
    and its log as p["path"]/kernel.log. Like `kaggle kernels output`, through ListKernelSessionOutput,
    but every page and file is retried and an HTTP error is never written as a file."""
    # optional: kagglesdk is imported only in the worker, when talking to Kaggle
    from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

    root = Path(p["path"])
    root.mkdir(parents=True, exist_ok=True)
    files, log_text, token, tokens = [], "", "", set()
    with api.build_kaggle_client() as kaggle:
        client = kaggle.kernels.kernels_api_client
        while True:
            request = ApiListKernelSessionOutputRequest()
            request.user_name, request.kernel_slug = p["ref"].split("/")
            request.page_size, request.page_token = PAGE_SIZE, token
            listing = functools.partial(client.list_kernel_session_output, request)
            response = _retrying("ListKernelSessionOutput",
                                 _not_found_is(listing, f"kernel {p['ref']}: not found (HTTP 404)"), log)
            files += list(response.files or [])
            log_text = log_text or response.log or ""
            token = response.next_page_token or ""
            if not token or token in tokens:        # a page again: a server whose list never ends (probe 37)
                break
            tokens.add(token)
    wanted = _safe_files(root, [f for f in files if pulled(f.file_name, p["prefixes"], p.get("skip", []))], log)
    for f, target in wanted:
        _fetch(f.url, target, log)
    (root / "kernel.log").write_text(log_text)
    return {"files": len(wanted), "listed": len(files)}


OPS = {"quota": _op_quota, "kernel_push": _op_kernel_push, "kernels_status": _op_kernels_status,
       "kernels_wait": _op_kernels_wait,
       "kernel_output": _op_kernel_output}
