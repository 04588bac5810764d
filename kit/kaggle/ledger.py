"""The ledger, submissions/ledger.csv: one row per submission attempt, with Kaggle's ref, status
and public/private scores. Read strictly, written under a lock, backed up before each rewrite.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from kit import env
from kit.errors import KitError
from kit.fsio import copy_file, file_lock, remove_left_temps, spreadsheet_safe, spreadsheet_text, write_csv
from kit.kaggle.client import MAYBE_MADE

LEDGER_COLUMNS = ["time", "competition", "file", "sha256", "message", "members", "vote", "ref",
                  "status", "public", "private", "target", "error"]


def now() -> str:
    """The ledger's time stamp: UTC, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_target(path: str | os.PathLike) -> Path:
    """The file a ledger path names, a symlink followed to its target: the rewrite's rename would
    replace the link with a copy (the shared ledger never gets the row), and a lock beside the link
    would not exclude writers using the real path. Every reader and writer asks here once."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def read_ledger(path: str | os.PathLike, restore: str | None = None):
    """The ledger as a DataFrame of strings (empty with the right columns when there is none).
    A damaged ledger (a row cut short or with extra fields, a renamed or repeated column) is refused
    naming the row or column, so no rewrite can make the damage permanent; `restore` says how to get
    a good copy back (default: from its backups)."""
    import pandas as pd  # deferred: the worker, one process per Kaggle call, imports kit.kaggle but needs no pandas

    path = ledger_target(path)
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=str) for c in LEDGER_COLUMNS})
    restore = restore or f"restore a backup ({path.name}.bak-*)"
    try:
        text = path.read_text(encoding="utf-8-sig")     # a byte-order mark: saved by a spreadsheet
    except (OSError, UnicodeDecodeError) as e:
        raise KitError(f"{path}: unreadable ledger ({e}); fix or remove that row, or {restore}") from None
    _check_ledger_rows(path, text, restore)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise KitError(f"{path}: unreadable ledger ({e}); fix or remove that row, or {restore}") from None
    frame = frame.map(spreadsheet_text)             # as _rewrite_ledger wrote it: see spreadsheet_safe
    for c in LEDGER_COLUMNS:        # an older ledger, without the columns added since: they start empty
        if c not in frame.columns:
            frame[c] = ""
    not_refs = [(i, r) for i, r in enumerate(frame["ref"], 1) if r and not (r.isascii() and r.isdigit())]
    if not_refs:
        row, ref = not_refs[0]
        raise KitError(f"{path}: row {row} has ref {ref!r}, which is not a Kaggle submission number; fix or "
                       f"remove that row, or {restore}")
    frame["status"] = frame["status"].str.strip().str.upper()      # `pending` typed by hand is PENDING
    for column in ("public", "private"):
        frame[column] = frame[column].str.strip()                    # ` 0.8 ` typed by hand
        if bad := [(i, v) for i, v in enumerate(frame[column], 1) if v and not _is_score(v)]:
            raise KitError(f"{path}: row {bad[0][0]} has {column} score {bad[0][1]!r}, which is not a number "
                           f"from 0 to 1; fix or remove that row, or {restore}")
    return frame


def _is_score(text: str) -> bool:
    """A number from 0 to 1 in ASCII (probe 58 F2: float() read full-width digits, which the table and the
    picture then took for no score)."""
    if not text.isascii():
        return False
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


LEDGER_BACKUPS = 10         # backups kept beside the ledger, newest first


def _check_header(path: Path, header: list[str], restore: str) -> None:
    """No column nameless or named twice, and none unknown while a known one is missing: that is a
    renamed or misspelt column (`publik`), which would read as empty and then be added again. A
    header with only known columns is an older ledger (the rest are added); a column of the user's
    own beside all of kit's is kept."""
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice or "" in header:
        problem = f"names {', '.join(twice)} twice" if twice else "has a column without a name"
        raise KitError(f"{path}: the header {problem}; fix the header, or {restore}")
    unknown = [name for name in header if name not in LEDGER_COLUMNS]
    missing = [c for c in LEDGER_COLUMNS if c not in header]
    if unknown and missing:
        raise KitError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))} in the header, and "
                       f"{', '.join(missing)} missing (the known columns: {', '.join(LEDGER_COLUMNS)}); "
                       f"fix the header, or {restore}")


def _check_ledger_rows(path: Path, text: str, restore: str) -> None:
    """A header kit can read (_check_header), every row with the header's field count, and a line
    break at the end (kit always writes one, so a last row without it was cut short)."""
    if not text.strip():
        raise KitError(f"{path}: empty ledger (not even a header); {restore} or move it aside")
    fix = f"fix or remove that row, or {restore}"
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        _check_header(path, header, restore)
        for row in reader:
            if row and len(row) != len(header):
                raise KitError(f"{path}: row {reader.line_num - 1} has {len(row)} fields, the header "
                               f"{len(header)} ({','.join(row)[:80]!r}); {fix}")
    except csv.Error as e:
        raise KitError(f"{path}: row {reader.line_num - 1} is malformed ({e}); {fix}") from None
    if not text.endswith(("\n", "\r")):
        raise KitError(f"{path}: the last row (line {text.count(chr(10)) + 1}) is cut short (no line end: "
                       f"{text.splitlines()[-1][-60:]!r}); {fix}")


def ledger_lock(path: Path) -> Path:
    """The lock file every writer of `path` takes (beside it, hidden)."""
    return path.with_name(f".{path.name}.lock")


def sending_lock(path: str | os.PathLike) -> Path:
    """The lock a recipe or `kit submit` holds from "was this file submitted?" until its row is in the
    ledger, so two sharing a ledger never both send the same bytes unawares (beside the ledger, hidden)."""
    path = ledger_target(path)
    return path.with_name(f".{path.name}.sending.lock")


def sending(path: str | os.PathLike, log=None):
    """sending_lock held for a block; `log` says once that another kit holds it before waiting. None
    while the ledger's folder is missing (file_lock would make it: the sender makes it, or says why not)."""
    if not Path(path).parent.is_dir():
        return contextlib.nullcontext()
    return file_lock(sending_lock(path), busy=(lambda: log(f"another kit is submitting with {path}; waiting for it "
                                                            "to finish")) if log else None)


ROOM = 1 << 20          # free bytes a vote's CSV, manifest and ledger rows need (HW4's CSV: ~0.2 MB)


def ledger_problem(path: str | os.PathLike) -> str | None:
    """Why the ledger could not record a row (None when it can): its folder missing and not
    creatable, or not writable; the file not writable; its lock not takeable; no temp file
    creatable beside it (how every rewrite is made); under ROOM bytes free on its disk."""
    path = ledger_target(path)
    folder = path.parent
    if path.exists() and not path.is_file():
        return f"{path}: the ledger is not a file"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"{path}: cannot make the ledger's folder {folder} ({e.strerror})"
    if not env.writable(folder):
        return f"{path}: the ledger's folder {folder} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path}: the ledger is read-only"
    try:
        with file_lock(ledger_lock(path)):
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        return f"{path}: cannot write the ledger or take its lock ({e.strerror}: {e.filename})"
    free = shutil.disk_usage(folder).free
    if free < ROOM:
        return f"{path}: {free} bytes free on the ledger's disk (its rows and backup need room)"
    return None


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before anything is sent, a ledger that could not record the submission (ledger_problem)."""
    problem = ledger_problem(path)
    if problem:
        raise KitError(f"{problem}; nothing was sent (a submission must be recorded); give a writable --ledger FILE")


def _rewrite_ledger(path: Path, old, new) -> None:
    """Back the ledger up (ledger.csv.bak-<time>), then write `new`, both atomically; refuses a
    rewrite that would drop a column, a row or a non-empty field of `old`. Old backups are pruned
    only once the new ledger is written, so a failed rewrite never costs a good backup."""
    kept = len(new) >= len(old) and set(old.columns) <= set(new.columns) and all(
        (new[c].iloc[:len(old)].to_numpy() != "")[old[c].to_numpy() != ""].all() for c in old.columns)
    if not kept:
        raise KitError(f"{path}: refusing to rewrite the ledger: the new version would lose fields (kit bug)")
    remove_left_temps(path)         # a writer killed mid-rewrite left its temp file (every writer holds the lock)
    backed_up = path.is_file()
    if backed_up:
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        copy_file(path, path.with_name(f"{path.name}.bak-{stamp}"), "ledger backup")
    write_csv(path, new.map(spreadsheet_safe))       # a message `=...` is no formula in a spreadsheet
    if backed_up:
        _prune_backups(path)


def _prune_backups(path: Path) -> None:
    """Keep the newest LEDGER_BACKUPS backups. An empty one (an older kit's backup on a full disk)
    holds nothing to restore: it goes first and never counts against the good ones."""
    backups = sorted(path.parent.glob(f"{path.name}.bak-*"), reverse=True)
    empty = [b for b in backups if b.is_file() and b.stat().st_size == 0]
    kept = [b for b in backups if b not in empty]
    for stale in empty + kept[LEDGER_BACKUPS:]:
        stale.unlink(missing_ok=True)


def append_ledger(path: str | os.PathLike, row: dict) -> None:
    """Add one row under an exclusive lock, rewriting the file atomically."""
    import pandas as pd  # deferred: see read_ledger

    path = ledger_target(path)
    with file_lock(ledger_lock(path)):
        frame = read_ledger(path)
        new = pd.DataFrame([{c: "" if row.get(c) is None else str(row.get(c)) for c in frame.columns}])
        _rewrite_ledger(path, frame, pd.concat([frame, new], ignore_index=True) if len(frame) else new)


def update_ledger(path: str | os.PathLike, competition: str, ref, changes: dict, target: str | None = None) -> None:
    """Set fields of the row with this competition and ref (and target, where the submission went,
    when given: two servers can hand out the same ref); an empty value never blanks a field."""
    path = ledger_target(path)
    with file_lock(ledger_lock(path)):
        frame = read_ledger(path)
        new = frame.copy()
        hit = (new["competition"] == competition) & (new["ref"] == str(ref))
        if target is not None:
            hit &= new["target"] == target
        for key, value in changes.items():
            if value is not None and str(value) != "":
                new.loc[hit, key] = str(value)
        _rewrite_ledger(path, frame, new)


def same_row(frame, row: dict):
    """Which rows of `frame` record the same attempt as `row`: the same competition, Kaggle ref and
    target (a row from an older kit may have none), or, for an attempt without a ref (FAILED), another
    without one at the same time, competition, file and sha256 (never a submission Kaggle accepted in
    that second)."""
    keys: tuple[str, ...] = ("competition", "ref")
    if not row.get("ref"):
        keys = ("time", "competition", "file", "sha256", "ref")
    if row.get("ref") and row.get("target"):
        keys += ("target",)
    hit = frame["competition"].notna()
    for key in keys:
        hit &= frame[key] == str(row.get(key) or "")
    return hit


def merge_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Add rows under the lock: a row the ledger already holds (same_row) only has its empty fields
    filled and a PENDING status replaced (a merge never takes a score back); any other is appended.
    Merging the same rows twice changes nothing."""
    import pandas as pd  # deferred: see read_ledger

    path = ledger_target(path)
    with file_lock(ledger_lock(path)):
        frame = read_ledger(path)
        new = frame.copy()
        for row in rows:
            hit = same_row(new, row)
            if not hit.any():
                add = pd.DataFrame([{c: str(row.get(c) or "") for c in new.columns}])
                new = pd.concat([new, add], ignore_index=True) if len(new) else add
                continue
            for key in new.columns:
                value = str(row.get(key) or "")
                replace = (new[key] == "") | ((new[key] == "PENDING") if key == "status" else False)
                if value:
                    new.loc[hit & replace, key] = value
        if not new.equals(frame):
            _rewrite_ledger(path, frame, new)


FOUND_MADE = "its answer was lost; found made in the competition's list (by its send id)"


def resolve_failed(path: str | os.PathLike, row: dict, made: dict) -> None:
    """The FAILED row `row` (no ref) made the submission `made` ({ref, status, public, private, error}):
    its fields set, the error that said it may have been made replaced by `made`'s, or by FOUND_MADE
    (never blanked: a rewrite that empties a field is refused)."""
    path = ledger_target(path)
    with file_lock(ledger_lock(path)):
        frame = read_ledger(path)
        new = frame.copy()
        hit = same_row(new, {**row, "ref": ""}) & (new["status"] == "FAILED")
        hit &= hit.cumsum() == 1            # the first such row: two of one second would take one ref twice
        for key, value in {**made, "error": made.get("error") or FOUND_MADE}.items():
            new.loc[hit, key] = str(value or "")
        if not new.equals(frame):
            _rewrite_ledger(path, frame, new)


def score_table(ledger, competition: str | None = None):
    """Ledger rows sorted by public score (best first) with the public-private gap beside them."""
    import pandas as pd  # deferred: see read_ledger

    frame = read_ledger(ledger)
    if competition:
        frame = frame[frame["competition"] == competition]
    frame = frame.copy()
    public = pd.to_numeric(frame["public"], errors="coerce")
    private = pd.to_numeric(frame["private"], errors="coerce")
    frame["gap"] = public - private
    frame["_order"] = public
    return frame.sort_values("_order", ascending=False, na_position="last").drop(columns="_order")


def maybe_made(frame):
    """Which ledger rows are FAILED sends that may have been made (their answer lost: MAYBE_MADE)."""
    return (frame["status"] == "FAILED") & (frame["ref"] == "") & frame["error"].str.contains(MAYBE_MADE, regex=False)
