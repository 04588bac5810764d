"""The one exception type kit raises for problems a user can act on.

The CLI turns a KitError into one line on stderr and exit code 2, and so an operating-system
error about a path the user gave (see `path_problem`).
"""
import errno
import os


class KitError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


# OS errors about a path that are the user's to fix (a file where a folder must go, a read-only
# or full disk, no permission): one line naming the path, not a traceback.
_PATH_ERRNOS = {errno.EEXIST: "a file is in the way (kit needs a folder there)",
                errno.ENOTDIR: "part of the path is a file, not a folder",
                errno.EISDIR: "is a folder (kit needs a file there)",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "read-only file system (give an --out, --runs or --cache on a writable disk)",
                errno.ENOSPC: "no space left on the device",
                errno.ENAMETOOLONG: "name too long for the file system (choose a shorter one)",
                errno.ENOENT: "no such file or folder, or one cannot be made there"}    # probe 51: mkdir in /proc


def path_problem(e: OSError) -> str | None:
    """One line for an OSError that is about a path the user can fix; None for any other. A rename
    from one of kit's hidden temp files (.NAME.XXXX, kit.fsio) names its destination, NAME."""
    if e.errno not in _PATH_ERRNOS or not e.filename:
        return None
    path = e.filename
    if e.filename2 and os.path.basename(str(path)).startswith(f".{os.path.basename(str(e.filename2))}."):
        path = e.filename2
    return f"{path}: {_PATH_ERRNOS[e.errno]}"


def first_line(e: BaseException, most: int = 160) -> str:
    """The first line of an exception's message for a one-line error, cut at a word (with "...")
    rather than in one when it is longer than `most`; "no detail" when it has none."""
    text = str(e).strip().splitlines()[0].strip() if str(e).strip() else ""
    if len(text) > most:
        text = text[:most].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."
    return text or "no detail"
