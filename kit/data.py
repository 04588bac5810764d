"""The training data as kit reads it: every utterance packed once into a FeatureStore (one
contiguous memory-mapped array), the seeded train/validation split, and `kit data info`'s numbers.

The store turns the crops of a whole batch into one vectorised gather instead of one
`torch.load` per item.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.errors import KitError
from kit.fsio import atomic_dir, file_lock, read_json, write_json
from kit.layout import LAYOUT_FILES, Layout, load_feature, parallel_map, read_layout

PAD_VALUE = -20.0          # the competition's padding value for short utterances
STORE_VERSION = 1          # bump when the packed format changes


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
    (label -1), both in json order. Opening memory-maps the arrays: seconds even at full size.
    """

    def __init__(self, root: Path, layout: Layout):
        self.root = root
        self.layout = layout
        self.features = np.load(root / "features.npy", mmap_mode="r")   # (F, D)
        self.offsets = np.load(root / "offsets.npy")                     # (N,)
        self.lengths = np.load(root / "lengths.npy")                     # (N,)
        self.labels = np.load(root / "labels.npy")                       # (N,)
        self.paths = [u.path for u in layout.all]
        self.n_train = len(layout.train)
        self.n_test = len(layout.test)
        done = json.loads((root / "done.json").read_text(encoding="utf-8"))
        self.content_digest = done.get("content") or f"key:{root.name}"   # see _write_store

    # -- opening / building
    @classmethod
    def open(cls, data_dir: str | os.PathLike, dtype: str = "float16", cache_dir: str | os.PathLike | None = None,
             workers: int | None = None, progress: bool = True) -> "FeatureStore":
        """Open the packed store for data_dir, packing it first if missing or stale. The store
        lives in cache_dir, by default where kit.env.cache_dir says (beside the data if writable)."""
        if dtype not in ("float16", "float32"):
            raise KitError(f"store dtype {dtype!r}: choose float16 or float32")
        layout = read_layout(data_dir)
        if cache_dir:
            cache = Path(cache_dir)
        else:
            from kit.env import cache_dir as default_cache, note_cache

            cache, note = default_cache(data_dir)
            note_cache(note)
        root = cache / f"store-{store_key(layout)}-{dtype}"
        if not (root / "done.json").is_file():
            _pack(layout, root, dtype, workers, progress)
        return cls(root, layout)

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
            import warnings

            import torch

            with warnings.catch_warnings():     # torch warns that the memory map is read-only
                warnings.simplefilter("ignore", UserWarning)
                self._tensor = torch.from_numpy(self.features)                  # (F, D)
        return self._tensor

    def to_device(self, device) -> "FeatureStore":
        """Copy the packed features onto `device` (a GPU) once, so every crop is gathered there:
        no host-to-device copy of batches. Index arithmetic stays on the host (a few KiB a batch)."""
        import torch

        device = torch.device(device)
        if self.tensor.device != device:
            self._tensor = self.tensor.to(device)
        return self

    def crop_batch(self, index: np.ndarray, segment_len: int, rng: np.random.Generator,
                   random: bool = True):
        """Fixed-length crops of a batch in one gather: returns (x (B,T,D) float32, lengths (B,)).

        Long utterances get a random start (or the centre when random=False); short ones
        are padded with PAD_VALUE and their true length returned so the model can mask.
        """
        import torch

        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths[index]                                     # (B,)
        room = np.maximum(lens - segment_len, 0)
        starts = rng.integers(0, room + 1) if random else room // 2    # (B,)
        steps = np.arange(segment_len)                                 # (T,)
        rows = self.offsets[index, None] + starts[:, None] + np.minimum(steps[None, :], lens[:, None] - 1)
        device = self.tensor.device
        x = self.tensor[torch.from_numpy(rows).to(device)].float()     # (B, T, D); torch's half->float is SIMD
        valid = steps[None, :] < lens[:, None]                         # (B, T)
        if not valid.all():
            x.masked_fill_(torch.from_numpy(~valid)[..., None].to(device), PAD_VALUE)
        return x, torch.from_numpy(np.minimum(lens, segment_len).astype(np.int64)).to(device)


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
        if (root / "done.json").is_file():           # another process packed it meanwhile
            return
        for leftover in root.parent.glob(".store-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        _pack_locked(layout, root, dtype, workers, progress)


def _pack_locked(layout: Layout, root: Path, dtype: str, workers: int | None, progress: bool) -> None:
    with atomic_dir(root, "packed store", done="done.json") as folder:
        _write_store(layout, folder, dtype, workers, progress)
    current = root.name.rsplit("-", 1)[0] + "-"          # store-<hash>-
    for stale in root.parent.glob("store-*"):            # stores of older metadata
        if not stale.name.startswith(current):
            shutil.rmtree(stale, ignore_errors=True)


def _write_store(layout: Layout, folder: Path, dtype: str, workers: int | None, progress: bool) -> None:
    """features.npy (every feature file in json order), offsets, lengths, labels, and done.json last."""
    utts = layout.all
    lengths = np.array([u.mel_len for u in utts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    s2i = layout.speaker2id
    labels = np.array([s2i[u.speaker] if u.speaker is not None else -1 for u in utts], dtype=np.int64)
    feats = np.lib.format.open_memmap(folder / "features.npy", mode="w+",
                                      dtype=np.dtype(dtype), shape=(int(lengths.sum()), layout.n_mels))
    data_dir = layout.data_dir

    def load(i: int) -> bytes:
        u = utts[i]
        x = load_feature(data_dir / u.path, layout.n_mels, u.mel_len).numpy()
        feats[offsets[i]:offsets[i] + lengths[i]] = x.astype(dtype, copy=False)
        return hashlib.sha1(np.ascontiguousarray(x, dtype=np.float32).tobytes()).digest()

    content = hashlib.sha1()        # every feature file's values in json order, whatever the store
                                    # dtype: the data part of a run's identity (kit.runs)
    for digest in parallel_map(load, range(len(utts)), workers, f"packing {data_dir}", progress):
        content.update(digest)
    feats.flush()
    del feats
    np.save(folder / "offsets.npy", offsets)
    np.save(folder / "lengths.npy", lengths)
    np.save(folder / "labels.npy", labels)
    write_json(folder / "done.json", {"version": STORE_VERSION, "dtype": dtype, "utterances": len(utts),
                                      "frames": int(lengths.sum()), "content": content.hexdigest()})


# ---------------------------------------------------------------- train/validation split
@dataclass
class Split:
    train: np.ndarray      # store indices
    val: np.ndarray
    seed: int
    val_fraction: float


def make_split(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """Seeded split stratified per speaker: each speaker gives round(n * fraction) utterances
    (at least one when it has two or more) to validation."""
    if not 0 <= val_fraction < 1:
        raise KitError(f"val_fraction {val_fraction}: must be in [0, 1)")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for spk in np.unique(labels):
        members = np.flatnonzero(labels == spk)
        rng.shuffle(members)
        k = int(round(len(members) * val_fraction))
        if val_fraction > 0 and len(members) >= 2:
            k = max(k, 1)
        k = min(k, len(members) - 1)
        val.extend(members[:k].tolist())
    val_arr = np.array(sorted(val), dtype=np.int64)
    train_arr = np.setdiff1d(np.arange(len(labels)), val_arr)
    return Split(train_arr, val_arr, seed, val_fraction)


def save_split(split: Split, path: str | os.PathLike, store: FeatureStore) -> None:
    """Saved by feature_path, so it survives a store rebuild and can be shared between runs."""
    write_json(path, {"seed": split.seed, "val_fraction": split.val_fraction,
                      "train": [store.paths[i] for i in split.train],
                      "val": [store.paths[i] for i in split.val]})


def load_split(path: str | os.PathLike, store: FeatureStore) -> Split:
    path = Path(path)
    raw = read_json(path, "a split saved by kit")
    where = {p: i for i, p in enumerate(store.paths[:store.n_train])}
    try:
        train = np.array([where[p] for p in raw["train"]], dtype=np.int64)
        val = np.array([where[p] for p in raw["val"]], dtype=np.int64)
    except KeyError as e:
        raise KitError(f"{path}: names {e.args[0]!r}, which is not a training utterance of "
                       f"{store.layout.data_dir}") from None
    return Split(train, val, int(raw.get("seed", 0)), float(raw.get("val_fraction", 0.0)))


def split_for(store: FeatureStore, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """The split for this store and settings, saved beside the store and reused afterwards."""
    path = store.root / f"split-{seed}-{val_fraction:g}.json"
    if path.is_file():
        return load_split(path, store)
    split = make_split(store.labels[:store.n_train], val_fraction, seed)
    save_split(split, path, store)
    return split


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
    per_speaker = np.bincount([layout.speaker2id[u.speaker] for u in layout.train],
                              minlength=len(layout.speakers))
    from kit.env import cache_dir

    cache, note = cache_dir(root)
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
