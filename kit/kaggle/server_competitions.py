"""The stand-in's competitions.CompetitionApiService methods (JSON in camelCase, as the official
client sends them) and the error an RPC answers with; the server and its state are in kit.kaggle.server.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from email.message import Message
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.kaggle.server import StandIn

ZIP_FOLDER = "Dataset"          # the real competition zip holds its files inside one folder
DAILY_LIMIT = ("Submission not allowed: your team has used its daily submission allowance ({}) today; it resets "
               "at 00:00 UTC")


def made_today(submissions: list[dict]) -> int:
    """Submissions made since 00:00 UTC (Kaggle's day); the caller holds the stand-in's lock."""
    today = datetime.now(timezone.utc).date().isoformat()
    return sum(s["date"].startswith(today) for s in submissions)


# A fault of CreateSubmission's answer: 5xx once the submission is made (the answer lost after the fact),
# 200 an answer without its ref, 204 a "success" that made nothing (each seen from Kaggle).
MADE = "CreateSubmission.made"


class _ApiError(Exception):
    """An RPC's error answer: HTTP status, message (and Retry-After for 429/503)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class CompetitionRpcs:
    """Mixed into the stand-in's request handler: `_rpc_<Method>(request, user)` answers one RPC."""

    if TYPE_CHECKING:                   # what the handler (kit.kaggle.server._Handler) provides
        headers: Message

        @property
        def standin(self) -> StandIn: ...
        def _send(self, status: int, body: bytes = ..., content_type: str = ..., headers=None) -> None: ...
        def _json(self, obj: dict, status: int = 200) -> None: ...

    def _rpc_DownloadDataFiles(self, request: dict, user: str) -> None:
        host = self.headers.get("Host") or f"127.0.0.1:{self.standin.port}"
        self._send(302, headers={"Location": f"http://{host}/files/{self.standin.competition}.zip"})

    def _rpc_ListDataFiles(self, request: dict, user: str) -> None:
        files = sorted(p for p in self.standin.data_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        self._json({"files": [{"ref": p.name, "name": p.name, "totalBytes": p.stat().st_size} for p in files]})

    def _rpc_StartSubmissionUpload(self, request: dict, user: str) -> None:
        token = uuid.uuid4().hex
        with self.standin.lock:
            self.standin.uploads[token] = {"file_name": request.get("fileName") or "submission.csv", "data": None}
        host = self.headers.get("Host") or f"127.0.0.1:{self.standin.port}"
        self._json({"token": token, "createUrl": f"http://{host}/upload/{token}"})

    def _rpc_CreateSubmission(self, request: dict, user: str) -> None:
        made = self.standin.take_fault(MADE) if self.standin.faults.get(MADE) else None
        answer = {"message": "Successfully submitted to the local stand-in"}
        if made is not None and made.status == 204:     # "success", and nothing made (kaggle-cli issue 148)
            return self._json(answer)
        sub = self.standin.create_submission(request.get("blobFileTokens", ""),
                                             request.get("submissionDescription") or "", user)
        if made is not None and made.status >= 400:     # made, then the answer lost: a 5xx, as Kaggle may
            raise _ApiError(made.status, f"HTTP {made.status} after the submission was made (injected)")
        self._json(answer if made is not None else {**answer, "ref": sub["ref"]})     # 200: made, no ref

    def _rpc_ListSubmissions(self, request: dict, user: str) -> None:
        with self.standin.lock:
            subs = list(reversed(self.standin.submissions))          # newest first, like Kaggle
        size = int(request.get("pageSize") or 20)
        token = request.get("pageToken") or ""
        start = int(token) if token else (max(int(request.get("page") or 1), 1) - 1) * size
        page = subs[start:start + size]
        next_token = str(start + size) if start + size < len(subs) else ""
        self._json({"submissions": [self.standin.view(s, poll=True) for s in page], "nextPageToken": next_token})

    def _rpc_GetSubmission(self, request: dict, user: str) -> None:
        with self.standin.lock:
            found = [s for s in self.standin.submissions if s["ref"] == int(request.get("ref") or 0)]
        if not found:
            raise _ApiError(404, f"Submission {request.get('ref')} not found")
        self._json(self.standin.view(found[0], poll=True))

    def _rpc_GetLeaderboard(self, request: dict, user: str) -> None:
        with self.standin.lock:
            done = [s for s in self.standin.submissions if s["final"][0] == "COMPLETE"]
        best: dict[str, dict] = {}
        for s in done:
            if s["teamName"] not in best or float(s["final"][1]) > float(best[s["teamName"]]["final"][1]):
                best[s["teamName"]] = s
        rows = sorted(best.values(), key=lambda s: -float(s["final"][1]))
        self._json({"submissions": [{"teamId": i + 1, "teamName": s["teamName"], "submissionDate": s["date"],
                                     "score": s["final"][1]} for i, s in enumerate(rows)],
                    "nextPageToken": ""})

    def _rpc_GetSubmissionLimits(self, request: dict, user: str) -> None:
        with self.standin.lock:
            total = len(self.standin.submissions)
            n_today = made_today(self.standin.submissions)
        limit = self.standin.daily_limit
        self._json({"numToday": n_today, "numTotal": total,
                    "numAllowedNow": max(0, (100 if limit is None else limit) - n_today), "limitedByTotal": False})


METHODS = tuple(sorted(name[len("_rpc_"):] for name in vars(CompetitionRpcs) if name.startswith("_rpc_")))
