"""Ensemble members on disk: a predicted run dir's ids and probabilities (written by `kit predict`),
checked against each other and against the data dir the CSV will be for.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.config import from_dict, load_toml
from kit.env import cache_dir, note_line, progress_visible
from kit.errors import KitError
from kit.identity import require_same_data
from kit.layout import Layout, read_layout
from kit.records import PREDICTION_FILES, PredictionIds, foreign_predictions, refuse_while_training, stale_checkpoint


@dataclass
class Member:
    run_dir: Path
    ids: PredictionIds
    val_probs: np.ndarray      # (n_val, C)
    test_probs: np.ndarray     # (n_test, C)
    test_sha256: str = ""      # of the test_probs.npy bytes these probabilities were read from

    @property
    def val_labels(self) -> np.ndarray:
        return np.asarray(self.ids.val_labels, dtype=np.int64)


def load_member(run_dir: str | os.PathLike) -> Member:
    """A predicted run dir's ids and probabilities, with a clear error if a trainer is training it
    now, if prediction is missing, older than the run's checkpoint, of a checkpoint its training did
    not write (checkpoints.json), not the bytes ids.json recorded, or not probabilities (NaN or inf: a
    diverged run). Every reader of predictions comes here (kit ensemble, report, pseudo, distill), so
    each check is made once, in one place."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KitError(f"{run_dir}: run dir not found")
    refuse_while_training(run_dir, f"run `kit predict {run_dir}` again before using its predictions")
    files = [run_dir / n for n in PREDICTION_FILES]
    for f in files:
        if not f.is_file():
            raise KitError(f"{run_dir}: no {f.name}; run `kit predict {run_dir}` first")
    ids = PredictionIds.load(files[0])
    (val, _), (test, test_sha256) = (_read_probabilities(run_dir, f, ids) for f in files[1:])
    if val.shape[0] != len(ids.val) or test.shape[0] != len(ids.test) or val.shape[1:] != test.shape[1:]:
        raise KitError(f"{run_dir}: val_probs/test_probs shapes {val.shape}/{test.shape} do not match "
                       f"ids.json; run `kit predict {run_dir}` again")
    ckpt = stale_checkpoint(run_dir, ids)
    if ckpt is not None:
        raise KitError(f"{run_dir}: its predictions do not come from the {ckpt.name} there now (trained on since, "
                       f"or replaced or damaged); run `kit predict {run_dir}{_which_flag(ids)}` again")
    foreign = foreign_predictions(run_dir, ids)
    if foreign:
        raise KitError(foreign)
    return Member(run_dir, ids, val, test, test_sha256)


def _read_probabilities(run_dir: Path, path: Path, ids: PredictionIds) -> tuple[np.ndarray, str]:
    """val_probs.npy or test_probs.npy, (N, C), and the SHA-256 of its bytes: read once, so the bytes
    hashed are the bytes loaded (a file swapped in from another run, of the same shape, would otherwise
    vote unnoticed) and the digest a manifest or teacher records is of what was voted."""
    again = f"run `kit predict {run_dir}{_which_flag(ids)}` again"
    try:
        data = path.read_bytes()
        probs = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise KitError(f"{path}: unreadable predictions ({e}); {again}") from None
    recorded, actual = ids.recorded_sha256(path.name), hashlib.sha256(data).hexdigest()
    if recorded is not None and actual != recorded:     # None: an ids.json from before kit recorded digests
        raise KitError(f"{path}: not the predictions ids.json recorded (sha256 {actual[:12]}, "
                       f"recorded {recorded[:12]}); {again}")
    _require_probabilities(run_dir, path, probs, again)
    return probs, actual


# how far a row of stored probabilities may sum from 1: kit writes float32 rows normalised in
# float64, off by about 1e-7 per class
ROW_SUM_TOLERANCE = 1e-3


def _require_probabilities(run_dir: Path, path: Path, probs: np.ndarray, again: str) -> None:
    """Refuse what `kit predict` never writes: it stores probabilities (softmax, rows summing to 1),
    not log-probabilities or logits, as float32 (rows, classes)."""
    if probs.ndim != 2:
        raise KitError(f"{path}: not probabilities (shape {probs.shape}, not (rows, classes)); {again}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise KitError(f"{path}: not probabilities (dtype {probs.dtype}, not float); {again}")
    if not np.isfinite(probs).all():
        raise KitError(f"{run_dir}: {path.name} holds non-finite probabilities (the run diverged); "
                       "leave it out of the vote, or train it again (e.g. a lower train.lr)")
    if (probs < 0).any():
        row = int(np.argwhere(probs < 0)[0][0])
        raise KitError(f"{path}: not probabilities (negative values, e.g. in row {row}: "
                       f"log-probabilities or logits?); {again}")
    sums = probs.sum(axis=1, dtype=np.float64)                      # (N,)
    off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise KitError(f"{path}: not probabilities (row {row} sums to {sums[row]:.4g}, not 1); {again}")


def _which_flag(ids: PredictionIds) -> str:
    """The --which that predicts from the same checkpoint again ('' for the default, best)."""
    return f" --which {ids.which}" if ids.which and ids.which != "best" else ""


def check_compatible(members: list[Member]) -> None:
    """Members must share the validation split, the test list and the classes."""
    first = members[0]
    for other in members[1:]:
        if first.ids.data_dir and other.ids.data_dir and first.ids.data_dir != other.ids.data_dir \
                and (other.ids.val != first.ids.val or other.ids.test != first.ids.test):
            raise KitError(f"{first.run_dir} and {other.run_dir} were predicted on different data "
                           f"({first.ids.data_dir} and {other.ids.data_dir}); ensemble runs of one competition")
        if other.ids.val != first.ids.val or other.ids.val_labels != first.ids.val_labels:
            raise KitError(f"{first.run_dir} and {other.run_dir} were validated on different splits (another "
                           "data.split_seed or val_fraction, or their data changed between them: regenerated in "
                           "place?); ensemble runs trained on the same data and split")
        if other.ids.test != first.ids.test:
            raise KitError(f"{first.run_dir} and {other.run_dir} predicted different test sets "
                           "(different data dirs?)")
        if other.test_probs.shape[1] != first.test_probs.shape[1]:
            raise KitError(f"{first.run_dir} has {first.test_probs.shape[1]} classes but "
                           f"{other.run_dir} has {other.test_probs.shape[1]}")
    _check_same_data(members)


def _check_same_data(members: list[Member]) -> None:
    """Every member's data as it trained, and the feature contents each was predicted from: one vote, one version of
    the data (a member predicted again after the test files changed, beside one predicted before),
    and that version the data's now. Every reader of members comes here (kit ensemble, report,
    pseudo, distill, a recipe's vote)."""
    for m in members:           # the layouts first: a changed mapping.json is said as that, not as changed features
        require_same_data(m.run_dir, _data_dir(m))
    by_contents = {m.ids.data_features: m for m in members if m.ids.data_features}
    if len(by_contents) > 1:
        a, b = list(by_contents.values())[:2]
        raise KitError(f"{a.run_dir} and {b.run_dir} were predicted from different contents of "
                       f"{_data_dir(a)}'s feature files (changed between their predictions); run "
                       f"`kit predict` on each member again")
    if by_contents:             # all of one version: is it the data's now? (any member that recorded it)
        member = next(iter(by_contents.values()))
        _require_same_features(member, read_layout(_data_dir(member)), _data_dir(member))


def _data_dir(member: Member) -> str:
    """The data dir the member was predicted on (an older ids.json: the one its config names)."""
    return member.ids.data_dir or from_dict(load_toml(member.run_dir / "config.toml")).data.data_dir


def member_speakers(member: Member) -> tuple[list[str], str]:
    """Class index -> speaker id string, from the data dir the member was predicted on,
    after checking that its test list is that data dir's (so the CSV will be valid)."""
    data_dir = _data_dir(member)
    layout = read_layout(data_dir)
    require_same_data(member.run_dir, data_dir)
    if member.ids.test != [u.path for u in layout.test]:
        raise KitError(f"{member.run_dir}: its test predictions do not follow {data_dir}/testdata.json; "
                       f"run `kit predict {member.run_dir}` again")
    if len(layout.speakers) != member.test_probs.shape[1]:
        raise KitError(f"{member.run_dir}: {member.test_probs.shape[1]} classes but "
                       f"{data_dir}/mapping.json has {len(layout.speakers)} speakers")
    _require_data_labels(member, layout, data_dir)
    return layout.speakers, str(data_dir)


def _require_same_features(member: Member, layout: Layout, data_dir) -> None:
    """The feature files are still what the member was predicted from: when a file's size or time
    changed since (the store key ids.json recorded), the data is packed again (one line says so) and
    its contents compared; a test file replaced in place would otherwise be voted from old predictions."""
    # deferred: kit.data brings torch, which only this check (after a data change) needs
    from kit.data import STORE_DTYPES, FeatureStore, store_key

    ids = member.ids
    key = store_key(layout)
    if not ids.data_features or not ids.data_key or key == ids.data_key:
        return
    note_line(f"{data_dir}: its feature files' sizes or times are not those {member.run_dir} was predicted "
              "with (changed since, or another machine's copy): reading them to compare contents")
    cache = cache_dir(data_dir)[0]          # the dtype packed already, if one is: no second copy of several GB
    packed = [d for d in reversed(STORE_DTYPES) if (cache / f"store-{key}-{d}").is_dir()] or ["float16"]
    if FeatureStore.open(data_dir, packed[0], progress=progress_visible()).content_digest != ids.data_features:
        raise KitError(f"{data_dir}: its feature files changed since {member.run_dir} was predicted (their "
                       f"contents are not what it predicted from); run `kit predict` on each member again")


def _require_data_labels(member: Member, layout: Layout, data_dir) -> None:
    """The validation labels the vote is fitted on are the data's: an ids.json edited by hand, or its val
    list reordered, would fit temperatures and weights to wrong answers."""
    s2i = layout.speaker2id
    labels = {u.path: s2i[u.speaker] for u in layout.train if u.speaker is not None}
    for path, label in zip(member.ids.val, member.ids.val_labels, strict=True):
        if labels.get(path) != label:
            truth = "no training utterance there" if path not in labels else f"class {labels[path]}"
            raise KitError(f"{member.run_dir}/ids.json: validation utterance {path} is labelled class {label}, "
                           f"but {data_dir} has {truth}; run `kit predict {member.run_dir}` again")


def same_predictions(members: list[Member]) -> list[tuple[Path, Path]]:
    """Pairs of members whose test predictions are the same bytes: a `cp -r` of a run dir, or two
    members of identical settings and seed. Each counts in a vote, so that model counts twice."""
    seen: dict[str, Path] = {}
    pairs = []
    for m in members:
        if m.test_sha256 and m.test_sha256 in seen:
            pairs.append((seen[m.test_sha256], m.run_dir))
        seen.setdefault(m.test_sha256, m.run_dir)
    return pairs


COLLAPSED_SHARE = 0.5       # a member giving one speaker to more than this share of test has collapsed


def collapsed(members: list[Member]) -> list[tuple[Path, float]]:
    """(run dir, share) of the members that give one speaker to more than half of the test utterances
    (of more than two speakers): a run collapsed to one class has finite probabilities, so no NaN
    check sees it, and in a plain vote it pulls every utterance toward that speaker."""
    found = []
    for m in members:
        pred = m.test_probs.argmax(axis=1)
        if len(pred) >= 4 and m.test_probs.shape[1] > 2:
            share = float(np.bincount(pred).max() / len(pred))
            if share > COLLAPSED_SHARE:
                found.append((m.run_dir, share))
    return found
