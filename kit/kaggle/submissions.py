"""Sending a submission: validate the CSV, submit it through the worker (retrying 429/5xx), wait for
its score, and record every attempt in the ledger; kit.kaggle.refresh fetches scores still owed.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.fsio import utf8_text
from kit.kaggle.client import (
    call,
    check_timing,
    poll_interval,
    tagged,
    target,
)
from kit.kaggle.credentials import kaggle_json_problem
from kit.kaggle.ledger import (
    append_ledger,
    check_writable,
    now,
    read_ledger,
    update_ledger,
)
from kit.kaggle.notes import index_sent, sent_index
from kit.kaggle.pending import keep_pending, merge_pending
from kit.records import SubmissionManifest, manifest_path
from kit.rundir import RunDir
from kit.submission import (
    note_sending,
    note_submitted,
    require_valid,
    snapshot_for_sending,
    stale_vote,
    submitted_note,
)


class AlreadyMade(Exception):
    """Raised by a submission's `note` (kit submit's) when these bytes' earlier send, whose answer was
    lost, is found made in the competition's list: `row`, its ledger row; nothing is sent again."""

    def __init__(self, row: dict) -> None:
        super().__init__(row.get("ref"))
        self.row = row


class _Recorder:
    """Puts a submission's row in the ledger, or, when the ledger cannot take it after Kaggle accepted
    the submission, in its pending file (kit.kaggle.pending) with one line on the log saying so."""

    def __init__(self, ledger, log) -> None:
        self.ledger, self.log = Path(ledger), log or (lambda line: None)
        self.pending: Path | None = None    # where the row went instead of the ledger
        self.problem = ""                   # why the ledger could not take it

    def add(self, row: dict) -> None:
        self._write(row, lambda: append_ledger(self.ledger, row))

    def update(self, row: dict, keys=("status", "public", "private", "error")) -> None:
        self._write(row, lambda: update_ledger(self.ledger, row["competition"], row["ref"],
                                               {k: row[k] for k in keys}, target=row["target"]))

    def _write(self, row: dict, to_ledger) -> None:
        if self.pending is None:
            try:
                return to_ledger()
            except (OSError, KitError) as e:    # never raised out of the worker's event: it is still running
                self.problem = _why(e, self.ledger)
        what = (f"submission {row['ref']} of {row['file']} (sha256 {row['sha256']}, message {row['message']!r}, "
                f"{row['status']})") if row["ref"] else f"the {row['status']} attempt to submit {row['file']}"
        first = self.pending is None
        try:
            self.pending = keep_pending(self.ledger, row)
        except (OSError, KitError) as e:
            self.log(f"{what} could not be recorded in {self.ledger} ({self.problem}) nor in a pending file "
                     f"({_why(e, self.ledger)}): add it to the ledger by hand")
            return
        if first:
            self.log(f"{what} could not be recorded in {self.ledger} ({self.problem}); kept in {self.pending} "
                     f"until the next `kit scores` or `kit submit` adds it to the ledger")

    def note(self) -> str:
        """'' when every row reached the ledger, else where the row waits and how it gets there."""
        if not self.problem:
            return ""
        if self.pending is None:
            return f"; it is recorded nowhere ({self.problem}): add it to {self.ledger} by hand (see above)"
        return (f"; {self.ledger} could not record it ({self.problem}): it is kept in {self.pending} until "
                f"`kit scores --ledger {self.ledger}` adds it (make the ledger writable first)")


def _why(e: Exception, ledger: Path) -> str:
    """An OSError as its reason, with the file it names when that is not the ledger itself."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror if not e.filename or str(e.filename) == str(ledger) else f"{e.filename}: {e.strerror}"
    return str(e)


def submit(csv_path, message: str, competition: str = DEFAULT_COMPETITION, data_dir=None, wait: bool = False,
           ledger="submissions/ledger.csv", endpoint: str | None = None, timeout: float = 1800.0,
           poll: float | None = None, env: dict | None = None, log=None, where: str | None = None,
           note=None, recorded=None) -> dict:
    """Validate, submit (retrying 429/5xx), optionally wait for the score; returns the ledger row.
    note: a line to `log` once every check has passed, just before the send (or a function giving it
    then, or None; the function may raise AlreadyMade to send nothing). recorded(): called once the
    accepted submission's PENDING row is in the ledger, before the wait for its score (`kit submit`
    releases the ledger's sending lock there).

    Every submission attempt leaves a ledger row: PENDING/COMPLETE/ERROR with Kaggle's ref, or
    FAILED with the reason; its target is `where`, else kit.kaggle.client.target(endpoint). A failed
    or ERROR-scored submission raises KitError after recording it. The ledger is checked writable
    before anything is sent; a row it still cannot take goes to its pending file (kit.kaggle.pending),
    and the submission then ends in a KitError saying so.
    """
    csv_path = Path(csv_path)
    with tempfile.TemporaryDirectory(prefix="kit-submit-") as folder:
        return _send(csv_path, message, competition, data_dir, wait, ledger, endpoint, timeout, poll, env, log,
                     where, Path(folder), note, recorded)


def _send(csv_path: Path, message, competition, data_dir, wait, ledger, endpoint, timeout, poll, env, log, where,
          folder: Path, note=None, recorded=None) -> dict:
    """submit(), with a private folder for the copy of the CSV that is checked, hashed and sent."""
    when, where = now(), where or target(endpoint)
    sent, manifest, digest = _checked(csv_path, message, data_dir, ledger, {**os.environ, **(env or {})},
                                      (folder, when, competition, where))
    line = note() if callable(note) else note       # may raise AlreadyMade: nothing is sent, nothing noted
    if line and log:
        log(line)
    stale = stale_vote(manifest)
    if stale and log:                       # a CSV of one's choosing is sent as asked: said, not refused
        log(f"note: {csv_path.name}'s vote is older than its members ({'; '.join(stale)}); sent as asked "
            f"(`kit ensemble` votes them as they are now)")
    unfinished = [f"{m}: {why}" for m in manifest.members or [] if (why := RunDir.of(m).not_done())]
    if unfinished and log:                  # probe 57: a half-trained member was submitted without a word
        log(f"note: {csv_path.name} votes member(s) whose training has not finished ({'; '.join(unfinished)}); "
            "sent as asked (a recipe trains its members to the end before it votes)")
    described = tagged(message)                     # what Kaggle lists: the message and this send's id
    note_sending(csv_path, digest, ledger, when, competition, where, described)
    index_sent(sent_index(ledger), csv_path, log)   # `kit scores` finds the note wherever the CSV is
    row = {"time": when, "competition": competition, "file": str(csv_path), "sha256": digest,
           "message": message, "members": voting_members(manifest), "vote": manifest.voted,
           "ref": "", "status": "", "public": "", "private": "",
           "target": where, "error": ""}
    record = _Recorder(ledger, log)

    def submitted(event: dict) -> None:     # recorded at once, so a crash while waiting loses nothing
        row.update(ref=str(event["ref"]), status="PENDING")
        record.add(row)
        note_accepted(csv_path, row, ledger, log)
        if recorded is not None:
            recorded()

    known = sorted(refs_at(ledger, where))      # never taken for this send's (a list lagging a send before it)
    params = {"competition": competition, "file": str(sent.resolve()), "message": described, "known": known,
              "wait": wait, "timeout": timeout, "poll": poll_interval() if poll is None else poll}
    try:
        done = call("submit", params, endpoint, env, log, on_event=submitted)
    except KitError as e:
        if row["ref"]:
            raise KitError(f"submission {row['ref']} of {csv_path} was made, but waiting for its score "
                           f"failed: {e} (`kit scores` refreshes it later){record.note()}") from None
        row.update(status="FAILED", error=str(e))
        record.add(row)
        where = f"not recorded: {record.problem}" if record.problem and not record.pending else \
            f"recorded as FAILED in {record.pending or ledger}"
        raise KitError(f"submission of {csv_path} failed: {e} ({where}; the CSV is kept)") from None
    if wait:
        row.update(status=done["status"], public=done["public"], private=done["private"], error=done["error"])
        record.update(row)
    if record.note():
        raise KitError(f"submission {row['ref']} of {csv_path} was made ({row['status']}){record.note()}")
    if done.get("timed_out"):
        raise KitError(f"submission {row['ref']} of {csv_path} is still PENDING after {timeout:g}s; "
                       f"run `kit scores` later to fetch its score")
    if wait and done["status"] == "ERROR":
        raise KitError(f"Kaggle scored submission {row['ref']} of {csv_path} ERROR: "
                       f"{done['error'] or 'no reason given'} (recorded in {ledger})")
    return row


def voting_members(manifest: SubmissionManifest) -> str:
    """The ledger's `members` cell: the members whose predictions the vote uses, `;`-joined (probe 47
    L5: a vote that chose one member alone listed them all); every member when the manifest gives no
    weight per member."""
    members, weights = manifest.members or [], manifest.weights or []
    used = [m for m, w in zip(members, weights, strict=True) if w] if len(weights) == len(members) else members
    return ";".join(map(str, used or members))


def note_accepted(csv_path: Path, row: dict, ledger, log) -> None:
    """Note the accepted submission beside the CSV (kit.submission.note_submitted), so `kit ensemble`
    keeps that file whichever ledger recorded it. Never raised: the submission is made and recorded
    (a failure here is one log line)."""
    try:
        note_submitted(csv_path, row["sha256"], row["ref"], ledger, row["time"], row["competition"],
                       row["target"])
    except (OSError, KitError) as e:
        if log:
            note = submitted_note(csv_path)
            log(f"submission {row['ref']} of {csv_path} could not be noted in {note} ({_why(e, note)}); "
                f"`kit ensemble` now keeps {csv_path.name} from being overwritten only when {ledger} is "
                f"beside it or is submissions/ledger.csv")


def _checked(csv_path: Path, message: str, data_dir, ledger, env: dict,
             snapshot: tuple) -> tuple[Path, SubmissionManifest, str]:
    """Everything checked before a submission is sent: the CSV (as Kaggle would) and that its
    manifest was written for it, the message, the kaggle.json the client would read, a ledger that
    can record it; rows a failed recording left pending are merged first. snapshot: (folder, time,
    competition, target) for kit.submission.snapshot_for_sending. Returns the copy of the CSV to send,
    the CSV's manifest (empty when it has none) and the copy's SHA-256."""
    if not csv_path.is_file():              # probe 53 F4: a folder was "not found"
        raise KitError(f"{csv_path}: " + ("a folder, not a submission CSV" if csv_path.is_dir() else
                                          "submission file not found"))
    if not message or not message.strip():
        raise KitError(f"{csv_path}: a submission message is required (-m MESSAGE)")
    if utf8_text(message) != message:       # Kaggle would show U+FFFD in its place (probe 49)
        raise KitError(f"-m {utf8_text(message)!r}: the message holds bytes that are not UTF-8 (a terminal in "
                       "another encoding?); write it in UTF-8; nothing was sent")
    manifest = SubmissionManifest.beside(csv_path) or SubmissionManifest()
    folder, when, competition, where = snapshot
    sent, digest = snapshot_for_sending(csv_path, folder)
    _check_manifest_matches(csv_path, manifest, digest)
    data_dir_given = bool(data_dir)
    data_dir = data_dir or manifest.data_dir
    if not data_dir:
        raise KitError(f"{csv_path}: no manifest {manifest_path(csv_path).name} beside it names the "
                       f"data dir; pass --data DIR so the CSV is checked before it is sent")
    if not data_dir_given and not Path(data_dir).is_dir():
        raise KitError(f"{manifest_path(csv_path)}: names the data dir {data_dir}, which is not there; pass "
                       f"--data DIR so {csv_path} is checked before it is sent")
    try:
        require_valid(sent, data_dir)
    except KitError as e:       # named as the user's file: the copy is gone once this returns
        raise KitError(str(e).replace(str(sent), str(csv_path))) from None
    problem = kaggle_json_problem(env)
    if problem:
        raise KitError(f"{problem}; nothing was sent")
    check_timing()
    read_ledger(ledger)         # a damaged ledger stops us before anything is sent, not after
    check_writable(ledger)
    merge_pending(ledger)
    return sent, manifest, digest


def _check_manifest_matches(csv_path: Path, manifest: SubmissionManifest, digest: str) -> None:
    """Refuse a CSV its manifest was not written for (a kill between `kit ensemble`'s two writes, or
    another CSV copied over it): the ledger would credit it to another ensemble's members and vote.
    A manifest without csv_sha256 (older versions) cannot be checked. digest: the CSV's SHA-256."""
    if manifest.csv_sha256 and manifest.csv_sha256 != digest:
        beside = manifest_path(csv_path)
        raise KitError(f"{csv_path}: its manifest {beside} was written for another CSV (sha256 "
                       f"{manifest.csv_sha256[:12]}... != {digest[:12]}...): re-run `kit ensemble` to write both "
                       f"again, or delete {beside} and pass --data DIR to submit this CSV as it is")


def refs_at(ledger, where: str) -> set[str]:
    """The Kaggle refs the ledger holds for submissions sent to `where`."""
    frame = read_ledger(ledger)
    return set(frame.loc[(frame["target"] == where) & (frame["ref"] != ""), "ref"])


def await_score(row: dict, ledger, endpoint: str | None = None, env=None, log=None, poll: float | None = None,
                timeout: float = 1800.0) -> dict:
    """A PENDING ledger row (find_cut_off's) waited for until Kaggle scores it, and updated in the ledger;
    returns the row. KitError when the wait fails (the PENDING row stays: `kit scores` refreshes it)."""
    done = call("wait", {"competition": row["competition"], "ref": int(row["ref"]), "timeout": timeout,
                         "poll": poll_interval() if poll is None else poll}, endpoint, env, log)
    row = {**row, **{k: done[k] for k in ("status", "public", "private", "error")}}
    update_ledger(ledger, row["competition"], row["ref"], {k: row[k] for k in ("status", "public", "private", "error")},
                  target=row["target"])
    return row
