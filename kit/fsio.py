"""Atomic file writes and small file helpers shared by every module.

Every file kit writes (checkpoints, CSVs, ledger, json) goes through here so an
interrupted process never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kit.errors import KitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(tmp: Path, path: Path) -> None:
    """os.replace(tmp, path); an error names `path`, the user's file, not the hidden temp one
    (OSError.filename is the source, which kit.errors.path_problem reports)."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the same folder; rename it over `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():        # mkstemp makes 0600 files; give the file the usual umask mode
            os.chmod(tmp, 0o666 & ~_umask())
        _replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_left_temps(path: str | os.PathLike) -> None:
    """Remove the temp files atomic_path made beside PATH (.NAME.XXXX.tmp) that a killed writer left.
    Only for a caller holding a lock every writer of PATH takes: then no writer of them is alive."""
    path = Path(path)
    for left in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if "." in left.name[len(path.name) + 2:-4]:     # another file's (NAME.pending's): mkstemp's part has none
            continue
        with contextlib.suppress(OSError):
            if left.is_file():
                left.unlink()


def _owned(parent: Path, prefix: str) -> Iterator[tuple[Path, int]]:
    """(folder, pid) of the folders in parent named PREFIX PID@HOST.XXXX that this machine's processes made."""
    host = socket.gethostname()
    for folder in parent.glob(f"{glob.escape(prefix)}*@*"):
        pid, _, rest = folder.name[len(prefix):].partition("@")
        if pid.isdigit() and rest.rpartition(".")[0] == host and folder.is_dir():
            yield folder, int(pid)


def _writers(path: Path) -> Iterator[tuple[Path, int]]:
    """(folder, pid) of the hidden folders beside `path` that atomic_dir made on this machine."""
    return _owned(path.parent, f".{path.name}.")


def temp_dir(prefix: str) -> Path:
    """A new private folder in the temp dir, named PREFIX PID@HOST.XXXX, after removing those a process
    of this machine that is gone left there (a SIGKILL runs no cleanup)."""
    parent = Path(tempfile.gettempdir())
    _sweep_orphans(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}@{socket.gethostname()}.", dir=parent))


def live_writers(path: str | os.PathLike) -> list[int]:
    """The pids of other live processes on this machine writing `path` with atomic_dir now."""
    return [pid for _, pid in _writers(Path(path)) if pid != os.getpid() and process_alive(pid)]


def _sweep_orphans(parent: Path, prefix: str) -> None:
    """Remove the folders in parent named PREFIX PID@HOST.XXXX that a killed (SIGKILL, out of memory)
    process of this machine left: that process is gone. A folder of a live process, of another machine
    or of an older kit (no pid in its name) is left alone."""
    for folder, pid in list(_owned(parent, prefix)):
        if not process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """pid is a live process on this machine (another user's counts); a zombie its parent has not reaped
    yet has ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:                 # no /proc (not Linux), or it ended just now
        return True


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, what: str = "files", done: str | None = None) -> Iterator[Path]:
    """Yield a new empty folder beside `path` (hidden: .NAME.PID@HOST.XXXX); when the block succeeds it gets
    the usual umask mode and is renamed to `path`, replacing what was there, so nobody ever sees a
    half-written folder at `path`. On failure it is removed. `what` names the contents in the
    error when the folder cannot be made. `done`: the file that marks a finished folder; when
    `path` has it as the block ends (another process finished first), that folder is kept and
    this one discarded."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_orphans(path.parent, f".{path.name}.")      # a killed atomic_dir's hidden folders
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}@{socket.gethostname()}.", dir=path.parent))
    except OSError as e:
        why = "part of the path is a file, not a folder" if e.errno in (errno.EEXIST, errno.ENOTDIR) else e.strerror
        raise KitError(f"{path}: cannot write the {what} here ({why})") from None

    def finished() -> bool:
        return done is not None and (path / done).is_file()

    try:
        yield tmp
        if finished():
            return
        os.chmod(tmp, 0o777 & ~_umask())             # mkdtemp makes it private
        if path.exists():                            # an older or half-written one
            shutil.rmtree(path, ignore_errors=True)
        try:
            _replace(tmp, path)
        except OSError:
            if not finished():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | os.PathLike, what: str = "a JSON file") -> dict:
    """The JSON object in `path`; KitError naming the file when it is missing, a folder, malformed or
    not an object."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: {'a folder' if path.is_dir() else 'missing'} (expected {what})")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KitError(f"{path}: malformed JSON ({e})") from None
    except RecursionError:
        raise KitError(f"{path}: malformed JSON (nested too deeply to read)") from None
    if not isinstance(value, dict):
        raise KitError(f"{path}: malformed JSON (expected an object at the top level)")
    return value


# A full disk (or quota) while writing: one line naming the file, the old file left as it was.
_FULL = (errno.ENOSPC, errno.EDQUOT)
# torch.save reports a failed write as RuntimeError("[enforce fail at inline_container.cc:...]
# PytorchStreamWriter failed writing file ...: file write failed" or "... unexpected pos ..."), or, when
# the disk fills as the file is closed, "basic_ios::clear: iostream error" (probe 21).
_TORCH_WRITE_FAILED = ("inline_container", "PytorchStreamWriter", "file write failed", "iostream error")


def _free_bytes(path: Path) -> str:
    try:
        return str(shutil.disk_usage(path.parent).free)
    except OSError:
        return "unknown"


def _not_written(path: str | os.PathLike, what: str) -> KitError:
    return KitError(f"{path}: could not write the {what} (disk full?: {_free_bytes(Path(path))} bytes free)")


@contextlib.contextmanager
def _disk_full_is_one_line(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Within the block, a write that fails for want of space is a KitError naming the file."""
    try:
        yield
    except OSError as e:
        if e.errno not in _FULL:
            raise
        raise _not_written(path, what) from None


@contextlib.contextmanager
def staged(path: str | os.PathLike, data: bytes, what: str = "file") -> Iterator[Path]:
    """`data` written and synced to a temp file beside `path`, yielded; renamed over `path` once the
    block succeeds. A failed block, or a full disk (one line naming `path`), leaves `path` as it was:
    several files can be staged and checked before any of them replaces what is there."""
    with _disk_full_is_one_line(path, what), atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        yield tmp


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with staged(path, data):
        pass


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    """How kit writes a json file: indented, keys in their order, a line end at the end."""
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, json_bytes(obj))


def save_torch(obj: Any, path: str | os.PathLike, before_rename: Callable[[Path], None] | None = None) -> None:
    """torch.save a checkpoint atomically; on a full disk one line, and the old file kept.
    before_rename(tmp): called with the written temp file just before it takes `path`'s place."""
    # deferred: torch: the light entry points (`kit --help`, the Kaggle worker) import kit.fsio
    import torch

    with _disk_full_is_one_line(path, "checkpoint"), atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            if not any(mark in str(e) for mark in _TORCH_WRITE_FAILED):
                raise
            raise _not_written(path, "checkpoint") from None
        if before_rename is not None:
            before_rename(tmp)


def save_numpy(path: str | os.PathLike, array) -> None:
    import numpy as np  # deferred: the Kaggle worker imports kit.fsio and needs no numpy

    with _disk_full_is_one_line(path, "array"), atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with _disk_full_is_one_line(path, "CSV"), atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection): a ledger's
# message typed by a user, `=HYPERLINK(...)`, would run when the ledger is opened in one (probe 44 F3)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading apostrophe before a formula's first character
    (and before an apostrophe that would read as one), which spreadsheet_text takes off again; in
    UTF-8 (utf8_text)."""
    if not isinstance(text, str):                   # a cell pandas left empty (NaN): as it is
        return text
    text = utf8_text(text)
    return "'" + text if text.startswith(_FORMULA_STARTS) or _escaped(text) else text


def utf8_text(text: str) -> str:
    """TEXT as UTF-8 can hold it: bytes of a name or argument that were not UTF-8 (Python keeps them as
    lone surrogates) become U+FFFD (probe 49: a message typed in a Latin-1 terminal, or a folder named
    so, made the ledger's write fail after Kaggle had accepted the submission)."""
    if not isinstance(text, str):
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:          # a surrogate no undecodable byte made
            return text.encode("utf-8", "replace").decode("utf-8")


def spreadsheet_text(cell: str) -> str:
    """The text spreadsheet_safe made `cell` from."""
    return cell[1:] if isinstance(cell, str) and _escaped(cell) else cell


def _escaped(text: str) -> bool:
    """An apostrophe before a formula's first character or before another apostrophe: spreadsheet_safe's."""
    return text.startswith("'") and text[1:].startswith(("'", *_FORMULA_STARTS))


def copy_file(src: str | os.PathLike, dst: str | os.PathLike, what: str = "copy") -> None:
    """Copy `src` (its bytes and times) to `dst` by way of a temp file beside it, renamed once whole: a
    full disk leaves no empty or partial `dst` (a backup rotation would keep it over a good one), only
    one line naming `dst`."""
    with _disk_full_is_one_line(dst, what), atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, busy: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block; for read-modify-write files. `busy` is
    called once, before waiting, when another process holds the lock (a line saying why we wait)."""
    import fcntl  # deferred: POSIX only, needed only by the code that takes a lock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        if busy is None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        else:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy()
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
