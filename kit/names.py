"""Names a user gives that become file names (recipes, members, submissions), and run dirs given as a
list: checked before anything is written, so no name reaches outside its folder or onto a file kit keeps."""
from __future__ import annotations

import os
import re
import time
import unicodedata
from pathlib import Path

from kit.errors import KitError

MAX_NAME_BYTES = 200            # below the usual 255-byte limit, leaving room for .csv.old-<time>

# What kit itself writes into submissions/ beside NAME.csv, NAME.json and NAME_report.png (the
# ledger and its backups, lock and pending file: kit.kaggle.ledger; scores.png: `kit scores`).
# A submission named like one of them would land on it, or be taken for it.
_SUBMISSION_RESERVED = re.compile(r"(ledger|scores)(\..*)?|.*_report", re.IGNORECASE)
# What kit writes into RUNS/<recipe>/ beside the members: kit.rounds' stage runs (pseudo-label
# folders, fine-tuned copies and student); the Kaggle launcher's state and logs (kit.launch.kaggle_kernels).
_STAGE_RUN = re.compile(r"student|pseudo-\d+|.*-pl\d+|.*-refit|.*-lm", re.IGNORECASE)
_MEMBER_RESERVED = re.compile(_STAGE_RUN.pattern + r"|kaggle-kernels\.json|kaggle-logs", re.IGNORECASE)


def is_stage_run(name: str) -> bool:
    """Whether a folder of RUNS/<recipe>/ is one kit.rounds' stages made (a fine-tune, a pseudo-label
    round, the student), or an older copy of one (NAME.old-<time>)."""
    return bool(_STAGE_RUN.fullmatch(OLD_SUFFIX.sub("", name)))


# What a kept file's name ends in: a run started over (kit.runs.old_name) and a submitted pair written
# again (kit.submission.keep_submitted) are renamed to NAME.old-<time>[-n]; kit.records finds the pair.
OLD_SUFFIX = re.compile(r"\.old-[0-9]{8}-[0-9]{6}(-[0-9]+)?")


def old_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def old_suffix(stamp: str | None = None, n: int = 1) -> str:
    """.old-<time>, and -n on the n-th try for a free name at the same time (stamp: that time)."""
    return f".old-{stamp or old_stamp()}" + (f"-{n}" if n > 1 else "")


def check_name(name, what: str) -> str:
    """NAME when it is a plain file name (no folder part, not '.' or '..', no leading dot, no
    control characters); else KitError "<what> name 'X' is not a plain file name (why)"."""
    why = _not_plain(name)
    if why:
        raise KitError(f"{what} name {_shown(name)} is not a plain file name ({why})")
    return name


def _shown(name) -> str:
    return repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60]) + "..."


def _not_plain(name) -> str | None:
    if not isinstance(name, str) or not name:
        return "it is empty" if name == "" else f"not text but {type(name).__name__}"
    if "/" in name or "\\" in name:
        return "no '/' or '\\': it would name a file in another folder"
    if name in (".", ".."):
        return "'.' and '..' are folders"
    if name.startswith("."):
        return "no leading '.': kit keeps its hidden files under such names"
    if name.startswith("-"):        # probe 58 F6: `--name -` wrote -.csv, which `kit submit -.csv` read as an option
        return "no leading '-': a command would read the file's name as an option"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "no control characters"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"at most {MAX_NAME_BYTES} bytes"
    return None


def _not_reserved(name, what: str, reserved, where: str) -> str:
    check_name(name, what)
    if reserved.fullmatch(name):
        raise KitError(f"{what} name {name!r} is one kit uses {where}: choose another name")
    return name


def check_submission_name(name, what: str = "submission") -> str:
    """A plain file name that is not one kit uses in submissions/ (`ledger`, `ledger.*`,
    `scores`, `*_report`): NAME.csv, NAME.json and NAME_report.png land beside the ledger."""
    return _not_reserved(name, what, _SUBMISSION_RESERVED, "in submissions/ (ledger.csv, its backups and "
                         "pending file, scores.png, NAME_report.png)")


# What a recipe's stages name their votes in submissions/: NAME-vote0, NAME-before-refit, NAME-student
# (kit.zoo, kit.rounds); a recipe named so would write over another recipe's.
_RECIPE_RESERVED = re.compile(r".*-(vote0|before-refit|student)", re.IGNORECASE)


def check_recipe_name(name) -> str:
    """A submission name (check_submission_name) that is not one another recipe's stages write."""
    check_submission_name(name, "recipe")
    return _not_reserved(name, "recipe", _RECIPE_RESERVED, "for another recipe's stages in submissions/ "
                         "(RECIPE-vote0, RECIPE-before-refit, RECIPE-student)")


def folded(name: str) -> str:
    """NAME as a file system that ignores case and Unicode form (macOS's, Windows') sees it: two names that
    fold alike are one folder there."""
    return unicodedata.normalize("NFC", name).casefold()


def check_member_name(name, what: str = "member") -> str:
    """A plain file name that is not one kit uses beside the members in RUNS/<recipe>/
    (`student`, `pseudo-N`, the stages' fine-tunes `NAME-plN`, `NAME-refit` and `NAME-lm`, the Kaggle
    launcher's files)."""
    return _not_reserved(name, what, _MEMBER_RESERVED, "beside the members in RUNS/<recipe>/ (student, "
                         "pseudo-N, the fine-tunes MEMBER-plN, MEMBER-refit and MEMBER-lm, "
                         "kaggle-kernels.json, kaggle-logs)")


def distinct_runs(run_dirs, what: str = "run dir") -> list:
    """RUN_DIRS when no folder is given twice (`A A`, `A ./A/`, a link to A); else KitError: a
    member counted twice would outvote the others."""
    seen: dict = {}
    for run in run_dirs:
        key = _identity(run)
        if key in seen:
            same = f"{seen[key]} and {run}" if str(seen[key]) != str(run) else f"{run} twice"
            raise KitError(f"{run}: the same {what} is given twice ({same}); give each run dir once")
        seen[key] = run
    return list(run_dirs)


def same_dir(a, b) -> bool:
    """Whether two paths name the same folder (see distinct_runs)."""
    return _identity(a) == _identity(b)


def _identity(path) -> tuple:
    """The folder a path names: device and inode when it exists (links, case-insensitive disks),
    else the absolute, normalised path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(Path(path).resolve()))


_COMPETITION = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")


def valid_competition(name: str) -> bool:
    """name can be a Kaggle competition's URL name: lower-case letters, digits and hyphens."""
    return bool(_COMPETITION.fullmatch(name))


def check_competition(name: str | None) -> None:
    """A --competition that cannot be a Kaggle competition's URL name (lower-case letters, digits and hyphens, as
    in ml2022spring-hw4) is refused before anything trains or is sent: a rehearsal's stand-in would
    take it, and real Kaggle would refuse it only at the end."""
    if name is not None and not valid_competition(name):
        raise KitError(f"--competition {name!r}: a Kaggle competition's name is lower-case letters, digits "
                       "and hyphens, as in the address kaggle.com/competitions/ml2022spring-hw4")
