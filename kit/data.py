"""The training data as kit reads it: every utterance packed once into a FeatureStore (one
contiguous memory-mapped array, checked against its done.json record whenever it is opened:
kit.store_verify), packing it, and `kit data info`'s numbers. The seeded train/validation split
is kit.split's.

The store turns the crops of a whole batch into one vectorised gather instead of one
`torch.load` per item.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from kit.config import CHOICES
from kit.env import cache_dir as default_cache_dir
from kit.env import note_cache, note_line
from kit.errors import KitError
from kit.fsio import atomic_dir, file_lock, sha256_file, write_json
from kit.layout import LAYOUT_FILES, Layout, feature_digest, load_feature, parallel_map, read_layout
from kit.split import Split, load_split, make_split, save_split, split_for
from kit.store_verify import (
    STORE_ARRAYS,
    STORE_FORMAT,
    STORE_VERSION,
    DamagedStore,
    OlderStore,
    array_record,
    digests,
    file_stamp,
    file_that_differs,
    labels_of,
    offsets_of,
    verify_store,
)

# The split (kit.split) and the store's record and its check (kit.store_verify) moved out of this
# module; their names stay importable from here.
__all__ = ["PAD_VALUE", "STORE_DTYPES", "STORE_VERSION", "DamagedStore", "FeatureStore", "OlderStore", "Split",
           "data_info", "layout_hash", "load_split", "make_split", "save_split", "split_for", "store_bytes",
           "store_key", "verify_store", "verify_stores"]
PAD_VALUE = -20.0          # the competition's padding value for short utterances
STORE_DTYPES = CHOICES["data"]["store_dtype"]     # ("float16", "float32"), owned by kit.config
ROOM_MARGIN = 64 << 20     # free space left after packing, for the split, checkpoints, logs


# ---------------------------------------------------------------- FeatureStore
def layout_hash(data_dir: str | os.PathLike) -> str:
    """Hash of the three json files."""
    h = hashlib.sha256(f"kit-store-v{STORE_VERSION}".encode())
    for name in LAYOUT_FILES:
        h.update(name.encode())
        h.update((Path(data_dir) / name).read_bytes())
    return h.hexdigest()[:16]


def store_key(layout: Layout) -> str:
    """The json files' hash and every feature file's name, size and mtime: the store is rebuilt
    when any of them changes (a feature file replaced in place included)."""
    h = hashlib.sha256(layout_hash(layout.data_dir).encode())
    for u in layout.all:
        try:
            st = os.stat(layout.data_dir / u.path)
            h.update(f"{u.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{u.path}\0missing\n".encode())      # packing then names the file
    return h.hexdigest()[:16]


class FeatureStore:
    """Every utterance packed into one (total_frames, n_mels) array, plus offsets and lengths.

    Index i < n_train is a training utterance (label = class id), i >= n_train a test one
    (label -1), both in json order. Opening memory-maps the arrays and checks them against
    done.json and the json files (see verify_store): well under a second even at full size.
    """

    def __init__(self, root: Path, layout: Layout, dtype: str, whole: bool = False):
        """The store in root, verified (whole: every byte of features.npy against its digest); DamagedStore
        says what is wrong with it."""
        self.root = root
        self.layout = layout
        done, arrays = verify_store(root, layout, dtype, whole)
        self.features = arrays["features"]                               # (F, D) memory map
        self.offsets = np.array(arrays["offsets"])                       # (N,)
        self.lengths = np.array(arrays["lengths"])                       # (N,)
        self.labels = np.array(arrays["labels"])                         # (N,)
        self.paths = [u.path for u in layout.all]
        self.n_train = len(layout.train)
        self.n_test = len(layout.test)
        self.content_digest = done["content"]                            # see _write_features
        self.key = root.name.split("-")[1] if root.name.count("-") == 2 else ""     # store-<key>-<dtype>

    # -- opening / building
    @classmethod
    def open(cls, data_dir: str | os.PathLike, dtype: str = "float16", cache_dir: str | os.PathLike | None = None,
             workers: int | None = None, progress: bool = True) -> FeatureStore:
        """Open the packed store for data_dir, packing it first if missing, stale or damaged (one
        line on stderr says so). The store lives in cache_dir, by default where
        kit.env.cache_dir says (beside the data if writable)."""
        if dtype not in STORE_DTYPES:
            raise KitError(f"store dtype {dtype!r}: choose float16 or float32")
        layout = read_layout(data_dir)
        if cache_dir:
            cache = Path(cache_dir)
        else:
            cache, note = default_cache_dir(data_dir)
            note_cache(note)
        root = cache / f"store-{store_key(layout)}-{dtype}"
        if root.exists():
            try:
                return cls(root, layout, dtype)
            except DamagedStore as e:
                note_line(f"{root}: {e}; rebuilding")
        _pack(layout, root, dtype, workers, progress)
        try:
            return cls(root, layout, dtype)
        except DamagedStore as e:         # what was just written does not read back
            raise KitError(f"{root}: {e} right after packing it: is the disk failing? "
                           "Choose another with --cache DIR or KIT_CACHE") from None

    @property
    def n_mels(self) -> int:
        return int(self.features.shape[1])

    @property
    def speakers(self) -> list[str]:
        return self.layout.speakers

    @property
    def train_index(self) -> np.ndarray:
        return np.arange(self.n_train)

    @property
    def test_index(self) -> np.ndarray:
        return np.arange(self.n_train, self.n_train + self.n_test)

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)

    def utterance(self, i: int) -> np.ndarray:
        """One whole utterance, (mel_len, n_mels), in the store's dtype."""
        o = int(self.offsets[i])
        return self.features[o:o + int(self.lengths[i])]

    @property
    def tensor(self):
        """The packed features as a torch tensor sharing the memory map (read-only: never written)."""
        if getattr(self, "_tensor", None) is None:
            import torch  # heavy (~2 s): only crops need it, not `kit data info`/`check` or kit.runs

            with warnings.catch_warnings():     # torch warns that the memory map is read-only
                warnings.simplefilter("ignore", UserWarning)
                self._tensor = torch.from_numpy(self.features)                  # (F, D)
        return self._tensor

    def to_device(self, device) -> FeatureStore:
        """Copy the packed features onto `device` (a GPU) once, so every crop is gathered there:
        no host-to-device copy of batches. Index arithmetic stays on the host (a few KiB a batch)."""
        import torch  # heavy: see tensor

        device = torch.device(device)
        if self.tensor.device != device:
            self._tensor = self.tensor.to(device)
        return self

    def crop_batch(self, index: np.ndarray, segment_len: int, rng: np.random.Generator | None,
                   random: bool = True):
        """Fixed-length crops of a batch in one gather: returns (x (B,T,D) float32, lengths (B,)).

        Long utterances get a random start (or the centre when random=False, which needs no rng);
        short ones are padded with PAD_VALUE and their true length returned so the model can mask.
        """
        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths[index]                                     # (B,)
        room = np.maximum(lens - segment_len, 0)
        assert rng is not None or not random, "random crops need an rng"
        starts = rng.integers(0, room + 1) if rng is not None and random else room // 2    # (B,)
        return self.gather_windows(index, starts, np.minimum(lens, segment_len), pad_to=segment_len)

    def gather_windows(self, index, start, valid, pad_to: int | None = None):
        """Windows of a batch in one gather: utterance index[i]'s frames start[i] to start[i] + valid[i],
        padded with PAD_VALUE to `pad_to` frames (default: the longest window). Returns (x (B,T,D)
        float32, lengths (B,) int64), torch tensors on the store's device.

        The one padded gather: training's crops, evaluation's centre crops and prediction's windows
        (kit.windows) all come through here."""
        import torch  # heavy: see tensor

        index, start, valid = (np.array(a, dtype=np.int64) for a in (index, start, valid))
        steps = np.arange(int(valid.max()) if pad_to is None else pad_to)          # (T,)
        rows = (self.offsets[index] + start)[:, None] + np.minimum(steps[None, :], valid[:, None] - 1)
        device = self.tensor.device
        x = self.tensor[torch.from_numpy(rows).to(device)].float()     # (B, T, D); torch's half->float is SIMD
        pad = steps[None, :] >= valid[:, None]                         # (B, T)
        if pad.any():
            x.masked_fill_(torch.from_numpy(pad)[..., None].to(device), PAD_VALUE)
        return x, torch.from_numpy(valid).to(device)


def verify_stores(data_dir: str | os.PathLike, content: str, workers: int | None = None,
                  progress: bool = False) -> list[tuple[Path, str | None]]:
    """`kit data check`'s look at the packed stores of data_dir in its cache (either dtype), each
    verified as opening it would, every byte of features.npy against its digest, and the feature files'
    `content` digest (check_data's) against the one it was packed from: (store dir, None when sound,
    else why it is repacked when next opened). KitError for a damaged one, naming it; one the feature
    files differ from is removed, naming the first file that does (they are read again only then)."""
    layout = read_layout(data_dir)
    cache, _ = default_cache_dir(data_dir)
    key = store_key(layout)
    found: list[tuple[Path, str | None]] = []
    for dtype in STORE_DTYPES:
        root = cache / f"store-{key}-{dtype}"
        if not root.exists():
            continue
        try:
            store = FeatureStore(root, layout, dtype, whole=True)
        except OlderStore as e:                        # not damage: repacked once, quietly
            found.append((root, str(e)))
            continue
        except DamagedStore as e:
            raise KitError(f"{root}: {e}; the next command that opens the data rebuilds it") from None
        if store.content_digest != content:
            changed = file_that_differs(store.features, store.offsets, layout, dtype, workers, progress) \
                or "a feature file"
            shutil.rmtree(root, ignore_errors=True)    # a cache: the next command packs it again
            raise KitError(f"{root}: {changed} is not what was packed from it (replaced, keeping its old size "
                           "and modification time?); removed, so the next command that opens the data packs it again")
        found.append((root, None))
    return found


# ---------------------------------------------------------------- packing
def store_bytes(layout: Layout, dtype: str) -> int:
    """Bytes a packed store of layout takes on disk (headers and done.json included, roughly)."""
    frames = sum(u.mel_len for u in layout.all)
    return frames * layout.n_mels * np.dtype(dtype).itemsize + 3 * 8 * len(layout.all) + 64 * 1024


def _no_room(cache: Path, store: int, free: int | None = None, margin: int = 0) -> KitError:
    """The error for a disk without room for the store (`store` bytes) and `margin` bytes left after it."""
    if free is None:
        try:
            free = shutil.disk_usage(cache).free
        except OSError:
            free = 0
    left = f" + {_mib(margin)} left for the run's other files" if margin else ""
    return KitError(f"{cache}: not enough free space to pack the store: {_mib(store)} for the store{left}, "
                    f"{_mib(free)} free (free some, or choose another disk with --cache DIR or KIT_CACHE)")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _check_room(cache: Path, layout: Layout, dtype: str) -> None:
    """Refuse before writing when the disk cannot hold the store (with a margin for the rest of
    the run's files): a disk that fills halfway wastes the packing time."""
    store = store_bytes(layout, dtype)
    margin = store // 50 + ROOM_MARGIN
    free = shutil.disk_usage(cache).free
    if free < store + margin:
        raise _no_room(cache, store, free, margin)


def _pack(layout: Layout, root: Path, dtype: str, workers: int | None, progress: bool) -> None:
    """Read every feature file once into a new store folder, then rename it into place. One
    packer at a time per cache dir, so the temp folders a killed packer left can be removed."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        (root.parent / ".pack.lock").touch()
    except OSError as e:
        raise KitError(f"{root.parent}: cannot write the packed store here ({e.strerror}); "
                       "choose a writable one with --cache DIR or KIT_CACHE") from None
    with file_lock(root.parent / ".pack.lock"):
        if root.exists():
            try:
                FeatureStore(root, layout, dtype)        # another process packed it meanwhile
                return
            except DamagedStore:
                shutil.rmtree(root, ignore_errors=True)  # else atomic_dir would keep it (done.json)
        for leftover in root.parent.glob(".store-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        _check_room(root.parent, layout, dtype)
        try:
            _pack_locked(layout, root, dtype, workers, progress)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise _no_room(root.parent, store_bytes(layout, dtype)) from None


def _pack_locked(layout: Layout, root: Path, dtype: str, workers: int | None, progress: bool) -> None:
    with atomic_dir(root, "packed store", done="done.json") as folder:
        _write_store(layout, folder, dtype, workers, progress)
    current = root.name.rsplit("-", 1)[0] + "-"          # store-<hash>-
    for stale in root.parent.glob("store-*"):            # stores of older metadata
        if not stale.name.startswith(current):
            shutil.rmtree(stale, ignore_errors=True)


def _write_store(layout: Layout, folder: Path, dtype: str, workers: int | None, progress: bool) -> None:
    """features.npy (every feature file in json order), offsets, lengths, labels, and last
    done.json with the record that opening checks (see verify_store)."""
    lengths = np.array([u.mel_len for u in layout.all], dtype=np.int64)
    offsets = offsets_of(lengths)
    content = _write_features(layout, folder / "features.npy", offsets, dtype, workers, progress)
    np.save(folder / "offsets.npy", offsets)
    np.save(folder / "lengths.npy", lengths)
    np.save(folder / "labels.npy", labels_of(layout))
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in STORE_ARRAYS}
    record = {**array_record(folder, arrays), **digests(arrays)}      # of what reads back
    features = folder / "features.npy"
    write_json(folder / "done.json", {"version": STORE_VERSION, "format": STORE_FORMAT, "dtype": dtype,
                                      "utterances": len(lengths), "frames": int(lengths.sum()),
                                      "content": content, "record": record, "features_sha256": sha256_file(features),
                                      "features_stamp": file_stamp(features)})


def _write_features(layout: Layout, path: Path, offsets: np.ndarray, dtype: str, workers: int | None,
                    progress: bool) -> str:
    """Write features.npy with plain positioned writes, and return the content digest: every
    feature file's values in json order, whatever the store dtype (the data part of a run's
    identity, kit.runs). Not a memory map: a disk that fills then raises ENOSPC, not SIGBUS."""
    utts, data_dir = layout.all, layout.data_dir
    shape = (int(sum(u.mel_len for u in utts)), layout.n_mels)
    row_bytes = layout.n_mels * np.dtype(dtype).itemsize
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": shape})
        start = f.tell()
        f.flush()

        def load(i: int) -> bytes:
            u = utts[i]
            x = load_feature(data_dir / u.path, layout.n_mels, u.mel_len).numpy()
            _check_fits(x, dtype, data_dir / u.path)
            _write_at(f.fileno(), np.ascontiguousarray(x, dtype=dtype), start + int(offsets[i]) * row_bytes)
            return feature_digest(x)

        content = hashlib.sha1()
        for digest in parallel_map(load, range(len(utts)), workers, f"packing {data_dir}", progress):
            content.update(digest)
        os.fsync(f.fileno())
    return content.hexdigest()


def _check_fits(x: np.ndarray, dtype: str, path: Path) -> None:
    """Refuse values the store's dtype cannot hold (float16: up to 65504): packed, they would turn inf,
    and training would report a divergence that no learning rate mends."""
    top = float(np.finfo(dtype).max)
    if (big := float(np.abs(x).max())) > top:
        raise KitError(f"{path}: values up to {big:.7g} do not fit the {dtype} packed store (at most {top:g}; "
                       "log-mel features are tens at most: is the file scaled?); set data.store_dtype = \"float32\" "
                       "to pack them as they are")


def _write_at(fd: int, array: np.ndarray, position: int) -> None:
    """All of array's bytes at position (os.pwrite may write part of them)."""
    data = array.data.cast("B")
    while data:
        n = os.pwrite(fd, data, position)
        if n == 0:
            raise OSError(errno.ENOSPC, "no space left on the device")
        data, position = data[n:], position + n


# ---------------------------------------------------------------- kit data info
def data_info(data_dir: str | os.PathLike) -> dict:
    """Summary numbers for `kit data info` (from the json; sizes from the file system)."""
    layout = read_layout(data_dir)
    root = Path(data_dir)

    def lengths(utts):
        a = np.array([u.mel_len for u in utts]) if utts else np.zeros(0)
        if a.size == 0:
            return {"count": 0, "min": 0, "median": 0, "max": 0}
        return {"count": int(a.size), "min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}

    size = sum(f.stat().st_size for f in root.iterdir() if f.is_file())
    per_speaker = np.bincount(layout.train_labels, minlength=len(layout.speakers))
    cache, note = default_cache_dir(root)
    return {
        "data_dir": str(root),
        "cache": str(cache),            # where the packed store and split go (kit.env.cache_dir)
        "cache_beside": note is None,
        "speakers": len(layout.speakers),
        "n_mels": layout.n_mels,
        "train": lengths(layout.train),
        "test": lengths(layout.test),
        "utterances_per_speaker": {"min": int(per_speaker.min()), "max": int(per_speaker.max())},
        "total_bytes": int(size),
    }
