"""Run dirs as records: what defines a run (identity.json), who trains it (.lock), its checkpoints.

So a run is never reused for other data or settings, never trained by two processes at once,
and never silently replaced: starting over moves the old run aside (`<run>.old-<time>`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from kit.config import RunConfig, from_dict, load_toml, to_dict
from kit.errors import KitError
from kit.fsio import sha256_file, write_json
from kit.layout import load_tensors

IDENTITY = "identity.json"
LOCK = ".lock"
RUN_FILES = ("summary.json", "best.pt", "last.pt", "avg.pt")     # a dir holding any of these holds a run
# Settings that do not change what a run's weights mean, so they are left out of its identity:
# time budgets (a recipe's --minutes recomputes train.minutes from elapsed time on every re-run),
# switches for speed with the same maths (threads, torch.compile, where the store lives),
# prediction settings, the run's label, the experiment tracker that watches it (so a run resumes
# with tracking turned on or off), and the data dir's path: the data fingerprint covers the data
# itself, so a copied or moved data dir is still the same data.
NOT_IDENTITY = ("name", "data.data_dir", "data.store_on_gpu", "data.allow_external_labels", "train.minutes",
                "train.max_minutes", "train.stop_step", "train.cpu_threads", "train.compile", "train.log_with", "infer")
START_OVER = "start over with --fresh (the old run is moved aside, nothing is deleted)"
# Kit trains into a run dir (is_run_dir), a missing or empty folder, or one holding only what kit puts
# into a run dir before its marks: hidden files (.lock, temp files), kit.workers' member.toml and
# train.log, a student's teacher.npz (kit.pseudo.TEACHER) and teachers.json (kit.rounds), the trackers
# folder (kit.train.trackers.FOLDER) and the Kaggle launcher's launch.json.
KIT_BEFORE_RUN = ("member.toml", "train.log", "teacher.npz", "teachers.json", "trackers", "launch.json")
NAME_MAX = 255              # bytes in one file name on the usual file systems (ext4, APFS, NTFS, XFS)


# ---------------------------------------------------------------- identity
def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _defining(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_IDENTITY)


def flat_config(cfg) -> dict:
    """The resolved config as flat `section.key: value`."""
    return _flat(to_dict(cfg))


def config_identity(cfg) -> dict:
    """The resolved config as flat `section.key: value`, less the settings in NOT_IDENTITY."""
    return {k: v for k, v in flat_config(cfg).items() if _defining(k)}


def data_identity(store) -> dict:
    """The json files' hash and the packed features' content digest (dir kept only to report)."""
    # deferred: kit.data brings numpy, which this module's light importers (kit.records, and
    # through it every `kit kaggle` command and Kaggle worker process) never need
    from kit.data import layout_hash

    return {"dir": str(Path(store.layout.data_dir).resolve()), "layout": layout_hash(store.layout.data_dir),
            "features": store.content_digest}


def run_identity(cfg, store, budget: str | None = None, run_dir: str | Path | None = None) -> dict:
    """What defines a run trained from cfg on store's data. n_mels/n_classes come from the data
    (as training fills them in). run_dir: keep its recorded budget name when budget is None."""
    cfg = from_dict(to_dict(cfg))
    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    if budget is None and run_dir is not None:
        budget = (read_identity(run_dir) or {}).get("budget")
    identity = {"version": 1, "data": data_identity(store), "config": config_identity(cfg), "budget": budget}
    inputs = input_identity(cfg)
    if inputs:                          # pseudo-labels, a teacher, starting weights: their contents
        identity["inputs"] = inputs
    return identity


def require_same_data(run_dir: str | Path, data_dir: str | Path) -> None:
    """Refuse to predict or vote a run on a data dir whose json files changed since the run trained
    on it: its class indices would name other speakers (mapping.json), its split other utterances.
    Runs from before identity.json recorded the layout are not checked."""
    recorded = ((read_identity(run_dir) or {}).get("data") or {}).get("layout")
    if not recorded:
        return
    # deferred: kit.data brings numpy and torch, which this module's light importers never need
    from kit.data import layout_hash

    now = layout_hash(data_dir)
    if now != recorded:
        raise KitError(f"{data_dir}: its metadata.json, mapping.json or testdata.json changed since {run_dir} "
                       f"trained on it (layout {recorded}, now {now}), so the model's classes would name other "
                       f"speakers; restore those files, or train the run again on the data as it is now "
                       f"(`kit train ... --fresh`)")


INPUT_FILES = ("data.pseudo_labels", "train.teacher", "train.init_from")


def input_identity(cfg) -> dict:
    """Content digests of the files a run trains from besides the data (by setting name)."""
    out = {}
    for key in INPUT_FILES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value:
            path = Path(value)
            path = path / "last.pt" if path.is_dir() else path
            out[key] = sha256_file(path) if path.is_file() else None
    return out


def read_identity(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / IDENTITY
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KitError(f"{path}: unreadable run identity ({e}); {START_OVER}") from None
    if not (isinstance(value, dict) and isinstance(value.get("config"), dict) and isinstance(value.get("data"), dict)):
        raise KitError(f"{path}: malformed run identity; {START_OVER}")
    return value


def _legacy_identity(run_dir: Path) -> dict | None:
    """For a run dir from before identity.json: its config.toml, and its data dir by path only."""
    path = run_dir / "config.toml"
    if not path.is_file():
        return None
    try:
        cfg = from_dict(load_toml(path), where=str(path))
    except KitError:
        return {"legacy": True, "data": {"dir": None}, "config": {"config.toml": "unreadable"}}
    return {"legacy": True, "data": {"dir": str(Path(cfg.data.data_dir).resolve())},
            "config": config_identity(cfg)}


def identity_changes(old: dict, new: dict, config_prefix: str = "") -> list[str]:
    """What differs between two identities, as short phrases ("data", "model.d_model 16 -> 32",
    "budget quick -> full"). Only config keys starting with config_prefix are compared; a key
    the old identity lacks (a setting added to kit since) counts only if it is not the default."""
    changes = []
    was, now = old.get("data", {}), new["data"]
    if "features" in was:
        if (was.get("layout"), was.get("features")) != (now["layout"], now["features"]):
            where = "same dir, files changed" if was.get("dir") == now["dir"] else f"{was.get('dir')} -> {now['dir']}"
            changes.append(f"data ({where})")
    elif was.get("dir") != now["dir"]:
        changes.append(f"data ({was.get('dir')} -> {now['dir']})")
    defaults = config_identity(RunConfig())
    before, after = old.get("config", {}), new["config"]
    for key in sorted(set(before) | set(after)):
        if not key.startswith(config_prefix) or key not in after:
            continue
        value = before.get(key, defaults.get(key))
        if value != after[key]:
            changes.append(f"{key} {value!r} -> {after[key]!r}")
    if not config_prefix and old.get("inputs", {}) != new.get("inputs", {}):
        changed = sorted(k for k in set(old.get("inputs", {})) | set(new.get("inputs", {}))
                         if old.get("inputs", {}).get(k) != new.get("inputs", {}).get(k))
        changes.append(f"contents of {', '.join(changed)}")
    if not old.get("legacy") and not config_prefix and old.get("budget") != new.get("budget"):
        changes.append(f"budget {old.get('budget')} -> {new.get('budget')}")
    return changes


def describe(changes: list[str], most: int = 4) -> str:
    shown = ", ".join(changes[:most])
    return shown + (f" and {len(changes) - most} more" if len(changes) > most else "")


def holds_run(run_dir: str | Path) -> str | None:
    """"finished" (summary.json), "unfinished" (checkpoints, no summary) or None (nothing to lose)."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").is_file():
        return "finished"
    return "unfinished" if any((run_dir / n).is_file() for n in RUN_FILES) else None


def is_run_dir(path: str | Path) -> bool:
    """path holds kit's marks of a run: identity.json, or config.toml beside split.json or a run file (a
    run from before identity.json). A user's own config.toml, or summary.json, alone is no run: what
    `kit train --fresh` moves aside is a run, never a folder that merely has a file of that name."""
    path = Path(path)
    if (path / IDENTITY).is_file():
        return True
    return (path / "config.toml").is_file() and any((path / n).is_file() for n in ("split.json", *RUN_FILES))


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
    old = read_identity(run_dir) or _legacy_identity(run_dir)
    if old is None:
        return ["config (no config.toml or identity.json)"]
    changes = identity_changes(old, identity)
    if not changes and old.get("legacy"):
        write_json(run_dir / IDENTITY, identity)
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
        hint = "" if held == "finished" else "--resume to continue it, or "
        article = "an" if held[0] in "aeiou" else "a"
        raise KitError(f"{run_dir}: holds {article} {held} run; {hint}{START_OVER}, or train into another --out")


def check_resume(run_dir: str | Path, identity: dict) -> None:
    """Refuse to resume run_dir on other data or with another model shape."""
    run_dir = Path(run_dir)
    old = read_identity(run_dir) or _legacy_identity(run_dir)
    if old is None:
        return
    changes = identity_changes(old, identity, "model.")     # the data, and the model's shape
    if changes:
        raise KitError(f"{run_dir}: cannot resume: it was trained on other data or another model shape "
                       f"({describe(changes)}); {START_OVER}, or train into another --out")


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
    return path.with_name(fitted(path.name, f".old-{time.strftime('%Y%m%d-%H%M%S')}"))


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
    with name_fits(run_dir, "run dir"):
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            raise KitError(f"{run_dir}: another trainer (pid {pid}) is working in this run dir; "
                           "wait for it to finish or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()


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


# ---------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | Path) -> dict:
    """A kit checkpoint (dict with "model"), or one clear KitError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: missing")
    try:
        ckpt = load_tensors(path)       # torch's warnings on a garbage header stay off stderr
    except Exception as e:        # torch raises many types for empty, truncated or corrupt files
        detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else "no detail"
        size = path.stat().st_size
        raise KitError(f"{path}: unreadable checkpoint ({'empty file' if size == 0 else f'{size} bytes'}, "
                       f"truncated or corrupt: {type(e).__name__}: {detail}); restore it or {START_OVER}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise KitError(f"{path}: not a kit checkpoint (no model weights in it)")
    return ckpt
