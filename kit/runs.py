"""Run dirs as records: whether a folder holds a run, who trains it (.lock), starting over, its
checkpoints; what defines a run (identity.json) is kit.identity's.

So a run is never reused for other data or settings, never trained by two processes at once,
and never silently replaced: starting over moves the old run aside (`<run>.old-<time>`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from kit.config import dump_toml, load_toml
from kit.errors import KitError, first_line
from kit.fsio import write_json, write_text
from kit.identity import IDENTITY, START_OVER, identity_changes, legacy_identity, read_identity
from kit.layout import load_tensors
from kit.names import old_suffix
from kit.written import RUN_FILES, SUMMARY, read_summary

LOCK = ".lock"
# Kit trains into a run dir (is_run_dir), a missing or empty folder, or one holding only what kit puts
# into a run dir before its marks: hidden files (.lock, temp files), kit.workers' member.toml and
# train.log, a student's teacher.npz (kit.pseudo.TEACHER) and teachers.json (kit.rounds), the trackers
# folder (kit.train.trackers.FOLDER) and the Kaggle launcher's launch.json.
KIT_BEFORE_RUN = ("member.toml", "train.log", "teacher.npz", "teachers.json", "trackers", "launch.json")
NAME_MAX = 255              # bytes in one file name on the usual file systems (ext4, APFS, NTFS, XFS)


def holds_run(run_dir: str | Path) -> str | None:
    """What a start over run_dir would lose: "summary" (a session of its training ended: summary.json),
    "checkpoints" (checkpoints, no summary) or None (nothing). Whether the run is finished is
    kit.rundir.RunDir.finished's to say (a summary that says it stopped at a time limit, or cannot be read,
    is not), never this."""
    run_dir = Path(run_dir)
    if (run_dir / SUMMARY).is_file():
        return "summary"
    return "checkpoints" if any((run_dir / n).is_file() for n in RUN_FILES) else None


def is_run_dir(path: str | Path) -> bool:
    """path holds kit's marks of a run: identity.json, or config.toml beside split.json or a run file (a
    run from before identity.json). A user's own config.toml, or summary.json, alone is no run: what
    `kit train --fresh` moves aside is a run, never a folder that merely has a file of that name."""
    path = Path(path)
    if (path / IDENTITY).is_file():
        return True
    return (path / "config.toml").is_file() and any((path / n).is_file() for n in ("split.json", *RUN_FILES))


def check_resume_target(out: str | Path, log: Callable[[str], None]) -> None:
    """`--resume` of `kit train` or `kit distill` into --out: a missing folder is refused (a typo in --out
    trained a whole run from step 0 without a word: probe 55 for the student); an empty one, or a trainer's
    killed before its first save, trains from step 0 and says so."""
    if not Path(out).exists():
        raise KitError(f"{out}: no run to resume (no such folder); leave out --resume to start one there")
    if not Path(out).is_dir():          # probe 56: "nothing to resume yet" was said of a file first
        raise KitError(f"{out}: a file, not a run dir; give --out the run's folder")
    if not is_run_dir(out):
        log(f"{out}: nothing to resume yet (no checkpoint): training from step 0")


def users_files(path: str | Path) -> str | None:
    """A few names of the files in folder path that kit did not put there, when it is not a run dir
    (KIT_BEFORE_RUN): "notes.txt, runs and 2 more"; None for a run dir, or a missing or empty folder."""
    path = Path(path)
    if not path.is_dir() or is_run_dir(path):
        return None
    names = sorted(p.name for p in path.iterdir() if not p.name.startswith(".") and p.name not in KIT_BEFORE_RUN)
    return (", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")) or None


@contextlib.contextmanager
def name_fits(path: str | Path, flag: str = "--out") -> Iterator[None]:
    """Refuse a path the file system cannot hold, a name over NAME_MAX bytes (checked first) or a whole
    path too long (its OSError), in one KitError naming it: not an OSError from deep inside kit."""
    part = max(Path(path).parts, key=lambda p: len(os.fsencode(p)), default="")
    if len(os.fsencode(part)) > NAME_MAX:
        raise KitError(f"{path}: the name {part[:40]}... is {len(os.fsencode(part))} bytes, longer than the file "
                       f"system's {NAME_MAX}; choose a shorter {flag}")
    try:
        yield
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        raise KitError(f"{path}: path too long for the file system ({e.strerror}); choose a shorter {flag}") from None


def check_out(run_dir: str | Path) -> None:
    """Refuse, before anything is written, a run dir kit must not train into: a name too long for the
    file system, or an existing folder of someone's own files that is not a run dir (kit would write
    config.toml, metrics.csv, curves.png, best.pt... over theirs, and --fresh would move theirs aside).
    A missing or empty folder, one holding only kit's files, and a run dir pass."""
    run_dir = Path(run_dir)
    with name_fits(run_dir):
        theirs = users_files(run_dir)
    if theirs:
        where = f"{run_dir} (that is {run_dir.resolve()})" if ".." in run_dir.parts else run_dir
        raise KitError(f"{where}: an existing folder that is not a kit run dir (it holds {theirs}); kit would "
                       "write its files over yours: choose another --out (a new or empty folder; --runs for a recipe)")


def reuse_changes(run_dir: str | Path, identity: dict) -> list[str]:
    """What differs between the run held in run_dir and `identity` ([] when it may be reused or
    there is no run). A run from before identity.json is compared by config.toml and data dir
    path, and adopted (identity.json written) when they agree."""
    run_dir = Path(run_dir)
    if holds_run(run_dir) is None:
        return []
    old = read_identity(run_dir) or legacy_identity(run_dir)
    if old is None:
        return ["config (no config.toml or identity.json)"]
    changes = identity_changes(old, identity)
    if not changes and old.get("legacy"):
        write_json(run_dir / IDENTITY, identity)
    return changes


def update_infer(run_dir: str | Path, infer: dict) -> list[str]:
    """Give the run's config.toml the [infer] table `infer` (a recipe's, changed since the run was
    trained: the identity leaves [infer] out, as it changes how the weights are predicted, not what
    they are), so the next prediction is made that way and the old one is no longer current
    (kit.records.predictions_current). Returns the changes ("mode = auto -> full"); [] when none,
    or when the run has no config.toml yet."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        return []
    config = load_toml(path)
    old = config.get("infer", {})
    changes = [f"infer.{k} = {old.get(k)!r} -> {v!r}" for k, v in infer.items() if old.get(k) != v]
    if changes:
        write_text(path, dump_toml({**config, "infer": {**old, **infer}}))
    return changes


# ---------------------------------------------------------------- starting and resuming
def check_start(run_dir: str | Path, resume: bool) -> None:
    """Refuse a start that would lose a run: a fresh start over an existing run, or a resume
    with no last.pt (best.pt alone cannot continue: no optimizer state)."""
    run_dir = Path(run_dir)
    held = holds_run(run_dir)
    if resume:
        if held and not (run_dir / "last.pt").is_file():
            kept = ", ".join(n for n in RUN_FILES if (run_dir / n).is_file())
            raise KitError(f"{run_dir}/last.pt: missing, so the run cannot resume ({kept} kept and usable as "
                           f"they are); to train again, {START_OVER}")
        return
    if held:
        what, hint = _held(run_dir, held)
        raise KitError(f"{run_dir}: holds {what}; {hint}{START_OVER}, or train into another --out")


def _held(run_dir: Path, held: str) -> tuple[str, str]:
    """What a fresh start over run_dir would lose, in words, and the --resume hint when a resume would train it
    on: a run whose summary.json is damaged, or says it stopped at a session's time limit, is not finished
    (kit.rundir.RunDir.finished; the summary read by the same rule, kit.written.read_summary)."""
    resume = "--resume to continue it, or "
    if held == "checkpoints":
        return "an unfinished run", resume
    try:
        summary = read_summary(run_dir / SUMMARY)
    except KitError:
        return "a run whose summary.json cannot be read", resume
    if summary["stopped_reason"] == "time":
        return "an unfinished run (it stopped at its session's time limit)", resume
    return "a finished run", ""


def move_aside(run_dir: str | Path, dest: str | Path) -> Path:
    """Rename run_dir to dest (a fresh name if taken); refused while a trainer holds it, and for a
    folder of someone's own files (users_files): starting over moves a run, never a user's folder."""
    run_dir, dest = Path(run_dir), Path(dest)
    theirs = users_files(run_dir)
    if theirs:
        raise KitError(f"{run_dir}: not a kit run dir (it holds {theirs}), so it is not moved aside; choose "
                       "another --out (a new or empty folder; --runs for a recipe)")
    with run_lock(run_dir), name_fits(dest, "run dir name"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        final, n = dest, 1
        while final.exists():
            n += 1
            final = dest.with_name(fitted(dest.name, f"-{n}"))
        os.rename(run_dir, final)
    return final


def fitted(name: str, suffix: str) -> str:
    """name + suffix within NAME_MAX bytes, name cut short (at a whole character) when needed: a run
    with a long name still has a place to be moved aside to."""
    room = NAME_MAX - len(os.fsencode(suffix))
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return name + suffix


def old_name(path: str | Path) -> Path:
    """<path>.old-<time>: where a run goes when it is started over (a long name is cut to fit)."""
    path = Path(path)
    return path.with_name(fitted(path.name, old_suffix()))


def clean_leftovers(run_dir: str | Path) -> list[str]:
    """Delete temp files of atomic writes a killed process left (.NAME.XXXX.tmp, see kit.fsio);
    called with the run dir locked, so no writer of this dir is alive."""
    removed = []
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        for path in run_dir.glob(".*.tmp"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return removed


# ---------------------------------------------------------------- one trainer per run dir
@contextlib.contextmanager
def run_lock(run_dir: str | Path, primary: bool = True) -> Iterator[None]:
    """Hold run_dir/.lock (fcntl.flock) for the block; refuse at once when another process
    holds it. The kernel drops the lock when the holder dies, however it dies."""
    if not primary:                 # DDP: rank 0 holds the lock for all ranks
        yield
        return
    run_dir = Path(run_dir)
    made = not run_dir.exists()         # a start refused before it wrote anything takes its folder back
    with name_fits(run_dir, "run dir"):
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK, "a+")
    try:
        if pid := _taken_by(f):
            raise KitError(f"{run_dir}: another trainer (pid {pid}) is working in this run dir; "
                           "wait for it to finish or stop it")
        try:
            yield
        except BaseException:
            if made:
                _remove_if_bare(run_dir)
            raise
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()


def _taken_by(f) -> str | None:
    """Take the open file f's lock (fcntl.flock, exclusive) and write this process's pid in it; when another
    process holds it, the pid it wrote ("unknown" if none) and nothing taken."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        return f.read().strip() or "unknown"
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return None


def _remove_if_bare(run_dir: Path) -> None:
    """The folder run_lock made, removed when it holds nothing but its lock (inputs refused before the
    first write): a failed `kit train` leaves no empty run dir behind. Under the lock, so no other
    trainer is in it."""
    with contextlib.suppress(OSError):
        if os.listdir(run_dir) == [LOCK]:
            (run_dir / LOCK).unlink()
            run_dir.rmdir()


RECIPE_LOCK = ".recipe.lock"          # in RUNS/<recipe>/: held by every `kit recipe run` of it


@contextlib.contextmanager
def recipe_lock(root: str | Path, alone: bool) -> Iterator[Callable[[], None]]:
    """Held by every `kit recipe run` of RUNS/<recipe> while it runs, shared. `alone` (--fresh, which
    moves the members aside) takes it exclusively, at once or not at all, and gets `share` to hand it
    back once they are moved: another run's vote or submission never loses its members mid-way."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        f = open(root / RECIPE_LOCK, "a+")
    except OSError as e:                # a read-only runs folder: nothing there can be moved or changed
        if alone:
            raise KitError(f"{root}: cannot be written ({e.strerror}), so --fresh cannot move its members "
                           "aside") from None
        yield lambda: None
        return
    with f:
        if alone:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KitError(f"{root}: another `kit recipe run` of this recipe is running (it holds "
                               f"{root / RECIPE_LOCK}), so --fresh moved nothing aside: wait for it to end, or "
                               "stop it") from None
        else:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)          # waits only while a --fresh moves members aside
        try:
            yield lambda: fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def lock_holder(run_dir: str | Path) -> str | None:
    """The pid (as written) of the process holding run_dir's lock, or None when free."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "unknown"
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def member_claims(root: str | Path) -> Iterator[Callable[[list[str]], None]]:
    """claim(names): RUNS/<recipe>/.<name>.claim held by this `kit recipe run` for each member it may train, until
    the block ends. A second run of the same members is refused at once, even one started before the first one's
    trainers took their run dirs' .lock (probe 57 F1: its trainer's refusal went into the running member's train.log
    and was reported as "member a failed")."""
    root = Path(root)
    with contextlib.ExitStack() as held:
        def claim(names: list[str]) -> None:
            for name in names:
                try:
                    f = held.enter_context(open(root / f".{name}.claim", "a+"))
                except OSError:         # a read-only runs folder: nothing trains there
                    continue
                if pid := _taken_by(f):
                    raise KitError(f"{root / name}: another `kit recipe run` (pid {pid}) is training this member now; "
                                   "wait for it to end, or stop it")
        yield claim


# ---------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | Path, fix: str = f"restore it or {START_OVER}") -> dict:
    """A kit checkpoint (dict with "model"), or one clear KitError naming the file and, for a damaged
    one, `fix` (what mends it where it is read)."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: missing")
    try:
        ckpt = load_tensors(path)       # torch's warnings on a garbage header stay off stderr
    except Exception as e:        # torch raises many types for empty, truncated or corrupt files
        detail = first_line(e, 120)
        size = path.stat().st_size
        raise KitError(f"{path}: unreadable checkpoint ({'empty file' if size == 0 else f'{size} bytes'}, "
                       f"truncated or corrupt: {type(e).__name__}: {detail}); {fix}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise KitError(f"{path}: not a kit checkpoint (no model weights in it)")
    return ckpt


def trained_on_validation(run_dirs) -> list[str]:
    """The run dirs whose config.toml trains on the validation split too (a recipe's refit, its student
    after one): their validation scores are in-sample, no estimate of the test score. A config that
    cannot be read is left to the command's own checks."""
    found = []
    for run in run_dirs:
        with contextlib.suppress(KitError, OSError):
            if load_toml(Path(run) / "config.toml").get("data", {}).get("train_on_val") is True:
                found.append(str(run))
    return found


def warn_in_sample(run_dirs, log) -> None:
    """One line when some of run_dirs trained on validation (see trained_on_validation)."""
    found = trained_on_validation(run_dirs)
    if found:
        log(f"warning: {', '.join(found)} trained on the validation split too (a refit): the validation "
            "scores below are in-sample, not estimates of the test score, and a method or weights chosen by "
            "them are chosen on what the members saw; vote the members they were refit from instead")
