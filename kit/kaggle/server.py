"""A local stand-in for the part of Kaggle's competition API that the official client uses. It serves
one competition (a data dir, zipped like the real download) and scores uploads against an answer
key with Public/Private rows, so tests and offline rehearsals run the real `kaggle` client."""
from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import os
import secrets
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.fsio import temp_dir
from kit.kaggle import server_competitions, server_kernels
from kit.kaggle.server_competitions import DAILY_LIMIT, ZIP_FOLDER, CompetitionRpcs, _ApiError, made_today
from kit.kaggle.server_kernels import KERNEL_OUTPUT, Kernels
from kit.layout import SYNTH_MARKER
from kit.submission import score_submission

API_PREFIX = "/api/v1/"
RETRY_STATUSES = (429, 503)     # statuses that carry a Retry-After header
# Fault targets besides the RPC names (CreateSubmission, ListSubmissions, ...):
UPLOAD, DOWNLOAD = "upload", "download"   # the PUT to createUrl and the GET of the zip
INTROSPECT = "IntrospectToken"            # the client's check of a bearer token
# Every name a fault can target: a fault for any other would never fire.
FAULT_TARGETS = (*server_competitions.METHODS, server_competitions.MADE, *server_kernels.METHODS, INTROSPECT, UPLOAD,
                 DOWNLOAD, KERNEL_OUTPUT, "*")


@dataclass
class Fault:
    status: int
    count: int
    retry_after: float | None = None


class StandIn:
    """One competition on 127.0.0.1; `start()` serves it from a background thread.

    Fault injection for tests: `inject("CreateSubmission", 429, count=2, retry_after=1)` makes the
    next two calls of that method fail (method "*" matches any; "upload"/"download" the file
    transfers), or the same as `faults=[("CreateSubmission", 429, 2, 1)]`, or POST /_admin/inject;
    `score_errors(n)` scores the next n submissions ERROR; `pending_polls=k` keeps each submission
    PENDING for its first k ListSubmissions/GetSubmission answers.
    """

    def __init__(self, data_dir, answers, competition: str = DEFAULT_COMPETITION, host: str = "127.0.0.1",
                 port: int = 0, pending_polls: int = 0, key: str | None = None, faults=(), log=None,
                 kernel_slots: int = 2, gpu_used_hours: float = 0.0, kernel_timeout: float | None = None,
                 daily_limit: int | None = None):
        self.data_dir = Path(data_dir)
        self.answers = Path(answers)
        if not (self.data_dir / "metadata.json").is_file():
            raise FileNotFoundError(f"{self.data_dir}: not a competition data dir (no metadata.json)")
        if not self.answers.is_file():
            raise FileNotFoundError(f"{self.answers}: answer key not found")
        self.competition = competition
        self.pending_polls = pending_polls
        self.daily_limit = daily_limit      # submissions a UTC day, as Kaggle's five; None: no limit
        self.key = key                  # None: any credentials are accepted
        self.log = log or (lambda line: None)
        self.lock = threading.Lock()
        self.faults: dict[str, list[Fault]] = {}
        for fault in faults:                     # (method, status[, count[, retry_after]])
            self.inject(*fault)
        self.error_next: list[str] = []          # reasons for the next submissions scored ERROR
        self.submissions: list[dict] = []        # newest last
        # Refs from a random base, a million apart: a stand-in started again (on the same port) does not
        # hand out the refs an earlier one gave, so `kit scores` cannot score an old row with a new one.
        self.first_ref = 1000 + secrets.randbelow(1_000_000) * 1000
        self.uploads: dict[str, dict] = {}       # token -> {"file_name", "data"}
        self.calls: list[str] = []               # every method answered, for tests
        self._zip: Path | None = None
        self._server = _Server((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.standin = self
        self._thread: threading.Thread | None = None
        self._tmp = temp_dir("kit-standin-")     # a SIGKILLed stand-in's is removed by the next one
        try:                        # a failure or Ctrl-C from here on would leave the folder behind
            self.kernels = Kernels(self, kernel_slots, gpu_used_hours, kernel_timeout)
        except BaseException:
            self._server.server_close()
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    # -- lifecycle
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{cast(str, self._server.server_address[0])}:{self.port}"    # AF_INET: a str host

    def start(self) -> StandIn:
        self._thread = threading.Thread(target=self._server.serve_forever, name="kit-standin", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.kernels.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StandIn:
        try:
            return self.start()
        except BaseException:       # Ctrl-C while starting: __exit__ would not run
            if self._thread is not None and not self._thread.is_alive():
                self._thread = None     # never started: shutdown() would wait for it forever
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- fault injection
    def inject(self, method: str, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Fail the next `count` calls of `method` (one of FAULT_TARGETS) with `status`."""
        if method not in FAULT_TARGETS:
            raise KitError(f"fault for {method!r}: the stand-in has no such method "
                           f"(known: {', '.join(FAULT_TARGETS)})")
        with self.lock:
            self.faults.setdefault(method, []).append(Fault(int(status), int(count), retry_after))

    def score_errors(self, count: int = 1, reason: str = "Submission scoring failed (injected)") -> None:
        with self.lock:
            self.error_next.extend([reason] * count)

    def take_fault(self, method: str) -> Fault | None:
        with self.lock:
            for name in (method, "*"):
                queue = self.faults.get(name) or []
                if queue:
                    fault = queue[0]
                    fault.count -= 1
                    if fault.count <= 0:
                        queue.pop(0)
                    return fault
        return None

    # -- the competition
    def zip_file(self) -> Path:
        """The data dir zipped once per server (deterministic bytes, so sizes and dates stay put)."""
        with self.lock:
            if self._zip is None:
                path = self._tmp / f"{self.competition}.zip"
                files = sorted(p for p in self.data_dir.iterdir() if p.is_file() and (  # its synthetic marker too
                    p.name[0] != "." or p.name == SYNTH_MARKER))     # (fetched, it is no real competition's)
                with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
                    for f in files:
                        info = zipfile.ZipInfo(f"{ZIP_FOLDER}/{f.name}", date_time=(2022, 3, 1, 0, 0, 0))
                        info.external_attr = 0o644 << 16
                        with open(f, "rb") as src, zf.open(info, "w") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                self._zip = path
            return self._zip

    def last_modified(self) -> str:
        """A stable Last-Modified: the newest data file's mtime (the client compares it to its copy)."""
        newest = max(p.stat().st_mtime for p in self.data_dir.iterdir() if p.is_file())
        return email.utils.formatdate(newest, usegmt=True)

    def create_submission(self, token: str, description: str, user: str) -> dict:
        with self.lock:
            upload = self.uploads.pop(token, None)
        if upload is None or upload["data"] is None:
            raise _ApiError(400, "Unknown or incomplete upload token (upload the file to createUrl first)")
        status, public, private, error = self._score(upload["file_name"], upload["data"])
        with self.lock:
            if self.daily_limit is not None and made_today(self.submissions) >= self.daily_limit:
                raise _ApiError(400, DAILY_LIMIT.format(self.daily_limit))     # Kaggle's answer; nothing recorded
            sub = {"ref": self.first_ref + len(self.submissions) + 1, "date": _iso_now(), "description": description,
                   "fileName": upload["file_name"], "totalBytes": len(upload["data"]), "submittedBy": user,
                   "submittedByRef": user, "teamName": user, "final": (status, public, private, error), "polls": 0}
            self.submissions.append(sub)
        return sub

    def _score(self, file_name: str, data: bytes):
        with self.lock:
            injected = self.error_next.pop(0) if self.error_next else None
        if injected:
            return "ERROR", None, None, injected
        folder = Path(tempfile.mkdtemp(dir=self._tmp))
        path = folder / (os.path.basename(file_name) or "submission.csv")
        path.write_bytes(data)
        try:
            scores = score_submission(path, self.answers)
        except KitError as e:
            return "ERROR", None, None, str(e).replace(str(folder) + os.sep, "")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return "COMPLETE", f"{scores['public']['acc']:.5f}", f"{scores['private']['acc']:.5f}", None

    def view(self, sub: dict, poll: bool) -> dict:
        """The ApiSubmission JSON of one submission; a poll may move it out of PENDING."""
        with self.lock:
            if poll:
                sub["polls"] += 1
            status, public, private, error = sub["final"]
            if sub["polls"] <= self.pending_polls:
                status, public, private, error = "PENDING", None, None, None
        out = {k: v for k, v in sub.items() if k not in ("final", "polls")}      # as ApiSubmission lists them
        out["status"] = status
        if public is not None:
            out["publicScore"], out["privateScore"] = public, private
        if error:
            out["errorDescription"] = error
        return out


def _iso_now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class _Server(ThreadingHTTPServer):
    standin: StandIn                    # the state its handlers answer from


class _Handler(CompetitionRpcs, BaseHTTPRequestHandler):
    server_version = "kit-standin/1"
    server: _Server

    @property
    def standin(self) -> StandIn:
        return self.server.standin

    def log_message(self, fmt, *args) -> None:
        self.standin.log(f"{self.address_string()} {fmt % args}")

    # Proxy-style request lines (`POST http://localhost/api/v1/... HTTP/1.1`) carry a full URL.
    def _path(self) -> str:
        return urlsplit(self.path).path

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers=None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body or status != 302:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: dict, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode())

    def _error(self, e: _ApiError) -> None:
        headers = {}
        if e.retry_after is not None:
            headers["Retry-After"] = f"{e.retry_after:g}"
        self._send(e.status, json.dumps({"code": e.status, "message": e.message}).encode(), headers=headers)

    def _fault(self, method: str) -> None:
        fault = self.standin.take_fault(method)
        if fault is None:
            return
        messages = {401: "Unauthenticated", 403: "Permission denied", 404: "Not found",
                    429: "Too many requests", 500: "Internal server error (injected)"}
        retry_after = fault.retry_after if fault.status in RETRY_STATUSES else None
        raise _ApiError(fault.status, messages.get(fault.status, f"HTTP {fault.status} (injected)"), retry_after)

    def _user(self) -> str:
        auth = self.headers.get("Authorization", "")
        kind, _, value = auth.partition(" ")
        if kind == "Basic":
            try:
                user, _, key = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user, key = "", ""
            if user and (self.standin.key is None or key == self.standin.key):
                return user
        elif kind == "Bearer" and value and (self.standin.key is None or value == self.standin.key):
            return "rehearsal"
        raise _ApiError(401, "Unauthenticated: missing or invalid credentials")

    # -- verbs
    def do_GET(self) -> None:
        path = self._path()
        try:
            if path == f"/files/{self.standin.competition}.zip":
                self._fault(DOWNLOAD)
                zpath = self.standin.zip_file()
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(zpath.stat().st_size))
                self.send_header("Last-Modified", self.standin.last_modified())
                self.end_headers()
                with open(zpath, "rb") as f, contextlib.suppress(ConnectionError):    # a client killed mid-way
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
            elif path.startswith("/kernels-output/"):
                self.standin.kernels.serve_file(self, path)
            elif path == "/_admin/state":
                with self.standin.lock:
                    subs = [dict(s, final=list(s["final"])) for s in self.standin.submissions]
                self._json({"competition": self.standin.competition, "submissions": subs,
                            "calls": list(self.standin.calls)})
            else:
                raise _ApiError(404, f"Not found: {path}")
        except _ApiError as e:
            self._error(e)

    def do_PUT(self) -> None:
        path = self._path()
        try:
            token = path.rsplit("/", 1)[-1]
            data = self._body()
            with self.standin.lock:
                self.standin.calls.append(UPLOAD)
                known = path.startswith("/upload/") and token in self.standin.uploads
            if not known:
                raise _ApiError(404, "Upload URL expired or unknown")
            self._fault(UPLOAD)
            with self.standin.lock:
                self.standin.uploads[token]["data"] = data
            self._send(200, b"{}")
        except _ApiError as e:
            self._error(e)

    def do_POST(self) -> None:
        path = self._path()
        try:
            body = self._body()
            if path.startswith("/_admin/"):
                self._admin(path, json.loads(body or b"{}"))
                return
            if not path.startswith(API_PREFIX):
                raise _ApiError(404, f"Not found: {path}")
            service, _, method = path[len(API_PREFIX):].partition("/")
            with self.standin.lock:
                self.standin.calls.append(method)
            self._fault(method)
            request = json.loads(body or b"{}")
            if service == "security.OAuthService" and method == INTROSPECT:
                self._json({"active": True, "username": "rehearsal", "scope": "resources.admin:*"})
                return
            if service == "kernels.KernelsApiService":
                self.standin.kernels.handle(self, method, request, self._user())
                return
            if service != "competitions.CompetitionApiService":
                raise _ApiError(404, f"{service}/{method} is not served by the stand-in")
            user = self._user()
            if request.get("competitionName") != self.standin.competition:
                raise _ApiError(404, f"Competition {request.get('competitionName')!r} not found")
            handler = getattr(self, f"_rpc_{method}", None)      # see CompetitionRpcs
            if handler is None:
                raise _ApiError(404, f"{method} is not served by the stand-in")
            handler(request, user)
        except _ApiError as e:
            self._error(e)
        except (ValueError, KeyError, KitError) as e:
            self._error(_ApiError(400, f"Bad request: {e}"))

    def _admin(self, path: str, body: dict) -> None:
        if path == "/_admin/inject":
            self.standin.inject(body["method"], body["status"], body.get("count", 1), body.get("retry_after"))
        elif path == "/_admin/clear":
            with self.standin.lock:
                self.standin.faults.clear()
                self.standin.error_next.clear()
        elif path == "/_admin/score-errors":
            self.standin.score_errors(body.get("count", 1))
        elif path == "/_admin/pending-polls":
            self.standin.pending_polls = int(body["count"])
        else:
            raise _ApiError(404, f"Not found: {path}")
        self._json({"ok": True})
