"""Sends cut off before their answer (a kill, a lost session after the upload): looked up in the
competition's list by the send id noted beside the CSV (kit.kaggle.notes), and recorded when found, so an
accepted submission is never in no ledger row and never sent twice unawares."""
from __future__ import annotations

import contextlib
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle.client import backoff, call, is_tagged, may_be_cut_short, same_send, target, untagged
from kit.kaggle.ledger import maybe_made, merge_rows, read_ledger, resolve_failed
from kit.kaggle.notes import cut_off_sends
from kit.kaggle.submissions import note_accepted, refs_at, voting_members
from kit.records import SubmissionManifest
from kit.submission import note_submitted

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
    known = refs_at(ledger, where)
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
           "message": untagged(cut["message"]), "members": voting_members(manifest),
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
    try:                # a time edited by hand: its lag cannot be told, and the id was looked for (probe 48 F5)
        settled = datetime.now(timezone.utc) - _utc(cut["time"]) >= LIST_LAG
    except KitError:
        settled = True
    with contextlib.suppress(KitError, OSError):       # a note not writable: looked for again next time
        if settled:
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
