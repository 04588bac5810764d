"""Sending a submission: validate the CSV, submit it through the worker (retrying 429/5xx), wait for
its score, and record every attempt in the ledger; kit.kaggle.refresh fetches scores still owed.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle.client import (
    backoff,
    call,
    check_timing,
    is_tagged,
    may_be_cut_short,
    poll_interval,
    same_send,
    tagged,
    target,
    untagged,
)
from kit.kaggle.credentials import kaggle_json_problem
from kit.kaggle.ledger import (
    append_ledger,
    check_writable,
    maybe_made,
    merge_rows,
    now,
    read_ledger,
    resolve_failed,
    update_ledger,
)
from kit.kaggle.notes import cut_off_sends
from kit.kaggle.pending import keep_pending, merge_pending
from kit.records import SubmissionManifest, manifest_path
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
    described = tagged(message)                     # what Kaggle lists: the message and this send's id
    note_sending(csv_path, digest, ledger, when, competition, where, described)
    row = {"time": when, "competition": competition, "file": str(csv_path), "sha256": digest,
           "message": message, "members": ";".join(map(str, manifest.members or [])), "vote": manifest.voted,
           "ref": "", "status": "", "public": "", "private": "",
           "target": where, "error": ""}
    record = _Recorder(ledger, log)

    def submitted(event: dict) -> None:     # recorded at once, so a crash while waiting loses nothing
        row.update(ref=str(event["ref"]), status="PENDING")
        record.add(row)
        note_accepted(csv_path, row, ledger, log)
        if recorded is not None:
            recorded()

    known = sorted(_refs_at(ledger, where))      # never taken for this send's (a list lagging a send before it)
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
    if not csv_path.is_file():
        raise KitError(f"{csv_path}: submission file not found")
    if not message or not message.strip():
        raise KitError(f"{csv_path}: a submission message is required (-m MESSAGE)")
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


def _refs_at(ledger, where: str) -> set[str]:
    """The Kaggle refs the ledger holds for submissions sent to `where`."""
    frame = read_ledger(ledger)
    return set(frame.loc[(frame["target"] == where) & (frame["ref"] != ""), "ref"])


CLOCKS_APART = timedelta(minutes=5)       # how far Kaggle's clock may be behind this machine's
LIST_LAG = timedelta(minutes=10)          # a send this recent may not be listed yet: looked for three times


def _utc(stamp: str) -> datetime:
    """An ISO time stamp (a ledger's `...Z`, or Kaggle's, with or without its zone) as an aware UTC time;
    KitError for one that is not (a server's own format: what was sent when cannot be told)."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise KitError(f"the submission list dates a submission {stamp!r}, which is not an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def find_cut_off(csv_path, cut: dict, competition: str, ledger, endpoint: str | None = None, env=None, log=None,
                 where: str | None = None) -> dict | None:
    """Whether a send cut off before its answer (kit.kaggle.notes.interrupted_send's note line `cut`)
    reached the competition: its submission list is read for one with the note's send id, in no
    ledger row yet (an older kit's note: its message, the CSV's file name and size, dated from the
    note on less CLOCKS_APART). Found: it is recorded in `ledger` (in place of the attempt's FAILED row
    when there is one) and beside the CSV as if the answer had come, and its row returned (a PENDING
    one: await_score). None: it never arrived (sending it spends nothing twice). KitError when the
    note has no message (an older kit's), the list cannot be read, or more than one could be it (an
    older kit's untagged send: the user looks)."""
    if not cut.get("message"):
        raise KitError("its note, from an older kit, has no message to find it by in the competition's list")
    where, csv_path = where or target(endpoint), Path(csv_path)
    known = _refs_at(ledger, where)
    try:                        # a note's time edited by hand: the id needs none (an older note does)
        noted: datetime | None = _utc(cut["time"])
    except KitError:
        noted = None
    since, size = (noted - CLOCKS_APART if noted else None), csv_path.stat().st_size if csv_path.is_file() else -1
    recent = noted is not None and datetime.now(timezone.utc) - noted < LIST_LAG
    for look in range(3 if recent else 1):      # a list may lag a send made a moment ago
        if look:
            time.sleep(backoff() * 2 ** (look - 1))
        subs = call("list", {"competition": competition, "refs": []}, endpoint, env, log)["submissions"]
        hits = [sub for sub in subs if sub["ref"] and str(sub["ref"]) not in known and (
            same_send(cut["message"], sub["description"]) if is_tagged(cut["message"]) else  # its id: exact
            sub["description"] == cut["message"] and sub["file"] in ("", csv_path.name)  # an older kit's note
            and sub.get("bytes") in (None, 0, size) and since and sub["date"] and _utc(sub["date"]) >= since)]
        if hits:
            break
    if len(hits) > 1:
        raise KitError(f"{len(hits)} submissions in the list could be it (refs "
                       f"{', '.join(str(sub['ref']) for sub in hits)}: the same message, file name and size)")
    if not hits:
        _refuse_cut_short(cut, subs, known, csv_path, since)
        return None
    sub, held = hits[0], _holding(csv_path, cut["sha256"])     # an earlier version: moved aside, or gone
    manifest = (SubmissionManifest.beside(held) if held else None) or SubmissionManifest()
    row = {"time": cut["time"], "competition": competition, "file": str(held or csv_path), "sha256": cut["sha256"],
           "message": untagged(cut["message"]), "members": ";".join(map(str, manifest.members or [])),
           "vote": manifest.voted, "ref": str(sub["ref"]), "status": sub["status"], "public": sub["public"],
           "private": sub["private"], "target": where, "error": sub["error"]}
    failed = _failed_row(ledger, cut)
    if failed is None:
        merge_rows(ledger, [row])
    else:                       # the attempt's FAILED row ("it may have been made") becomes the submission's
        resolve_failed(ledger, failed, {k: row[k] for k in ("ref", "status", "public", "private", "error")})
        row["message"] = failed["message"]
    note_accepted(csv_path, row, ledger, log)
    return row


def _holding(csv_path: Path, digest: str) -> Path | None:
    """The file that holds these bytes now: CSV_PATH, or the NAME.csv.old-<time> `kit ensemble` moved an
    earlier version to (its manifest beside it); None when none does."""
    for path in [csv_path, *sorted(csv_path.parent.glob(f"{csv_path.name}.old-*"), reverse=True)]:
        if path.is_file() and sha256_file(path) == digest:
            return path
    return None


def look_up_earlier_versions(csv_path, competition: str, ledger, endpoint: str | None = None, env=None, log=None,
                             where: str | None = None) -> None:
    """The sends of CSV_PATH's earlier versions (other bytes) cut off before their answer, each looked up in
    the competition's list by its send id and recorded when found (probe 46: a CSV changed after a killed
    send left an accepted submission in no ledger row). One line each; never raised: the send of the
    bytes there now goes on. One found not there is noted answered, once the list has had time to show it."""
    where, log = where or target(endpoint), log or (lambda line: None)
    digest = sha256_file(csv_path)
    for cut in cut_off_sends(ledger, csv_path, competition, where):
        if cut["sha256"] != digest and is_tagged(cut["message"]):     # an older kit's: found by its bytes only
            settle_cut_off(csv_path, cut, competition, ledger, endpoint, env, log, where,
                           f"a send of an earlier version of {csv_path} at {cut['time']}, cut off before its answer,")


def settle_cut_off(csv_path, cut: dict, competition: str, ledger, endpoint, env, log, where: str, what: str) -> None:
    """A cut-off send (a note line with its send id) looked up and recorded when found (find_cut_off), one
    line saying which (`what` names it); never raised. One the list does not show is noted answered,
    once the list has had time to show it."""
    try:
        row = find_cut_off(csv_path, cut, competition, ledger, endpoint, env, log, where)
    except KitError as e:
        log(f"note: {what} may have been made, and kit could not tell ({e}): look at the competition's submissions")
        return
    if row is not None:
        log(f"{what} reached Kaggle: ref {row['ref']} ({row['status']}), now in {ledger}")
        return
    log(f"{what} is not in the competition's submissions: it never arrived")
    with contextlib.suppress(KitError, OSError):       # a time edited by hand, a note not writable: looked again
        if datetime.now(timezone.utc) - _utc(cut["time"]) >= LIST_LAG:
            note_submitted(csv_path, cut["sha256"], NEVER_ARRIVED, ledger, cut["time"], competition, where)


NEVER_ARRIVED = "never-arrived"     # a note's ref for a cut-off send the competition's list did not show


def _refuse_cut_short(cut: dict, subs: list[dict], known: set, csv_path: Path, since: datetime | None) -> None:
    """KitError when a submission in no ledger row, of that file, sent after the note, has a description
    that could be the send's cut short by the server (its id gone): kit cannot tell it is not the send
    (probe 38: the re-run took "its id is not listed" for "it never arrived" and sent it again)."""
    if not is_tagged(cut["message"]):
        return
    for sub in subs:
        after = since is None or not sub["date"] or _utc(sub["date"]) >= since
        if sub["ref"] and str(sub["ref"]) not in known and may_be_cut_short(cut["message"], sub, csv_path.name) \
                and after:
            raise KitError(f"submission {sub['ref']} in the list, of that file, has a description that could be this "
                           f"send's cut short ({sub['description']!r}), so it may be the send")


def _failed_row(ledger, cut: dict) -> dict | None:
    """The ledger's FAILED row of the send `cut` (a note line), saying it may have been made; None."""
    frame = read_ledger(ledger)
    rows = frame[maybe_made(frame) & (frame["sha256"] == cut["sha256"]) & (frame["time"] == cut["time"])]
    return rows.iloc[0].to_dict() if len(rows) else None


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
