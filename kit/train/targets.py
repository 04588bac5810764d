"""What a batch is trained towards: the training split's labels, optionally pseudo-labelled test
utterances (`data.pseudo_labels`, from `kit pseudo`) and a teacher's soft targets on test
utterances (`train.teacher`, from `kit distill`).

Only test utterances may be added: a pseudo-label or teacher file that names a training or
validation utterance is refused, so validation is never trained on. Pseudo-labels `kit pseudo` did
not write (an answer key, say) are refused unless data.allow_external_labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kit.data import FeatureStore
from kit.errors import KitError
from kit.pseudo import check_pseudo_labels
from kit.split import Split


@dataclass
class Targets:
    index: np.ndarray                    # (N,) store rows crops are drawn from: train split + added test
    labels: np.ndarray                   # (rows,) int64: label / pseudo-label / teacher's argmax; -1 unused
    soft: np.ndarray | None = None       # (S, C) float32 teacher probabilities
    soft_row: np.ndarray | None = None   # (rows,) int64: row of `soft` per store row, -1 = none
    hard: np.ndarray | None = None       # (rows,) bool: the label is a real or pseudo label
    distill_weight: float = 0.5          # weight of the soft target where a row has both
    n_pseudo: int = 0
    n_teacher: int = 0

    def batch(self, rows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(y (B,) int64 for margins and accuracy, target (B, C) probabilities or None: plain labels)."""
        y = torch.from_numpy(self.labels[rows]).to(device)
        if self.soft is None:
            return y, None
        assert self.soft_row is not None and self.hard is not None       # set with `soft`
        srow, hard = self.soft_row[rows], self.hard[rows]
        n_classes = self.soft.shape[1]
        target = np.zeros((len(rows), n_classes), dtype=np.float32)
        target[np.arange(len(rows)), self.labels[rows]] = 1.0
        has = srow >= 0
        w = np.where(hard[has], self.distill_weight, 1.0).astype(np.float32)[:, None]
        target[has] = (1 - w) * target[has] + w * self.soft[srow[has]]
        return y, torch.from_numpy(target).to(device)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
            smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against labels, or against target probabilities (labels mixed with soft targets);
    `smoothing` (train.label_smoothing) mixes either with the uniform distribution."""
    return F.cross_entropy(logits, y if target is None else target, label_smoothing=smoothing)


def _test_rows(store: FeatureStore, ids, source: Path) -> np.ndarray:
    """Store rows of test utterances named by feature path; anything else is refused."""
    test = {u.path: store.n_train + i for i, u in enumerate(store.layout.test)}
    train = {u.path for u in store.layout.train}
    found: list[int] = []
    for name in ids:
        if name in train:
            raise KitError(f"{source}: {name} is a training utterance; only test utterances may be "
                           "pseudo-labelled or distilled on (validation must stay unseen)")
        if name not in test:
            raise KitError(f"{source}: {name} is not a test utterance of {store.layout.data_dir}")
        found.append(test[name])
    rows = np.asarray(found, dtype=np.int64)
    if len(np.unique(rows)) != len(rows):
        twice = next(name for i, (name, row) in enumerate(zip(ids, found, strict=True)) if row in found[:i])
        raise KitError(f"{source}: the test utterance {twice} is listed twice")
    return rows


def read_pseudo_labels(path: str, store: FeatureStore, allow_external: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(store rows, class ids) from a CSV Id,Category[,...] of test utterances; one `kit pseudo`
    wrote (kit.pseudo.check_pseudo_labels) unless allow_external."""
    source = Path(path)
    if not source.is_file():
        raise KitError(f"{source}: pseudo-label file not found (data.pseudo_labels)")
    try:
        check_pseudo_labels(source, allow_external)
    except KitError as e:               # a recipe or member TOML has no flag to pass: name the setting too
        raise KitError(f"{e} (data.allow_external_labels = true in a config)") from None
    try:
        frame = pd.read_csv(source, dtype={"Id": str, "Category": str})
    except (ValueError, OSError) as e:
        raise KitError(f"{source}: unreadable pseudo-label CSV ({e})") from None
    if not {"Id", "Category"} <= set(frame.columns):
        raise KitError(f"{source}: needs the columns Id,Category (got {','.join(map(str, frame.columns))})")
    s2i = store.layout.speaker2id
    unknown = sorted(set(frame["Category"]) - set(s2i))
    if unknown:
        raise KitError(f"{source}: unknown speaker {unknown[0]!r} (not in mapping.json)")
    return _test_rows(store, frame["Id"], source), frame["Category"].map(s2i).to_numpy(np.int64)


def read_teacher(path: str, store: FeatureStore) -> tuple[np.ndarray, np.ndarray]:
    """(store rows, probabilities (S, C)) from an .npz with `ids` (test feature paths) and `probs`."""
    source = Path(path)
    if not source.is_file():
        raise KitError(f"{source}: teacher file not found (train.teacher)")
    try:
        with np.load(source, allow_pickle=False) as z:
            ids, probs = [str(x) for x in z["ids"]], z["probs"].astype(np.float32)
    except (KeyError, ValueError, OSError) as e:
        raise KitError(f"{source}: unreadable teacher file, expected ids and probs arrays ({e})") from None
    if probs.shape != (len(ids), len(store.speakers)):
        raise KitError(f"{source}: probs has shape {probs.shape}, expected ({len(ids)}, {len(store.speakers)})")
    if not np.all(np.isfinite(probs)) or (probs < 0).any():
        raise KitError(f"{source}: probs must be finite and non-negative")
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    return _test_rows(store, ids, source), probs


def build_targets(store: FeatureStore, split: Split, pseudo_labels: str = "", teacher: str = "",
                  distill_weight: float = 0.5, allow_external_labels: bool = False,
                  train_on_val: bool = False) -> Targets:
    """The rows a run trains on and their targets; without pseudo-labels or a teacher, exactly the
    training split and its labels (with train_on_val, validation's too: a refit). allow_external_labels:
    accept pseudo-labels kit did not make."""
    # `~/x` as the recipe's pre-flight check reads it (kit.members.check_configs)
    pseudo_labels, teacher = (str(Path(p).expanduser()) if p else p for p in (pseudo_labels, teacher))
    labels = store.labels.astype(np.int64).copy()
    if not train_on_val:
        labels[split.val] = -1                  # never a target, whatever is added
    hard = labels >= 0
    index = [np.asarray(np.concatenate([split.train, split.val]) if train_on_val else split.train, dtype=np.int64)]
    targets = Targets(index=index[0], labels=labels, distill_weight=distill_weight)
    if pseudo_labels:
        rows, ids = read_pseudo_labels(pseudo_labels, store, allow_external_labels)
        labels[rows], hard[rows] = ids, True
        index.append(rows)
        targets.n_pseudo = len(rows)
    if teacher:
        rows, probs = read_teacher(teacher, store)
        soft_row = np.full(len(labels), -1, dtype=np.int64)
        soft_row[rows] = np.arange(len(rows))
        unlabelled = rows[~hard[rows]]
        labels[unlabelled] = probs[soft_row[unlabelled]].argmax(axis=1)
        index.append(np.setdiff1d(rows, index[-1] if pseudo_labels else np.empty(0, np.int64)))
        targets.soft, targets.soft_row, targets.n_teacher = probs, soft_row, len(rows)
    targets.index = np.concatenate(index) if len(index) > 1 else index[0]
    targets.hard = hard
    if not train_on_val and np.intersect1d(targets.index, split.val).size:    # only test rows are added
        raise KitError("internal: a validation utterance reached the training rows")
    return targets
