"""Submission CSV checks (what Kaggle would reject) and local scoring against an answer key.

`validate_submission` lists every problem in one line each; `score_submission` gives public,
private and overall accuracy with Wilson 95% intervals, for synthetic competitions' keys.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

from kit import env as kit_env
from kit.errors import KitError, first_line
from kit.fsio import file_lock, sha256_file, write_text
from kit.layout import read_layout
from kit.names import old_stamp, old_suffix

HEADER = ["Id", "Category"]
MAX_PROBLEMS = 10


def _read_rows(path: Path, what: str, header: list[str] = HEADER) -> list[list[str]]:
    """Rows of a CSV file (header included); KitError with one line if it is not a readable CSV."""
    if not path.is_file():
        raise KitError(f"{path}: {what} {'is a folder, not a file' if path.is_dir() else 'not found'}")
    data = path.read_bytes()
    if not data.strip():
        raise KitError(f"{path}: empty file, expected a CSV with header {','.join(header)}")
    if b"\x00" in data:
        raise KitError(f"{path}: not a CSV (binary content)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KitError(f"{path}: not a CSV (not UTF-8 text)") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise KitError(f"{path}: not a CSV ({e})") from None
    while rows and not rows[-1]:          # trailing blank lines are harmless
        rows.pop()
    if not rows:
        raise KitError(f"{path}: empty file, expected a CSV with header {','.join(header)}")
    return rows


def _cap(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]


def _show(values, limit: int = 3) -> str:
    values = list(values)
    shown = ", ".join(values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def validate_submission(csv_path: str | os.PathLike, data_dir: str | os.PathLike) -> list[str]:
    """Problems that would make Kaggle reject `csv_path` for the competition in data_dir.

    Empty list = ok. One line per problem (at most ~10, then a count). Checks the header,
    row count, unique Ids, Ids = the test feature_paths, Categories = known speaker ids.
    """
    csv_path = Path(csv_path)
    layout = read_layout(data_dir)                     # a bad data dir is the caller's KitError
    try:
        rows = _read_rows(csv_path, "submission")
    except KitError as e:
        return [str(e)]
    if all(len(row) <= 1 for row in rows):
        return [f"{csv_path}: not a CSV (no comma-separated columns; expected {','.join(HEADER)})"]
    problems: list[str] = []
    header, body = rows[0], rows[1:]
    if header != HEADER:
        hint = " (an index column? write with index=False)" if header[:1] == [""] else ""
        problems.append(f"{csv_path}: header is {','.join(header)!r}, expected exactly "
                        f"{','.join(HEADER)!r}{hint}")
    expected = [u.path for u in layout.test]
    if len(body) != len(expected):
        problems.append(f"{csv_path}: {len(body)} rows, expected {len(expected)} (one per test utterance)")

    known_ids, speakers = set(expected), set(layout.speakers)
    seen: set[str] = set()
    duplicated: list[str] = []
    misshapen: list[tuple[int, int]] = []          # (line, number of fields)
    row_problems: list[str] = []                   # after the whole-file ones, so the cap keeps those
    for line, row in enumerate(body, start=2):
        if len(row) != 2:
            misshapen.append((line, len(row)))
            continue
        uid, category = row
        if uid in seen:
            duplicated.append(uid)
        seen.add(uid)
        if uid not in known_ids:
            row_problems.append(f"{csv_path}:{line}: Id {uid!r} is not a test utterance in {layout.data_dir}")
        if category not in speakers:
            row_problems.append(f"{csv_path}:{line}: Category {category!r} is not a speaker in mapping.json")
    if misshapen:
        line, n = misshapen[0]
        problems.append(f"{csv_path}: {len(misshapen)} row(s) without exactly 2 fields "
                        f"(first at line {line}: {n} fields)")
    if duplicated:
        problems.append(f"{csv_path}: {len(duplicated)} duplicate Id(s): {_show(duplicated)}")
    missing = [p for p in expected if p not in seen]
    if missing:
        problems.append(f"{csv_path}: {len(missing)} test utterance(s) missing: {_show(missing)}")
    return _cap(problems + row_problems)


def require_valid(csv_path: str | os.PathLike, data_dir: str | os.PathLike) -> None:
    """Raise KitError with the first problem (and how many there are) if the CSV is invalid."""
    problems = validate_submission(csv_path, data_dir)
    if problems:
        more = f" (+{len(problems) - 1} more; see `kit validate {csv_path} --data {data_dir}`)" \
            if len(problems) > 1 else ""
        raise KitError(problems[0] + more)


# ---------------------------------------------------------------- what was submitted stays
LEDGER = Path("submissions") / "ledger.csv"        # `kit submit --ledger`'s default
_DIGEST = re.compile(r"[0-9a-f]{64}")


def refuse_ledger(csv_path: str | os.PathLike, what: str = "its vote") -> None:
    """KitError when CSV_PATH holds a ledger (kit's header: time,competition,file,...), which a vote
    written to that name would replace: a ledger kept under a name of one's own (`kit submit --ledger
    submissions/hw4-2023.csv`) and a vote named hw4-2023 share NAME.csv."""
    # cycle: kit.kaggle (kit.kaggle.ledger) imports this module for the submitted note
    from kit.kaggle.ledger import LEDGER_COLUMNS

    try:
        with open(csv_path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline()
    except OSError:                             # not there (or not a file): nothing to lose
        return
    if header.split(",")[:3] == LEDGER_COLUMNS[:3]:
        raise KitError(f"{csv_path}: a submissions ledger, where {what} would go: choose another name; "
                       "nothing was written")


def submitted_note(csv_path: str | os.PathLike) -> Path:
    """The hidden file beside NAME.csv, .NAME.csv.submitted, where `kit submit` notes each version of
    it that Kaggle accepted: the ledger it used may be anywhere, the note is always found here."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f".{csv_path.name}.submitted")


@contextlib.contextmanager
def submission_lock(csv_path: str | os.PathLike) -> Iterator[None]:
    """Held while NAME.csv and NAME.json are moved aside and replaced, or its note is rewritten, so
    two `kit ensemble`s (or one and `kit submit`) never interleave: pairs stay pairs."""
    csv_path = Path(csv_path)
    with file_lock(csv_path.with_name(f".{csv_path.name}.lock")):
        yield


def note_submitted(csv_path: str | os.PathLike, sha256: str, ref: str, ledger: str | os.PathLike,
                   when: str, competition: str = "", target: str = "") -> Path:
    """Add a line (JSON: sha256, ref, time, ledger, competition, target) to CSV_PATH's submitted_note,
    written atomically; lines already there are kept. Returns the note's path. OSError/KitError when it
    cannot be written: the caller decides what that means (for `kit submit`, a logged line)."""
    with submission_lock(csv_path):
        return _add_note(csv_path, sha256, ref, ledger, when, competition, target)


def _add_note(csv_path, sha256: str, ref: str, ledger, when: str, competition: str, target: str,
              message: str = "") -> Path:
    """note_submitted's line, written by a caller holding submission_lock; a send's note (no ref yet)
    also keeps its message, by which a send cut off before its answer is found in Kaggle's list."""
    note = submitted_note(csv_path)
    fields = {"sha256": sha256, "ref": str(ref), "time": when, "ledger": str(Path(ledger).resolve()),
              "competition": competition, "target": target}
    line = json.dumps({**fields, "message": message} if message else fields)
    old = note.read_text(encoding="utf-8", errors="replace") if note.exists() else ""
    write_text(note, old + ("" if not old or old.endswith("\n") else "\n") + line + "\n")
    return note


def snapshot_for_sending(csv_path: str | os.PathLike, folder: Path) -> tuple[Path, str]:
    """A copy of CSV_PATH in FOLDER, taken under submission_lock, and its SHA-256: the bytes checked and
    uploaded are the bytes hashed, whatever replaces the CSV meanwhile."""
    csv_path = Path(csv_path)
    if not kit_env.writable(csv_path.parent):       # its lock and the send's note go beside it
        raise KitError(f"{csv_path}: its folder cannot be written, and kit notes each send beside the CSV (the "
                       "note finds a send whose answer is lost); nothing was sent: submit a copy of it from a "
                       "folder you can write")
    with submission_lock(csv_path):
        data = csv_path.read_bytes()
    copy = folder / csv_path.name
    copy.write_bytes(data)
    return copy, hashlib.sha256(data).hexdigest()


def note_sending(csv_path: str | os.PathLike, sha256: str, ledger, when: str, competition: str, target: str,
                 message: str = "") -> None:
    """Just before the send, under submission_lock: refuse when CSV_PATH no longer holds the bytes about
    to be sent (another `kit ensemble` replaced it), else note them with no ref yet, so from now on
    `kit ensemble` moves them aside rather than overwrite them (a send that then fails costs one .old copy).
    A note that cannot be written is refused too: it holds the send's id (kit.kaggle.client.tagged)."""
    with submission_lock(csv_path):
        if sha256_file(csv_path) != sha256:
            raise KitError(f"{csv_path}: replaced while it was being checked (another `kit ensemble`?); nothing "
                           "was sent: submit it again")
        try:        # the key by which a lost answer is found: no note, no send (probe 32)
            _add_note(csv_path, sha256, "", ledger, when, competition, target, message)
        except (OSError, KitError) as e:
            note = submitted_note(csv_path)
            raise KitError(f"{csv_path}: its send could not be noted in {note} ({first_line(e, 120)}), by which "
                           "kit finds a send whose answer is lost; nothing was sent") from None


def keep_submitted(csv_path: str | os.PathLike, new_sha256: str | None, ledgers=None) -> list[Path]:
    """Before CSV_PATH is replaced by a file of digest NEW_SHA256: when the file there now was
    submitted (its digest is in its submitted_note or in a ledger row; by path only for a row
    without a digest), move it and its manifest NAME.json aside to NAME.csv.old-<time> and
    NAME.json.old-<time>, under one suffix, so what Kaggle scored stays on disk. Returns the kept
    paths (none when the file is missing, has the new bytes, was never submitted, or another process
    moved it first). NEW_SHA256 None: the pair is replaced even where the CSV's bytes stay (its
    manifest changes: another vote that gives the same labels). ledgers: the ledgers to read
    (default: ledger.csv beside the CSV and submissions/ledger.csv). Callers replacing the pair hold
    submission_lock."""
    csv_path = Path(csv_path)
    try:
        digest = sha256_file(csv_path)
    except FileNotFoundError:                   # nothing there, or another process moved it aside
        return []
    ledgers = ledgers or [csv_path.with_name("ledger.csv"), LEDGER]
    if digest == new_sha256 or not _submitted(csv_path, digest, ledgers):
        return []
    return _move_aside(csv_path)


def _move_aside(csv_path: Path) -> list[Path]:
    """CSV_PATH and its NAME.json renamed to NAME.csv.old-<stamp> and NAME.json.old-<stamp>, with
    the first stamp free for both (a pair found by its suffix); [] when another process moved the
    CSV first (it moves the manifest with it)."""
    json_path = csv_path.with_suffix(".json")
    stamp, n = old_stamp(), 1
    while True:                                 # two rewrites within a second
        suffix = old_suffix(stamp, n)
        dests = [p.with_name(p.name + suffix) for p in (csv_path, json_path)]
        if not any(os.path.lexists(d) for d in dests):
            break
        n += 1
    try:
        os.rename(csv_path, dests[0])
    except FileNotFoundError:
        return []
    try:
        os.rename(json_path, dests[1])
    except FileNotFoundError:                   # a CSV without a manifest
        return [dests[0]]
    return dests


def _submitted(csv_path: Path, digest: str, ledgers) -> bool:
    """Whether the file of DIGEST at CSV_PATH was submitted: its digest is in CSV_PATH's note or in
    a row of one of LEDGERS. A row without a digest (an older ledger) counts when it names the file
    (as given to `kit submit`, from the folder it ran in, or from the ledger's folder's parent)."""
    # cycle: kit.kaggle (kit.kaggle.submissions) imports this module to check CSVs before sending them
    from kit.kaggle.ledger import read_ledger

    try:
        if digest in submitted_note(csv_path).read_text(encoding="utf-8", errors="replace"):
            return True
    except OSError:                             # no note (not submitted since kit wrote them): the ledgers say
        pass
    here = csv_path.resolve()
    for ledger in dict.fromkeys(Path(p).resolve() for p in ledgers):
        frame = read_ledger(ledger)
        if digest in set(frame["sha256"]):
            return True
        for file, sha in zip(frame["file"], frame["sha256"], strict=True):
            if file and not _DIGEST.fullmatch(sha) and \
                    here in (Path(file).resolve(), (ledger.parent.parent / file).resolve()):
                return True
    return False


# ---------------------------------------------------------------- scoring
def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: sane at 0%, 100% and small n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _summary(correct: int, n: int) -> dict:
    low, high = wilson_interval(correct, n)
    return {"acc": correct / n if n else float("nan"), "correct": correct, "n": n,
            "ci_low": low, "ci_high": high}


def read_answer_key(answers_path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """Id -> (Category, Usage) of a Kaggle-style answer key `Id,Category,Usage` (Public/Private)."""
    answers_path = Path(answers_path)
    key_rows = _read_rows(answers_path, "answer key", ["Id", "Category", "Usage"])     # probe 49: named Id,Category
    if key_rows[0][:3] != ["Id", "Category", "Usage"]:
        raise KitError(f"{answers_path}: header is {','.join(key_rows[0])!r}, expected 'Id,Category,Usage'")
    key: dict[str, tuple[str, str]] = {}
    duplicated: list[tuple[int, str]] = []          # (line, Id): a second row would silently win
    for line, row in enumerate(key_rows[1:], start=2):
        if len(row) < 3 or row[2] not in ("Public", "Private"):
            raise KitError(f"{answers_path}:{line}: expected Id,Category,Usage with Usage Public or Private")
        if row[0] in key:
            duplicated.append((line, row[0]))
        key[row[0]] = (row[1], row[2])
    if duplicated:
        line, uid = duplicated[0]
        raise KitError(f"{answers_path}:{line}: duplicate Id {uid!r} in the answer key "
                       f"({len(duplicated)} duplicate row(s) in all); each Id must appear once")
    return key


def score_predictions(predictions: dict[str, str], key: dict[str, tuple[str, str]], where: str = "predictions",
                      key_name: str = "the answer key") -> dict:
    """Accuracy of Id -> Category predictions against read_answer_key's key; they must cover
    exactly the key's Ids. Returns {"public", "private", "overall": {acc, correct, n, ci_low,
    ci_high}, "gap"}, with gap = public - private accuracy."""
    missing, extra = set(key) - set(predictions), set(predictions) - set(key)
    if missing or extra:
        raise KitError(f"{where}: does not match {key_name}: {len(missing)} Id(s) missing, "
                       f"{len(extra)} unknown (e.g. {_show(sorted(missing or extra), 1)})")
    tally = {"Public": [0, 0], "Private": [0, 0]}
    for uid, (truth, usage) in key.items():
        tally[usage][0] += predictions[uid] == truth
        tally[usage][1] += 1
    public, private = _summary(*tally["Public"]), _summary(*tally["Private"])
    overall = _summary(tally["Public"][0] + tally["Private"][0], len(key))
    return {"public": public, "private": private, "overall": overall,
            "gap": public["acc"] - private["acc"]}


def score_submission(csv_path: str | os.PathLike, answers_path: str | os.PathLike) -> dict:
    """Accuracy of a submission CSV against an answer key `Id,Category,Usage` (score_predictions)."""
    csv_path = Path(csv_path)
    key = read_answer_key(answers_path)
    sub_rows = _read_rows(csv_path, "submission")
    if sub_rows[0] != HEADER:
        raise KitError(f"{csv_path}: header is {','.join(sub_rows[0])!r}, expected {','.join(HEADER)!r}")
    sub = {}
    for line, row in enumerate(sub_rows[1:], start=2):
        if len(row) != 2:
            raise KitError(f"{csv_path}:{line}: {len(row)} fields, expected 2 (Id,Category)")
        if row[0] in sub:
            raise KitError(f"{csv_path}:{line}: duplicate Id {row[0]!r}")
        sub[row[0]] = row[1]
    return score_predictions(sub, key, str(csv_path), str(answers_path))


def stale_vote(manifest) -> list[str]:
    """What changed in a vote's members since `kit ensemble` voted them (kit.records.SubmissionManifest):
    e.g. ["runs/x/a: trained on since (its best.pt is not the one voted)"]; [] when nothing did, or when
    the manifest (an older kit's) does not record what it voted."""
    # deferred: kit.records brings kit.runs and the run identity, which the CSV checks never need
    from kit.records import PredictionIds

    changes = []
    digests = manifest.member_test_probs_sha256 or []
    for i, member in enumerate(manifest.members or []):
        run = Path(member)
        settings = manifest.member_settings[i] if i < len(manifest.member_settings or []) else {}
        ckpt = run / f"{settings.get('which') or 'best'}.pt"
        if not run.is_dir():
            changes.append(f"{member}: gone (moved aside by --fresh?)")
        elif settings.get("checkpoint_sha256") and ckpt.is_file() and \
                sha256_file(ckpt) != settings["checkpoint_sha256"]:
            changes.append(f"{member}: trained on since (its {ckpt.name} is not the one voted)")
        elif i < len(digests) and digests[i]:
            try:
                now = PredictionIds.load(run).test_probs_sha256
            except KitError:
                now = None
            if now and now != digests[i]:
                changes.append(f"{member}: predicted again since")
    return changes
