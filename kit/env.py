"""Where kit runs and where its files go: the writable cache for a data dir (read-only inputs
such as /kaggle/input included), the competition data under /kaggle/input, visible progress.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from kit.layout import LAYOUT_FILES

KAGGLE_ROOT = "/kaggle"                 # KIT_KAGGLE_ROOT relocates it (the local stand-in's kernels, tests)
KAGGLE_INPUT = "input"                  # under the root; KIT_KAGGLE_INPUT relocates it alone
KAGGLE_WORKING = "working"              # likewise KIT_KAGGLE_WORKING
SEARCH_DEPTH = 3                        # /kaggle/input/<competition>/<folder>/metadata.json
CACHE_DIRNAME = ".kit-cache"            # beside the data, when it is writable
# Popen keywords for a child in a process group of its own, so that os.killpg ends it with its
# children: process_group is Python 3.11's; on 3.10 a new session (setsid) makes the new group.
NEW_PROCESS_GROUP: dict[str, Any] = ({"process_group": 0} if sys.version_info >= (3, 11)
                                     else {"start_new_session": True})

_noted: set[str] = set()


def python_module(module: str) -> list[str]:
    """The command that runs `python -m module` with this interpreter, the current folder left off its
    import path: a folder named `kit` there (a clone of kit, seen from its parent; a Kaggle notebook's
    working folder) was imported in place of the installed package, and every recipe member failed with an
    ImportError (probe 58 F1). `-P` is Python 3.11's; on 3.10 the same is done before runpy starts it."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", module]
    return [sys.executable, "-c", "import runpy, sys; del sys.path[0]; "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"]


def writable(path: str | os.PathLike) -> bool:
    """Can files be created in path (or, when it does not exist yet, in its nearest parent)?"""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK | os.X_OK)


def _named(root: Path, data_dir: Path) -> Path:
    """A folder of its own per data dir under a shared cache root: a store's clean-up of older
    stores must not touch another data dir's."""
    full = str(Path(data_dir).resolve())
    return root / f"{Path(full).name or 'data'}-{hashlib.sha256(os.fsencode(full)).hexdigest()[:12]}"


def cache_dir(data_dir: str | os.PathLike) -> tuple[Path, str | None]:
    """The folder for data_dir's packed store and split, and a line for the user saying where
    it went when that is not beside the data (None when it is). In order: $KIT_CACHE (what
    `--cache DIR` sets, so worker processes inherit it), DATA/.kit-cache when it can be written,
    on Kaggle the temporary folder's kit-cache (as a kernel's: /kaggle/working is the saved
    output), else $XDG_CACHE_HOME/kit (~/.cache/kit); each but
    DATA/.kit-cache in a folder of its own per data dir."""
    data_dir = Path(data_dir)
    chosen = os.environ.get("KIT_CACHE")
    if chosen:
        where = _named(Path(chosen).expanduser(), data_dir)
        return where, f"packed store and split of {data_dir} in {where} (--cache / KIT_CACHE)"
    beside = data_dir / CACHE_DIRNAME
    if writable(beside):
        return beside, None
    if kaggle_working().is_dir():               # a Kaggle notebook: not /kaggle/working, which a saved
        where = _named(Path(tempfile.gettempdir()) / "kit-cache", data_dir)     # version keeps (2.8 GiB)
    else:
        where = _named(user_cache(), data_dir)
    return where, (f"{data_dir} is read-only: its packed store and split go to {where} "
                   "(choose with --cache DIR or KIT_CACHE)")


def user_cache() -> Path:
    """kit's folder in the user's cache: $XDG_CACHE_HOME/kit (~/.cache/kit)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kit"


def _under_kaggle(override: str, name: str) -> Path:
    return Path(os.environ.get(override) or Path(os.environ.get("KIT_KAGGLE_ROOT") or KAGGLE_ROOT) / name)


def kaggle_input() -> Path:
    """/kaggle/input: $KIT_KAGGLE_INPUT, else $KIT_KAGGLE_ROOT/input, else /kaggle/input."""
    return _under_kaggle("KIT_KAGGLE_INPUT", KAGGLE_INPUT)


def kaggle_working() -> Path:
    """/kaggle/working: $KIT_KAGGLE_WORKING, else $KIT_KAGGLE_ROOT/working, else /kaggle/working."""
    return _under_kaggle("KIT_KAGGLE_WORKING", KAGGLE_WORKING)


def note_cache(note: str | None) -> None:
    """cache_dir's line on stderr, once per process."""
    if note is None or note in _noted:
        return
    _noted.add(note)
    note_line(note)


def note_line(line: str) -> None:
    """One line for the user on stderr, as kit's notes look (a packed store rebuilt, kit.data)."""
    print(f"kit: {line}", file=sys.stderr, flush=True)


def kaggle_data_dir() -> Path | None:
    """The competition data under /kaggle/input (see kaggle_input): the shallowest folder,
    at most SEARCH_DEPTH levels down, holding metadata.json, testdata.json and mapping.json.
    None when there is no such root or no such folder."""
    root = kaggle_input()
    if not root.is_dir():
        return None
    level = [root]
    for _ in range(SEARCH_DEPTH + 1):
        found = sorted(d for d in level if all((d / n).is_file() for n in LAYOUT_FILES))
        if found:
            return found[0]
        below: list[str] = []
        for d in level:
            try:                        # a competition folder holds tens of thousands of files
                below.extend(e.path for e in os.scandir(d)
                             if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
        level = [Path(p) for p in sorted(below)]
    return None


def progress_visible() -> bool:
    """Whether a progress bar on stderr will be seen: a terminal, or a notebook cell running
    `!kit ...` (Jupyter, Colab; not a Kaggle batch run, whose log would keep every update).
    KIT_PROGRESS=0/1 decides instead."""
    forced = os.environ.get("KIT_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    if sys.stderr.isatty():
        return True
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") == "Batch":
        return False
    return "JPY_PARENT_PID" in os.environ or "COLAB_RELEASE_TAG" in os.environ


def die_with_parent(parent: int | None = None):
    """A preexec_fn for child processes: on Linux, the kernel sends the child SIGKILL when the
    process that started it dies (prctl PR_SET_PDEATHSIG), so no trainer outlives its recipe and no
    Kaggle worker submits for a `kit submit` that was killed (it could not record the submission).
    parent: the pid to die with (default this process); a spawned pool worker calls it with its parent's."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl      # looked up before the fork
    except (OSError, AttributeError):                         # not Linux
        return None
    parent = os.getpid() if parent is None else parent

    def in_child() -> None:
        prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
        if os.getppid() != parent:        # the parent died before prctl took effect
            os._exit(1)

    return in_child


_lost: list[int] = []       # a stop signal whose exception Python threw away (sys.unraisablehook), to raise again
_blocks = [0]                       # exit_on_signals blocks open (a recipe's member pool opens one inside main's)


class _Stopped(SystemExit):
    """SIGTERM or SIGHUP: exit 128 + signum, the signal known again if Python throws it away."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class _Interrupted(KeyboardInterrupt):
    signum = signal.SIGINT


def _stop_exception(signum: int) -> _Stopped | _Interrupted:
    return _Interrupted() if signum == signal.SIGINT else _Stopped(signum)


def check_stopped() -> None:
    """Raise, once, a stop whose exception Python threw away: a signal handler runs wherever the main
    thread is, and in a weakref callback or a __del__ Python reports the exception as unraisable and
    goes on (probe 23: a Ctrl-C at the distilled student's start, and the recipe trained it and
    submitted). A stop that unwinds as usual is not raised again (a handler's log line stays). Called at
    safe points: every recipe log line, every training step, before every Kaggle call."""
    if _lost:
        signum = _lost[0]
        _lost.clear()
        raise _stop_exception(signum)


@contextlib.contextmanager
def exit_on_signals():
    """SIGTERM and SIGHUP raise SystemExit(143/129) in the block (main thread only), and SIGINT
    KeyboardInterrupt, so its `finally` clauses run: a stopped recipe stops its workers, a stopped
    stand-in its kernels. One of these that Python throws away (raised inside a callback) is kept, not
    printed, for check_stopped to raise again."""
    def exit_on(signum, frame):
        raise _stop_exception(signum)

    def quiet(hook):
        def unraisable(info):
            if isinstance(info.exc_value, (_Stopped, _Interrupted)):
                _lost.append(info.exc_value.signum)
            else:
                hook(info)
        return unraisable

    main_thread = threading.current_thread() is threading.main_thread()
    # SIGINT only where Python's own handler has it: one started in the background (`cmd &`) ignores it
    interrupt = (signal.SIGINT,) if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler \
        else ()
    handled = (signal.SIGTERM, signal.SIGHUP, *interrupt)
    before = {s: signal.signal(s, exit_on) for s in handled} if main_thread else {}
    hook, sys.unraisablehook = sys.unraisablehook, quiet(sys.unraisablehook)
    _blocks[0] += 1
    try:
        yield
    finally:
        _blocks[0] -= 1
        sys.unraisablehook = hook
        if not _blocks[0]:          # an inner block's end keeps a lost stop for the outer one
            _lost.clear()
        for s, handler in before.items():
            signal.signal(s, handler)
