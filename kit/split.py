"""The seeded train/validation split of a FeatureStore's training utterances: drawn per speaker,
saved by feature path beside the store (and into each run dir), and reused afterwards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.errors import KitError
from kit.fsio import read_json, write_json

if TYPE_CHECKING:   # cycle: kit.data re-exports this module's names
    from kit.data import FeatureStore


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
    if not (isinstance(raw, dict) and all(isinstance(raw.get(k), list) and all(isinstance(p, str) for p in raw[k])
                                          for k in ("train", "val"))):
        raise KitError(f"{path}: not a split saved by kit (it holds lists 'train' and 'val' of feature file names)")
    where = {p: i for i, p in enumerate(store.paths[:store.n_train])}
    try:
        train = np.array([where[p] for p in raw["train"]], dtype=np.int64)
        val = np.array([where[p] for p in raw["val"]], dtype=np.int64)
    except KeyError as e:
        raise KitError(f"{path}: names {e.args[0]!r}, which is not a training utterance of "
                       f"{store.layout.data_dir}") from None
    both, missing = len(np.intersect1d(train, val)), store.n_train - len(np.union1d(train, val))
    if both or missing or len(np.unique(train)) != len(train) or len(np.unique(val)) != len(val):
        raise KitError(f"{path}: not a split of {store.layout.data_dir}'s {store.n_train} training utterances "
                       f"({both} in both train and val, {missing} in neither, or one named twice)")
    return Split(train, val, int(raw.get("seed", 0)), float(raw.get("val_fraction", 0.0)))


def split_for(store: FeatureStore, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """The split for this store and settings (make_split, deterministic), saved beside the store. The copy there
    is used only when it is that split: a damaged one, or one edited by hand that is still a partition (probe 58
    F3: two runs of one seed then validated on two splits, and the vote blamed the seed), is written again."""
    path = store.root / f"split-{seed}-{val_fraction:g}.json"
    split = make_split(store.labels[:store.n_train], val_fraction, seed)
    if path.is_file():
        try:
            cached = load_split(path, store)
        except KitError:
            cached = None
        if cached is not None and np.array_equal(cached.train, split.train) and np.array_equal(cached.val, split.val):
            return cached
    save_split(split, path, store)
    return split
