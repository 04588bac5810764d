"""The note kit keeps beside each CSV it sends (kit.submission.submitted_note, .NAME.csv.submitted: one
line per send, noted before the upload and again with Kaggle's ref), read against the ledgers: which
sends of a CSV's bytes were made (find_submitted), which were cut off before their answer
(interrupted_send, cut_off_sends) and what each carried as its message (sent_as)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from kit.errors import KitError
from kit.fsio import sha256_file, write_bytes
from kit.kaggle.ledger import ledger_target, maybe_made, read_ledger
from kit.submission import submitted_note


def find_submitted(ledger, csv_path, competition: str, target: str, also=()) -> dict | None:
    """The ledger row of an earlier successful submission of the same file bytes, if any: a
    re-run recipe must not spend another of the day's Kaggle submissions on an identical CSV. Looked
    for in `ledger`, then in the ledgers the note beside the CSV names (probe 47: a re-run from another
    working folder, whose submissions/ledger.csv is another, sent the same bytes again), and in those
    the notes beside the CSVs `also` names (the recipe's earlier votes, written to another folder's
    submissions/); a row found there has `ledger` set to it."""
    if not Path(csv_path).is_file():
        return None
    digest = sha256_file(csv_path)
    here = Path(ledger).resolve()
    noted = [n["ledger"] for path in dict.fromkeys([Path(csv_path), *map(Path, also)]) for n in noted_sends(path)
             if n["sha256"] == digest and n["ref"].isdigit() and n["ledger"] and Path(n["ledger"]).resolve() != here]
    for book in dict.fromkeys([str(ledger), *noted]):
        try:
            frame = read_ledger(book)
        except KitError:
            if book == str(ledger):             # the ledger asked for names its damage; another is a hint only
                raise
            continue
        same = frame[(frame["sha256"] == digest) & (frame["competition"] == competition) &
                     (frame["target"] == target) & frame["status"].isin(["COMPLETE", "PENDING"])]
        if len(same):
            return {**same.iloc[-1].to_dict(), **({} if book == str(ledger) else {"ledger": book})}
    return None


def interrupted_send(ledger, csv_path, competition: str, target: str) -> dict | None:
    """A send of these very bytes to `competition` at `target` that was cut off (a kill, a lost session)
    after kit noted it beside the CSV (kit.submission.note_sending, just before the upload) and before
    any answer was recorded (cut_off_sends). Kaggle may have accepted it, so sending again may spend
    another of the day's five. Returns that note line, or None."""
    if not Path(csv_path).is_file():
        return None
    digest = sha256_file(csv_path)
    return next((n for n in cut_off_sends(ledger, csv_path, competition, target) if n["sha256"] == digest), None)


def cut_off_sends(ledger, csv_path, competition: str, target: str) -> list[dict]:
    """The note lines beside CSV_PATH of sends to `competition` at `target`, of any version of the file
    (probe 46: one changed after the kill was never looked for), with no answer: no line of the same
    bytes and time with a ref, and no row of its time in `ledger` or in the ledger the note names (a
    `kit submit --ledger` of one's own). Latest first."""
    notes = noted_sends(csv_path)
    answered = {(n["sha256"], n["time"]) for n in notes if n["ref"]}
    return [n for n in reversed(notes) if not n["ref"] and (n["sha256"], n["time"]) not in answered and
            (n["competition"], n["target"]) == (competition, target) and
            not any(_has_row(book, n["sha256"], n["time"]) for book in dict.fromkeys([str(ledger), n["ledger"]])
                    if book)]


def sent_as(csv_path, digest: str, time: str) -> str | None:
    """The description (message and send id, kit.kaggle.client.tagged) that the send of these bytes
    at TIME carried, from the note beside the CSV; None when the note is gone or does not hold it."""
    said = [n["message"] for n in noted_sends(csv_path) if n["sha256"] == digest and n["time"] == time and n["message"]]
    return said[-1] if said else None


def noted_sends(csv_path) -> list[dict]:
    """The lines kit can read of the note beside CSV_PATH (kit.submission.submitted_note), in order."""
    try:
        text = submitted_note(csv_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [n for n in map(_note_line, text.splitlines()) if n is not None]


def sent_index(ledger) -> Path:
    """The hidden file beside a ledger, .NAME.csv.sent, listing (one absolute path a line) every CSV
    sent with it: `kit scores` finds their notes wherever they are (probe 48: a `kit submit ../x.csv`
    cut off after Kaggle accepted it was looked for only in the ledger's folder, so never found)."""
    ledger = ledger_target(ledger)
    return ledger.with_name(f".{ledger.name}.sent")


def index_sent(index, csv_path, log=None) -> None:
    """Add CSV_PATH to INDEX (a ledger's sent_index, or a recipe's record of the CSVs its votes were sent
    as), written whole and atomically; a path already there is not added again, and every line already
    there is kept as it is (probe 50: a hand-written relative line was dropped on the rewrite). Called as
    the send is noted beside the CSV. Never raised: the note beside the CSV is the record; an index only
    points at it. One that cannot be written is said through `log`."""
    csv = str(Path(csv_path).absolute())
    if "\n" in csv or "\r" in csv:        # a name a line cannot hold: found beside the ledger only
        return
    try:            # as the file system names them: a folder named in another encoding is found again
        lines = _index_lines(index)
        if os.fsencode(csv) not in lines:
            write_bytes(index, b"".join(line + b"\n" for line in [*lines, os.fsencode(csv)]))
    except (OSError, KitError, UnicodeError) as e:
        if log:
            log(f"note: could not add {csv} to {index} ({getattr(e, 'strerror', None) or e}): a later look "
                "for this send from another folder may miss it; the note beside the CSV keeps it")


def indexed_csvs(index) -> list[Path]:
    """The CSVs INDEX lists (index_sent), in order: none when it is missing or cannot be read; lines that
    are not absolute paths, as a hand edit may leave, are skipped (index_problem says so)."""
    try:
        lines = [os.fsdecode(line) for line in _index_lines(index)]
    except OSError:
        return []
    return [Path(line) for line in dict.fromkeys(lines) if line.strip() and Path(line).is_absolute()]


def index_problem(index) -> str | None:
    """Why INDEX (index_sent's) points at fewer CSVs than it was written with, in words, or None: it is not
    a file, cannot be read, or holds lines that are not absolute paths (probe 50: each was passed over
    without a word, and a vote was sent again from a new folder)."""
    index = Path(index)
    if not index.exists():
        return None
    if not index.is_file():
        return f"{index} is not a file"
    try:
        lines = [line for line in _index_lines(index) if line.strip()]
    except OSError as e:
        return f"{index} cannot be read ({e.strerror or e})"
    odd = sum(1 for line in lines if not Path(os.fsdecode(line)).is_absolute())
    return f"{odd} line(s) of {index} are not absolute paths and were skipped" if odd else None


def _index_lines(index) -> list[bytes]:
    """The lines of INDEX as bytes, none when it is missing; OSError when it cannot be read."""
    try:
        return Path(index).read_bytes().splitlines()
    except FileNotFoundError:
        return []


def _note_line(line: str) -> dict | None:
    """One line of a submitted note as {sha256, ref, time, ledger, competition, target, message} (all
    text; message '' in an older kit's note), or None for a line that is not one (damaged, edited by hand)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):        # RecursionError: nested too deeply to parse
        return None
    keys = ("sha256", "ref", "time", "ledger", "competition", "target", "message")
    if not isinstance(value, dict) or not all(isinstance(value.get(k, ""), str) for k in keys):
        return None
    return {k: value.get(k, "") for k in keys}


def _has_row(ledger: str, digest: str, time: str) -> bool:
    """Whether LEDGER holds a row that answers a send of these bytes at TIME; a ledger that cannot be
    read counts as holding it not (the send is then taken as cut off: nothing is sent again without a
    word), and so does a FAILED row whose error says the submission may have been made (MAYBE_MADE:
    its answer was lost and kit could not tell)."""
    try:
        frame = read_ledger(ledger)
    except KitError:
        return False
    this = (frame["sha256"] == digest) & (frame["time"] == time)
    return bool((this & ~maybe_made(frame)).any())
