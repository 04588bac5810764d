"""Fetching a competition: download its zip with the official client (through the worker),
unpack it safely, find and check the data dir; a marker file makes a re-run a no-op.
"""
from __future__ import annotations

import contextlib
import json
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from kit.errors import KitError
from kit.fsio import atomic_path, sha256_file, write_json
from kit.kaggle.client import call
from kit.kaggle.ledger import now
from kit.layout import DOWNLOAD_MARKER as MARKER
from kit.layout import LAYOUT_FILES, check_data, marked_dir, read_layout


def _crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def extract_zip(zip_path, dest) -> int:
    """Unpack safely (no member may land outside dest, no links); skips files already unpacked."""
    dest = Path(dest)
    root = dest.resolve()
    written = 0
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                target = root.joinpath(*parts).resolve() if parts else root
                if (info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0])
                        or (target != root and root not in target.parents)):
                    raise KitError(f"{zip_path}: member {info.filename!r} would land outside {dest}; "
                                   "refusing to unpack")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise KitError(f"{zip_path}: member {info.filename!r} is a symbolic link; refusing to unpack")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                # a re-download may change a file but not its size (two ids swapped), so compare contents too
                if (target.is_file() and target.stat().st_size == info.file_size
                        and _crc32_file(target) == info.CRC):
                    continue
                with zf.open(info) as src, atomic_path(target) as tmp:
                    with open(tmp, "wb") as out:
                        while block := src.read(1 << 20):
                            out.write(block)
                written += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as e:   # zlib, EOF: a member's data
        raise KitError(f"{zip_path}: not a valid zip ({e}); delete it and download again") from None
    return written


def find_data_dir(root, members: Iterable[str] | None = None) -> Path:
    """The shallowest folder under root holding the competition's three json files.

    With members (the zip's member names), folders the zip unpacked win over data dirs already
    in root (say one from `kit data synth`)."""
    root = Path(root)
    found = sorted((p.parent for p in root.rglob("metadata.json")
                    if all((p.parent / n).is_file() for n in LAYOUT_FILES) and ".kit-cache" not in p.parts),
                   key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise KitError(f"{root}: no folder with {', '.join(LAYOUT_FILES)} after unpacking; "
                       f"is this an HW4 speaker-identification competition?")
    if members is not None:
        unpacked = {PurePosixPath(m.replace("\\", "/")) for m in members}
        from_zip = [d for d in found if PurePosixPath(d.relative_to(root).as_posix(), "metadata.json") in unpacked]
        if from_zip:
            return from_zip[0]
    return found[0]


def download(competition: str, out, endpoint: str | None = None, env: dict | None = None, log=None,
             progress: bool = False) -> Path:
    """Download the competition zip with the official client, unpack it, validate; returns the data dir."""
    out = Path(out)
    marker = out / MARKER
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
            if done.get("competition") == competition:
                read_layout(marked_dir(out, done))
                return marked_dir(out, done)
        except (ValueError, KeyError, TypeError, AttributeError, KitError):
            pass    # incomplete or stale: fetch and unpack again (finished files are skipped)
    made = [p for p in (out, *out.parents) if not p.exists()]        # --out and the folders made for it
    out.mkdir(parents=True, exist_ok=True)
    try:
        zip_path = Path(call("download", {"competition": competition, "path": str(out.resolve())},
                             endpoint, env, log)["zip"])
    except BaseException:
        for folder in made:         # a competition that does not exist leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    extract_zip(zip_path, out)
    with zipfile.ZipFile(zip_path) as zf:
        members = zf.namelist()
    data_dir = find_data_dir(out, members)
    check_data(data_dir, progress=progress)
    write_json(marker, {"competition": competition, "zip": str(zip_path), "sha256": sha256_file(zip_path),
                        "data_dir": str(data_dir), "in_out": data_dir.relative_to(out).as_posix(), "time": now()})
    return data_dir
