"""Submissions Kaggle accepted but the ledger could not take: kept in a pending file until the next
`kit scores` or `kit submit` merges them into the ledger, so a submission sent is never unrecorded.

The pending file is `ledger.csv.pending` beside the ledger, or, when that folder cannot be written,
`$XDG_CACHE_HOME/kit/pending/` (~/.cache/kit/pending) under a name derived from the ledger's path.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from kit import env
from kit.errors import KitError
from kit.fsio import file_lock, sha256_file, utf8_text, write_csv
from kit.kaggle.client import untagged
from kit.kaggle.ledger import (
    LEDGER_COLUMNS,
    ledger_lock,
    ledger_problem,
    ledger_target,
    merge_rows,
    read_ledger,
    same_row,
)
from kit.kaggle.notes import noted_sends, sent_as

PENDING_SUFFIX = ".pending"


def pending_files(ledger: str | os.PathLike) -> list[Path]:
    """Where the ledger's pending rows may be, in the order they are tried: beside it (beside its
    target when it is a symlink: kit.kaggle.ledger.ledger_target), then the cache."""
    ledger = ledger_target(ledger)
    cache = env.user_cache() / "pending"
    digest = hashlib.sha256(os.fsencode(str(ledger.resolve()))).hexdigest()[:12]     # a name in any encoding
    return [ledger.with_name(ledger.name + PENDING_SUFFIX), cache / f"{ledger.name}-{digest}{PENDING_SUFFIX}"]


def keep_pending(ledger: str | os.PathLike, row: dict) -> Path:
    """Put the row in the first pending file that can be written (replacing an earlier version of
    the same attempt); returns that file. OSError or KitError when none can be."""
    import pandas as pd  # deferred: see kit.kaggle.ledger.read_ledger

    beside, cache = pending_files(ledger)
    problem: Exception | None = None
    for path in (beside, cache):
        if path is beside and not env.writable(path.parent):
            continue
        try:
            with file_lock(ledger_lock(path)):
                frame = read_ledger(path)
                frame = frame[~same_row(frame, row)] if len(frame) else frame
                add = pd.DataFrame([{c: utf8_text(str(row.get(c) or "")) for c in LEDGER_COLUMNS}])
                write_csv(path, pd.concat([frame, add], ignore_index=True) if len(frame) else add)
            return path
        except (OSError, KitError) as e:
            problem = e
    raise problem or KitError(f"{cache}: cannot be written")


def merge_pending(ledger: str | os.PathLike) -> list[tuple[Path, int]]:
    """Merge every pending file of the ledger into it (kit.kaggle.ledger.merge_rows), then remove
    the file; returns (file, rows) for each merged. A pending file that is not one kit wrote, or a
    ledger that still cannot be written, is one line naming both files; the pending file is removed
    only once the ledger holds every one of its rows."""
    merged = []
    for path in pending_files(ledger):
        if not path.is_file():
            continue
        with file_lock(ledger_lock(path)):      # no row kept while we merge is lost
            rows = _pending_rows(path, ledger)
            problem = ledger_problem(ledger)
            if problem is None:
                try:
                    merge_rows(ledger, rows)
                except OSError as e:
                    problem = f"{e.filename}: {e.strerror}"
            if problem:
                raise KitError(f"{path}: {len(rows)} submission(s) wait to be added to {ledger}, which cannot "
                               f"be written ({problem}); make it writable and run `kit scores --ledger {ledger}`")
            frame = read_ledger(ledger)
            lost = sum(not same_row(frame, row).any() for row in rows)
            if lost:
                raise KitError(f"{path}: {lost} of its {len(rows)} submission(s) did not reach {ledger} (kit bug); "
                               f"it is kept: add them to the ledger by hand")
            try:
                path.unlink()
            except OSError:         # merged rows merge again as no change: harmless until it can go
                pass
        merged.append((path, len(rows)))
    return merged


def kept_rows(ledger: str | os.PathLike) -> list[dict]:
    """The rows waiting in the ledger's pending files (unreadable ones skipped: merge_pending names them)."""
    rows: list[dict] = []
    for path in pending_files(ledger):
        if path.is_file():
            with contextlib.suppress(OSError, KitError):
                rows += read_ledger(path).to_dict("records")
    return rows


_REQUIRED = ("time", "competition", "file", "sha256", "status")     # every row kit keeps has them


def _pending_rows(path: Path, ledger) -> list[dict]:
    """The pending file's rows, refused unless each is a row kit could have kept: only the ledger's
    columns (a merge would drop any other), the fields every kept row has, and Kaggle's ref (a
    number, as read_ledger checks), which only a FAILED attempt lacks."""
    restore = f"add its rows to {ledger} by hand and delete it (it is kept until then)"
    frame = read_ledger(path, restore=restore)
    unknown = [c for c in frame.columns if c not in LEDGER_COLUMNS]
    if unknown:
        raise KitError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))} in the header (a pending "
                       f"file holds only the ledger's: {', '.join(LEDGER_COLUMNS)}); fix it, or {restore}")
    rows = frame.to_dict("records")
    for number, row in enumerate(rows, 1):
        empty = [key for key in _REQUIRED if not row[key]]
        if empty:
            raise KitError(f"{path}: row {number} has no {', '.join(empty)}; fix it, or {restore}")
        if row["ref"] == "" and row["status"] != "FAILED":      # read_ledger refused a ref that is no number
            raise KitError(f"{path}: row {number} has ref {row['ref']!r} (Kaggle's submission number; empty only "
                           f"for a FAILED attempt); fix it, or {restore}")
    return rows


def restore_noted(ledger, csv_path, competition: str, target: str, log=None) -> list[dict]:
    """The sends of the bytes now at CSV_PATH that Kaggle accepted (the note beside it has their ref) but
    that neither `ledger` nor the ledger the note names holds (a row deleted by hand: probe 47, a recipe
    re-run then sent the same bytes again, and `kit submit` did not say it spends another): put back as
    PENDING in the ledger the note names (where it was; probe 48: not another folder's), else in `ledger`,
    so they count as sent and `kit scores` fetches their scores; one line each."""
    if not Path(csv_path).is_file():
        return []
    digest, rows, log = sha256_file(csv_path), [], log or (lambda line: None)
    for n in noted_sends(csv_path):
        if n["sha256"] != digest or not n["ref"].isdigit() or (n["competition"], n["target"]) != (competition, target):
            continue
        row = {"time": n["time"], "competition": competition, "file": str(csv_path), "sha256": digest,
               "message": untagged(sent_as(csv_path, digest, n["time"]) or ""), "ref": n["ref"], "status": "PENDING",
               "target": target}
        if not any(_holds(book, row) for book in dict.fromkeys([str(ledger_target(ledger)), n["ledger"]]) if book):
            rows.append(row)
            book = n["ledger"] if n["ledger"] and Path(n["ledger"]).is_file() else ledger
            merge_rows(book, [row])
            log(f"{book}: submission {row['ref']} of {csv_path} (sent at {row['time']}) had no row; put back from "
                "the note beside the CSV, as PENDING (`kit scores` fetches its score)")
    return rows


def _holds(ledger: str, row: dict) -> bool:
    """Whether LEDGER (readable) has a row of this submission (same_row); an unreadable one holds none."""
    try:
        return bool(same_row(read_ledger(ledger), row).any())
    except KitError:
        return False
