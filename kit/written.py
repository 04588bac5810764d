"""The record of the checkpoints a run's own training wrote (checkpoints.json: each file's SHA-256, and
the run id they were written under), and the checks that refuse a checkpoint it does not hold: another
run's best.pt copied in is neither resumed, predicted nor voted as this run's. Moved out of kit.runs."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from kit.errors import KitError, first_line
from kit.fsio import json_bytes, read_json, sha256_file, write_bytes, write_json
from kit.identity import IDENTITY, START_OVER, read_identity

RUN_FILES = ("summary.json", "best.pt", "last.pt", "avg.pt")     # a dir holding any of these holds a run
WRITTEN = "checkpoints.json"     # {checkpoint file name: SHA-256} of what the run's own training wrote
CHECKPOINT_FILES = tuple(name for name in RUN_FILES if name.endswith(".pt"))
RUN_KEY = ".run"                # in WRITTEN: the run id (identity.json's "run") the checkpoints were written under
SUMMARY = "summary.json"
SUMMARIES = ".summaries"        # in WRITTEN ("recorded"): every summary.json this run's training wrote has an entry


def record_written(path: str | Path, digest: str | None = None, keep: bool = False) -> None:
    """Record `digest` (the file at `path`'s SHA-256 when None) in its run dir's checkpoints.json: the
    bytes its training wrote. keep: what was recorded stays accepted too (recorded before the new file
    takes its place, so that a kill at any point leaves the file one the record accepts)."""
    path = Path(path)
    try:
        written = _written(path.parent / WRITTEN)
    except KitError:            # damaged by hand: the trainer owns the record, and writes it anew
        written = {}
    digest = digest or sha256_file(path)
    earlier = _accepted(written.get(path.name)) if keep else []
    written[path.name] = [*earlier, digest] if earlier else digest
    written[SUMMARIES] = "recorded"
    run = _run_id(path.parent)
    if run:                     # the run these were written under: a record copied in from another run is not it
        if RUN_KEY not in written:      # from now on a checkpoint without an entry is not the run's: those an
            _enter_unrecorded(path.parent, written)     # older record (or none) let pass are entered as they are
        written[RUN_KEY] = run
    write_json(path.parent / WRITTEN, written)


def written_by_run(path: str | Path, digest: str | None = None) -> bool:
    """Whether `digest` (the file at `path` hashed, when None and a record asks) is the checkpoint
    `path` (its run dir's <which>.pt, on disk or not) as the run's own training wrote it last
    (checkpoints.json); True for a run of an older kit (no record). A record that names its run (every
    checkpoint is recorded before it takes its place) without an entry for `path`: False (probe 40: another
    run's avg.pt copied into a run that never averaged passed). An unreadable record is the trainer's to
    mend: KitError."""
    path = Path(path)
    return _by_run(path, _written(path.parent / WRITTEN), digest)


def _by_run(path: Path, written: dict, digest: str | None) -> bool:
    """written_by_run, with the record (`written`) read."""
    accepted = _accepted(written.get(path.name))
    if foreign_record(path.parent, written) or record_lost(path.parent, written):
        return False
    if not accepted:
        return RUN_KEY not in written
    return (digest or sha256_file(path)) in accepted


def write_summary(run_dir: str | Path, summary: dict) -> None:
    """summary.json with its digest in checkpoints.json: a summary the run's training did not write is not
    taken for the end of its training (probe 53: a hand-written one, well formed, made a run killed at step
    235 of 400 "already finished" and voted). As for a checkpoint, the new digest is recorded beside the old
    before the file takes its place and alone after (probe 54: a kill between the write and the record left
    the run's own summary taken for one written by hand)."""
    path = Path(run_dir) / SUMMARY
    data = json_bytes(summary)
    record_written(path, hashlib.sha256(data).hexdigest(), keep=True)
    write_bytes(path, data)
    record_written(path)


def keep_finished(run_dir: str | Path, done: dict | None, summary: dict) -> dict | None:
    """After a --resume of a run that had finished (`done`: its summary before; None when it had not), given
    what training returned (`summary`): when it trained nothing (the same step), summary.json written back as
    it was (training rewrote it, its rates as 0: probe 49 F5) and returned; else None."""
    if done is None or summary.get("step") != done.get("step"):
        return None
    write_summary(run_dir, done)
    return done


def summary_not_written(path: Path) -> str | None:
    """Why the summary.json at `path` is not one its run's training wrote (checkpoints.json, when it records
    summaries, has no entry for it or another digest), else None; an older kit's record says nothing."""
    try:
        written = _written(path.parent / WRITTEN)
    except KitError:            # said where the checkpoints are read
        return None
    if (SUMMARIES not in written and SUMMARY not in written) or sha256_file(path) in _accepted(written.get(SUMMARY)):
        return None         # an entry alone says summaries are recorded (probe 54 F6: .summaries deleted by hand)
    how = "another digest" if SUMMARY in written else "no entry"
    return f"not the summary this run's training wrote ({WRITTEN} has {how} for it: written by hand or copied in)"


def foreign_record(run_dir: Path, written: dict) -> bool:
    """Whether checkpoints.json (`written`) was written under another run than identity.json's: another run's
    checkpoints copied in with their record (probe 51: voted and sent as this member without a word), or an
    older kit's record, without a run id, that holds entries while identity.json has one (probe 52: a record
    from before run ids, or one whose id was deleted by hand, let them pass). An identity without a run id
    (an older kit's) makes no record foreign."""
    run = _run_id(run_dir)
    if not run:
        return False
    if RUN_KEY not in written:      # write_identity names the record's run before identity.json gains its id
        return any(key != RUN_KEY for key in written)
    return written[RUN_KEY] != run


def record_lost(run_dir: Path, written: dict) -> bool:
    """No checkpoints.json, or an empty one (`written`), beside an identity.json with a run id: a kit that names
    its runs records every checkpoint before it takes its place, so the checkpoints cannot be told from another
    run's (probe 53: another run's best.pt and last.pt copied in, the record deleted or emptied, were voted)."""
    return not written and bool(_run_id(run_dir))


def lost_record(run_dir: str | Path, what: str, written: dict | None = None) -> str | None:
    """What record_lost means for `what` (e.g. "best.pt") when the record (`written`, read from disk when
    None) is lost, else None (also when it cannot be read: its own error says so)."""
    run_dir = Path(run_dir)
    if written is None:
        try:
            written = _written(run_dir / WRITTEN)
        except KitError:
            return None
    if not record_lost(run_dir, written):
        return None
    return (f"{run_dir / WRITTEN}: missing or empty, while {IDENTITY} names the run (this kit records every "
            f"checkpoint it writes there): {what} cannot be told from another run's copied in; put the run's own "
            f"files back, or {START_OVER}")


def write_identity(run_dir: Path, identity: dict) -> None:
    """Write identity.json (kit.identity.run_identity's, with its run id) as a training session starts. A
    record without a run id (an older kit's run, resumed), or with another one while identity.json on disk
    has none (a kill between the two writes), first takes this run's id, with an entry for each checkpoint on
    disk that it let pass (the resume checked them just before), so that the run's own checkpoints are never
    taken for another run's."""
    record = run_dir / WRITTEN
    with contextlib.suppress(KitError):         # damaged: the trainer writes it anew at its next checkpoint
        written = _written(record)
        on_disk = any((run_dir / name).is_file() for name in CHECKPOINT_FILES)     # an older kit's, with no record
        if (written or on_disk) and (RUN_KEY not in written or not _run_id(run_dir)) and \
                written.get(RUN_KEY) != identity["run"]:
            _enter_unrecorded(run_dir, written)
            write_json(record, {**written, RUN_KEY: identity["run"]})
    write_json(run_dir / IDENTITY, identity)


def _enter_unrecorded(run_dir: Path, written: dict) -> None:
    """Enter in `written` each checkpoint on disk it has no entry for, as it is: what a record without a run
    id let pass, kept accepted once the record names its run."""
    for name in CHECKPOINT_FILES:
        if name not in written and (run_dir / name).is_file():
            written[name] = sha256_file(run_dir / name)


def _run_id(run_dir: Path) -> str | None:
    try:
        run = (read_identity(run_dir) or {}).get("run")
    except KitError:            # an unreadable identity is said by the checks that read it
        return None
    return run if isinstance(run, str) else None


def check_own_record(run_dir: str | Path, written: dict | None = None) -> None:
    """KitError when the run's checkpoints.json (`written`, read from disk when None) was written by another
    run (foreign_record), or cannot be read."""
    run_dir = Path(run_dir)
    if foreign_record(run_dir, _written(run_dir / WRITTEN) if written is None else written):
        raise KitError(f"{run_dir / WRITTEN}: written by another run than this one's {IDENTITY} (it names "
                       f"another run, or none: another run's checkpoints copied in with their record); put the "
                       f"run's own files back, or {START_OVER}")


def check_written(path: str | Path, digest: str | None = None) -> None:
    """KitError when the checkpoint `path` (SHA-256 `digest`, hashed when None) is not the one its run's
    training wrote: another run's best.pt copied in would be predicted, voted and sent as this member,
    or resumed as this run. A run of an older kit (no checkpoints.json) or a file outside a run dir passes."""
    path = Path(path)
    written = _written(path.parent / WRITTEN)           # read once for every check below
    if lost := lost_record(path.parent, path.name, written):
        raise KitError(lost)
    check_own_record(path.parent, written)
    if path.name not in written and not _by_run(path, written, digest):
        raise KitError(f"{path}: not a checkpoint this run's training wrote ({WRITTEN} has no entry for it: copied "
                       f"in); put the run's own file back, or {START_OVER}")
    if not _by_run(path, written, digest):
        raise KitError(f"{path}: not the checkpoint this run's training wrote (its SHA-256 differs from the one "
                       f"in {WRITTEN}: copied in, replaced or damaged since); put the run's own file back, "
                       f"or {START_OVER}")


def _accepted(recorded) -> list:
    return [recorded] if isinstance(recorded, str) else list(recorded or [])


def written_record(run_dir: str | Path) -> dict:
    """{checkpoint file name: SHA-256 (or those accepted)} the run's own training wrote ({} without a
    record); KitError when the record cannot be read."""
    return {k: v for k, v in _written(Path(run_dir) / WRITTEN).items() if not k.startswith(".")}


def _written(record: Path) -> dict:
    if not record.is_file():
        return {}
    try:
        written = read_json(record, "a run's record of its checkpoints")
    except (KitError, OSError) as e:
        raise KitError(f"{first_line(e, 160)}; {_record_ways(record)}") from None
    if not isinstance(written, dict) or not all(isinstance(v, str) or (isinstance(v, list) and all(
            isinstance(d, str) for d in v)) for v in written.values()):
        raise KitError(f"{record}: not a record of checkpoint digests (file name: SHA-256); {_record_ways(record)}")
    return written


def _record_ways(record: Path) -> str:
    """A damaged record's ways on, the safe one first (probe 45: only "delete it", which turns the check
    off), a recipe member's alone named (probe 46: a plain --fresh trains every member again)."""
    return (f"{START_OVER}; a recipe's member alone: --fresh --only {record.parent.name}; or, only if you know "
            f"its checkpoints are the run's own, delete the record and the \"run\" entry of its {IDENTITY} to skip "
            "their check")


def read_summary(path: Path) -> dict:
    """summary.json, read and of the shape training writes (the one rule: kit.rundir.RunDir and
    kit.runs.check_start both read a summary through it): KitError when it is not a JSON object, or a field
    kit reads is of another type (probe 51: {"stopped_reason": 5, "step": "x"} counted as finished and was
    voted; probe 52: a text best_val_acc, or a diverged run with no step, ended a recipe in a traceback), or
    one that every summary holds is missing (probe 52: "{}" counted as finished and was voted)."""
    value = read_json(path, "a run's summary.json")
    if not isinstance(value, dict):
        raise KitError(f"{path}: not a summary kit wrote (not a JSON object)")
    wrong = [key for key, kinds in _SUMMARY_FIELDS.items() if (key in value or key in _WRITTEN_ALWAYS) and
             (isinstance(value.get(key), bool) or not isinstance(value.get(key), kinds))]
    if wrong:
        raise KitError(f"{path}: not a summary kit wrote ({', '.join(wrong)} missing or of the wrong type)")
    odd = ([f"stopped_reason {value['stopped_reason']!r}"] if value["stopped_reason"] not in STOPPED_REASONS else []) \
        + ([f"step {value['step']}"] if value["step"] < 0 else [])
    if odd:         # probe 53: "interrupted" or "bogus" counted as finished, -5 steps were tabled
        raise KitError(f"{path}: not a summary kit wrote ({', '.join(odd)})")
    if problem := summary_not_written(path):
        raise KitError(f"{path}: {problem}")
    return value


_SUMMARY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "step": int, "params": int, "stopped_reason": str, "best_val_acc": (int, float), "seconds": (int, float)}
_WRITTEN_ALWAYS = ("step", "stopped_reason")      # kit.train.loop.Trainer.summary writes both, since the first kit
STOPPED_REASONS = ("budget", "early_stop", "time", "diverged")    # every reason kit.train.loop has ever written
