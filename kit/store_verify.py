"""What a packed store's done.json records of it, and the check that opening a store makes
against that record and the json files (kit.data.FeatureStore): a damaged or older store is
packed again. Opening hashes the whole of features.npy when the file changed since packing (its
size or modification time), `kit data check` always.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from kit.errors import KitError
from kit.fsio import sha256_file, write_json
from kit.layout import Layout, load_feature, parallel_map

STORE_VERSION = 1          # hashed into layout_hash, so into every run's data identity (kit.runs):
                           # changing it makes every existing run look trained on other data
STORE_FORMAT = 3           # what done.json records; a store without the record is packed again
                           # (3: the whole features.npy's digest, and its size and mtime)
STORE_ARRAYS = ("features", "offsets", "lengths", "labels")
SAMPLE_ROWS = 256          # rows of features.npy whose digest done.json records: cheap at any size
DIGESTS = {"index_sha256": "digest of offsets, lengths and labels",
           "sample_sha256": "digest of sampled features.npy rows"}


class DamagedStore(Exception):
    """A packed store that is not what its done.json records: opening packs it again. The
    message completes "<store dir>: ...; rebuilding"."""


class OlderStore(DamagedStore):
    """A store packed by a kit whose done.json has no record to verify it against: packed once more."""


def verify_store(root: Path, layout: Layout, dtype: str, whole: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """done.json and the arrays (memory-mapped) of the store in root, after checking that they
    are what done.json records and what the json files say (lengths, labels, contiguous
    offsets); DamagedStore names the first thing that is not. Reads a few hundred rows of
    features.npy, and all of it (its digest) when whole or when the file was written to since it
    was packed (a size or modification time other than done.json's)."""
    done = _read_done(root)
    arrays = {}
    for name in STORE_ARRAYS:
        path = root / f"{name}.npy"
        if not path.is_file():
            raise _damaged(f"{path.name} missing")
        try:        # memory-mapped, so a header claiming a huge shape allocates nothing
            arrays[name] = np.load(path, mmap_mode="r")
        except Exception as e:    # numpy raises ValueError, OSError, EOFError... for a bad file
            detail = str(e).strip().splitlines()[0][:60] if str(e).strip() else "no detail"
            raise _damaged(f"{path.name} unreadable: {type(e).__name__}: {detail}") from None
    _compare(done["record"], array_record(root, arrays))
    _check_against_layout(arrays, layout, dtype)
    _compare(done["record"], digests(arrays))
    stamp = file_stamp(root / "features.npy")
    if whole or stamp != done["features_stamp"]:
        if sha256_file(root / "features.npy") != done["features_sha256"]:
            raise _damaged("features.npy differs from the digest done.json records: changed since it was packed")
        if stamp != done["features_stamp"]:     # the same bytes (a copy, a touch): hashed once, not every time
            done = {**done, "features_stamp": stamp}
            with contextlib.suppress(OSError, KitError):   # a read-only cache hashes on each opening instead
                write_json(root / "done.json", done)
    return done, arrays


def file_stamp(path: Path) -> list[int]:
    """[size, mtime_ns, ctime_ns, inode]: any write to the file changes its modification time, and its
    status-change time too, which no user can set: a write whose modification time was put back
    (`touch -r`, `cp -p` or `rsync -t` of other bytes) still changes the stamp."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _damaged(what: str) -> DamagedStore:
    return DamagedStore(f"damaged packed store ({what})")


def _read_done(root: Path) -> dict:
    path = root / "done.json"
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _damaged("done.json missing") from None
    except (OSError, ValueError, RecursionError):      # bad JSON or UTF-8, or nested too deeply
        raise _damaged("done.json unreadable") from None
    if not isinstance(done, dict):
        raise _damaged("done.json malformed")
    if "format" not in done and done.get("version") == STORE_VERSION:
        raise OlderStore("packed store of an older kit, with no record to verify it against")
    if done.get("format") in range(1, STORE_FORMAT) and done.get("version") == STORE_VERSION:
        raise OlderStore("packed store of an older kit, with no digest of its whole features.npy")
    if done.get("format") != STORE_FORMAT or not isinstance(done.get("record"), dict) \
            or not isinstance(done.get("content"), str) or not isinstance(done.get("features_sha256"), str) \
            or not isinstance(done.get("features_stamp"), list):
        raise _damaged("done.json malformed")
    return done


def _compare(recorded: dict, found: dict) -> None:
    """Name the first thing found that differs from done.json's record of it."""
    for key, value in found.items():
        want = recorded.get(key)
        if isinstance(value, dict):
            for field, v in value.items():
                w = want.get(field) if isinstance(want, dict) else None
                if w != v:
                    raise _damaged(f"{key}.npy {field} {v}, done.json records {str(w)[:40]}")
        elif want != value:
            raise _damaged(f"{DIGESTS[key]} differs from done.json's")


def array_record(root: Path, arrays: dict[str, np.ndarray]) -> dict:
    """Each array's shape, dtype and file size: what done.json records of them."""
    record = {}
    for name, a in arrays.items():
        size = (root / f"{name}.npy").stat().st_size
        record[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "bytes": size}
    return record


def digests(arrays: dict[str, np.ndarray]) -> dict:
    """A digest of offsets, lengths and labels, and one of SAMPLE_ROWS rows of the features at
    fixed strided positions: a rewritten features.npy is caught in milliseconds at any size."""
    index = hashlib.sha256()
    for name in ("offsets", "lengths", "labels"):
        index.update(np.ascontiguousarray(arrays[name], dtype="<i8").tobytes())
    features = arrays["features"]
    rows = np.unique(np.linspace(0, len(features) - 1, min(len(features), SAMPLE_ROWS)).astype(np.int64))
    sample = hashlib.sha256(np.ascontiguousarray(features[rows]).tobytes())
    return {"index_sha256": index.hexdigest(), "sample_sha256": sample.hexdigest()}


def _check_against_layout(arrays: dict[str, np.ndarray], layout: Layout, dtype: str) -> None:
    """The arrays are the shapes the json files call for, and offsets are contiguous from 0 as
    packing writes them: no crop can read outside its own utterance."""
    utts = layout.all
    features = arrays["features"]
    if features.ndim != 2 or features.shape[1] != layout.n_mels or features.dtype != np.dtype(dtype):
        raise _damaged(f"features.npy is {features.dtype} {features.shape}, expected {dtype} (frames, {layout.n_mels})")
    for name in ("offsets", "lengths", "labels"):
        a = arrays[name]
        if a.shape != (len(utts),) or a.dtype.kind not in "iu":
            raise _damaged(f"{name}.npy is {a.dtype} {a.shape}, expected integers ({len(utts)},)")
    lengths = np.array([u.mel_len for u in utts], dtype=np.int64)
    if not np.array_equal(arrays["lengths"], lengths):
        raise _damaged("lengths.npy disagrees with the json's mel_len")
    if not np.array_equal(arrays["offsets"], offsets_of(lengths)) or int(lengths.sum()) != len(features):
        raise _damaged("offsets.npy is not the utterances' contiguous positions in features.npy")
    if not np.array_equal(arrays["labels"], labels_of(layout)):
        raise _damaged("labels.npy disagrees with metadata.json and mapping.json")


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def labels_of(layout: Layout) -> np.ndarray:
    s2i = layout.speaker2id
    return np.array([s2i[u.speaker] if u.speaker is not None else -1 for u in layout.all], dtype=np.int64)


def file_that_differs(features: np.ndarray, offsets: np.ndarray, layout: Layout, dtype: str,
                      workers: int | None = None, progress: bool = False) -> str | None:
    """The first feature file (its path in the layout) whose values are not the rows packed from it;
    None when every one is. A file replaced with its old size and modification time (`cp -p`,
    `rsync -a`, an archive unpacked) keeps the store's key, so only this comparison sees it."""
    def differs(i: int) -> str | None:
        u = layout.all[i]
        x = np.ascontiguousarray(load_feature(layout.data_dir / u.path, layout.n_mels, u.mel_len).numpy(), dtype)
        o = int(offsets[i])
        return None if np.array_equal(features[o:o + u.mel_len], x) else u.path

    for path in parallel_map(differs, range(len(layout.all)), workers, "comparing with the packed store", progress):
        if path is not None:
            return path
    return None
