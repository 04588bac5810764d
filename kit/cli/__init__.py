"""The `kit` command: argument parsing only; every subcommand calls into kit's modules.

Each file in this package registers one group of subcommands; results go to stdout,
logs and progress to stderr, a KitError becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import atexit
import codecs
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from pathlib import Path

from kit import __version__
from kit.env import die_with_parent, exit_on_signals, progress_visible
from kit.errors import KitError, path_problem
from kit.names import check_competition

# Each module defines register(subparsers) and attaches func=handler(args) -> int | None.
GROUPS = ["data", "train", "predict", "pseudo", "kaggle", "serve", "bench"]


class Parser(argparse.ArgumentParser):
    """argparse's parser, but help or a version that cannot be written to stdout (a closed pipe, a full
    disk) is an error, as any other output is: argparse itself drops the OSError and exits 0. Its one
    writer, _print_message, is private; it has had this signature since Python 3.2."""

    def _print_message(self, message: str, file=None) -> None:
        if message and file is sys.stdout:
            file.write(message)
        else:
            super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kit",
        description="Speaker-identification Kaggle kit: data, training, ensembling, submission.",
    )
    parser.add_argument("--version", action="version", version=f"kit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        try:
            module = importlib.import_module(f"kit.cli.{group}")
        except ModuleNotFoundError as e:
            if e.name == f"kit.cli.{group}":
                continue
            raise
        module.register(sub)
    return parser


def add_cache_option(p: argparse.ArgumentParser) -> None:
    """`--cache DIR` for the commands that open the data (see cache_from)."""
    p.add_argument("--cache", dest="kit_cache", metavar="DIR",
                   help="where the packed features and split go (default: DATA/.kit-cache when the data dir is "
                        "writable, else /tmp/kit-cache on Kaggle (not /kaggle/working, which a saved version keeps) or "
                        "~/.cache/kit; env KIT_CACHE)")


@contextlib.contextmanager
def cache_from(args: argparse.Namespace):
    """Within the block, KIT_CACHE is `--cache DIR` (when given): the data layer reads it, and
    worker processes a command starts inherit it."""
    chosen, env_cache = getattr(args, "kit_cache", None), os.environ.get("KIT_CACHE", "")
    if chosen is not None and not chosen.strip() or env_cache and not env_cache.strip():   # probe 46: a folder "   "
        which = f"--cache {chosen!r}" if chosen is not None and not chosen.strip() else f"KIT_CACHE={env_cache!r}"
        raise KitError(f"{which}: a blank folder name; give a folder (or leave it out for the default)")
    if not chosen:
        yield
        return
    before = os.environ.get("KIT_CACHE")
    os.environ["KIT_CACHE"] = os.path.abspath(os.path.expanduser(chosen))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KIT_CACHE", None)
        else:
            os.environ["KIT_CACHE"] = before


def log_line(line: str) -> None:
    """A log line of a command: `kit: ...` on stderr (stdout holds its results)."""
    print(f"kit: {line}", file=sys.stderr, flush=True)


def progress_wanted() -> bool:
    """Progress bars on stderr: in a terminal or a notebook cell (kit.env.progress_visible)."""
    return progress_visible()


def _version() -> str:
    return __version__


def one_line_errors(call) -> int:
    """call() -> exit code; a KitError, or an OSError about a path the user can fix
    (kit.errors.path_problem), becomes one line on stderr and exit code 2."""
    try:
        return int(call() or 0)
    except KitError as e:
        print(f"kit: error: {e}", file=sys.stderr)
    except OSError as e:
        if path_problem(e) is None:
            raise
        print(f"kit: error: {path_problem(e)}", file=sys.stderr)
    return 2


def chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command that `args` ran, e.g. `kit recipe run`'s."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def _end_with_the_kernel() -> None:
    """In a kernel of the local stand-in (kit.launch.kernel_main sets KIT_STANDIN_PID to its own pid):
    end with the kernel's script, which ends with `kit kaggle serve`. Taken out of the environment, so
    kit's own workers are not asked to."""
    parent = os.environ.pop("KIT_STANDIN_PID", "")
    in_child = die_with_parent(int(parent)) if parent.isdigit() else None
    if in_child is not None:
        in_child()


FREE_TEXT = {"message"}          # options where an empty string is a value (a submission's description)


def _empty_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The line for the first option or argument given as '' (`--data ""`, a shell variable that was not set):
    kit would take it as absent, or as the current folder. None when there is none."""
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.dest in FREE_TEXT or not (value == "" or (isinstance(value, list) and "" in value)):
            continue
        named = action.option_strings[-1] if action.option_strings else str(action.metavar or action.dest)
        why = ("a member's name, not ''" if action.metavar == "MEMBER"      # probe 58 F6: `--only ''` was called a path
               else "a path '' would mean the current folder")
        return f"{named} '': an empty value ({why})"
    return None


PATH_OPTIONS = ("answers", "config", "data", "ensemble", "ledger", "out", "png", "recipe", "runs")


def _expand_home(args: argparse.Namespace) -> None:
    """`--runs=~/x`: the shell leaves a `~` after `=` as it is, and kit made a folder named `~` in the
    current one while its lines read like the home folder (probe 36). Expanded, as `--cache` is."""
    for dest in PATH_OPTIONS:
        value = getattr(args, dest, None)
        if isinstance(value, str | Path) and (str(value) == "~" or str(value).startswith("~/")):
            setattr(args, dest, type(value)(os.path.expanduser(str(value))))


def _stopping() -> None:
    """Once kit stops, a second Ctrl-C (or `timeout -s INT`, which signals the process group too) is
    ignored while the interpreter exits: it landed in torch's exit handler as a traceback, and the exit
    code became -2 (probe 39). Registered last, so it runs first of the exit handlers; a caller of
    main() in-process (the tests) keeps its signals until it exits."""
    def ignore_stops() -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)

    atexit.register(ignore_stops)


def main(argv: list[str] | None = None) -> int:
    _end_with_the_kernel()
    _names_never_fail_output()
    parser = build_parser()
    parsed = _parse(parser, argv)
    if isinstance(parsed, int):
        return parsed
    args, unknown = parsed
    _expand_home(args)
    if unknown:                     # the usage of the command given (`recipe run`), not kit's
        chosen(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    empty = _empty_option(chosen(parser, args), args)
    if empty:
        print(f"kit: error: {empty}", file=sys.stderr)
        return 2

    def run() -> int:
        check_competition(getattr(args, "competition", None))
        if os.environ.get("KIT_PROGRESS", "") not in ("", "0", "1"):     # ignored, it hid a typo (probe 24)
            raise KitError(f"KIT_PROGRESS={os.environ['KIT_PROGRESS']!r}: 0 (no progress bars) or 1 (always), "
                           "or unset (bars where they are seen)")
        # SIGTERM/SIGHUP (a Kaggle or Slurm time-out, a closed terminal) stop kit as Ctrl-C does: every
        # `finally` runs, so pools, stand-ins and temp folders go with it (exit 143/129).
        with exit_on_signals(), cache_from(args):
            code = args.func(args)
        flushed = _flushed()        # a closed pipe is found here, not in the interpreter's last flush
        return flushed or code

    try:
        return one_line_errors(run)
    except KeyboardInterrupt:
        _stopping()
        print("kit: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if e.code not in (128 + signal.SIGTERM, 128 + signal.SIGHUP):
            raise
        _stopping()
        print(f"kit: stopped by {signal.Signals(e.code - 128).name}", file=sys.stderr)
        return e.code
    except OSError as e:
        return _output_failed(e)


def _names_never_fail_output() -> None:
    """A name that is not UTF-8 (a folder named in another encoding: Python holds its bytes as lone
    surrogates) is printed escaped, as stderr already does, never a traceback after the work is done
    (probe 49: `submitted ...` failed once the submission was sent and recorded)."""

    codecs.register_error("kit-bytes", _as_bytes)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):      # a stream replaced by another kind
            stream.reconfigure(errors="kit-bytes")      # type: ignore[union-attr]


def _as_bytes(error: UnicodeError) -> tuple[str, int]:
    """An encoding error handler: each byte of a name that was not UTF-8 (held as a lone surrogate, U+DC80
    to U+DCFF) shown as the byte it was, r\\xe9 (probe 50 F4: shown as r\\udce9, which names no byte);
    any other character the stream cannot hold as backslashreplace shows it."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   c.encode("ascii", "backslashreplace").decode() for c in text), error.end


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]] | int:
    """The parsed command line, or the exit code of --help: 0 when its text reached the reader, else
    _output_failed's."""
    try:
        return parser.parse_known_args(argv)
    except SystemExit as e:
        if e.code == 0:
            return _flushed()
        raise
    except OSError as e:
        return _output_failed(e)


def _flushed() -> int:
    """0 when what kit printed reached stdout's reader, else _output_failed's exit code."""
    try:
        sys.stdout.flush()
    except OSError as e:
        return _output_failed(e)
    return 0


def _output_failed(e: OSError) -> int:
    """The exit code for a failed write to stdout itself, the rest of the output dropped (the
    interpreter's last flush would fail again, with a traceback). Called while `e` is handled: any other
    OSError is raised again."""
    if isinstance(e, BrokenPipeError):      # `kit scores | head -1`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                          # 128 + SIGPIPE, as a shell reports a command its pipe ended
    if e.filename or e.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
        raise e
    # Writing stdout itself failed (redirected to a full disk): one line, as for a path.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print(f"kit: error: cannot write the output ({e.strerror})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
