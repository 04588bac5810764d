"""Sliding-window prediction: every whole utterance cut into windows, batched, averaged.

`predict_run` writes val_probs.npy, test_probs.npy and ids.json into a run dir. Where the windows
go and how they are batched is kit.windows (shared with training's evaluation; its names stay
importable from here); full_windows, the whole utterance under MAX_FULL_FRAMES, is prediction's own.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kit.config import CHOICES
from kit.data import FeatureStore
from kit.ensemble.calibration import calibrate, fit_temperature, log_probs, mean_nll
from kit.errors import KitError
from kit.fsio import save_numpy, sha256_file
from kit.identity import require_same_data
from kit.records import PredictionIds, refuse_while_training
from kit.split import load_split
from kit.train.results import load_model
from kit.windows import centre_windows, length_batches, sliding_windows
from kit.written import check_written

__all__ = ["AVERAGES", "CPU_MAX_AREA", "MAX_AREA", "MAX_FULL_FRAMES", "MODES", "accuracy", "centre_windows",
           "choose_mode", "full_windows", "length_batches", "predict_index", "predict_one_by_one", "predict_run",
           "predict_windows", "sliding_windows", "source_mode"]

AVERAGES = CHOICES["infer"]["average"]           # ("probs", "logits"), owned by kit.config
# The most frames fed to the model at once. Attention holds (heads, T, T) float32 scores: at
# 4096 frames and 2 heads 134 MB, where a 30,000-frame utterance whole would ask 7.2 GB. A longer
# "whole" utterance goes through as overlapping windows of this length, averaged.
MAX_FULL_FRAMES = 4096
# prediction's caps on a batch (kit.windows.length_batches); training's evaluation has its own
# (kit.train.results.EVAL_FRAMES, EVAL_AREA)
CPU_MAX_AREA = 16 * 256 * 256     # windows x frames^2 per batch on CPU: attention scores stay in cache
MAX_AREA = 4 * MAX_FULL_FRAMES ** 2   # elsewhere: a batch's attention scores stay near 0.5 GB at 2 heads


def full_windows(lengths, max_frames: int | None = None):
    """The whole utterance as one window; one longer than `max_frames` (default MAX_FULL_FRAMES)
    as windows of `max_frames` overlapping by half, so memory stays bounded however long it is."""
    max_frames = max_frames or MAX_FULL_FRAMES
    return sliding_windows(lengths, max_frames, max(1, max_frames // 2))


# ---------------------------------------------------------------- running the model
def _model_device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def predict_windows(model, store: FeatureStore, index, windows, average: str = "probs",
                    batch_size: int = 256, max_frames: int | None = None, n_classes: int | None = None,
                    progress: bool = False, desc: str = "predicting") -> np.ndarray:
    """Run `windows` (utt, start, valid over positions in `index`) through the model in batches
    and average per utterance. Returns probabilities (len(index), C) float32, rows summing to 1.
    """
    if average not in AVERAGES:
        raise KitError(f"average {average!r}: choose one of {', '.join(AVERAGES)}")
    index = np.asarray(index, dtype=np.int64)
    utt, start, valid = windows
    if len(index) == 0:
        return np.zeros((0, n_classes or 0), dtype=np.float32)
    max_frames = max_frames or batch_size * int(np.median(valid))
    device = _model_device(model)
    model.eval()
    sums = None                                                   # (N, C) float64 sums over windows
    counts = np.bincount(utt, minlength=len(index)).astype(np.float64)  # (N,)
    batches = length_batches(valid, max_frames, CPU_MAX_AREA if device.type == "cpu" else MAX_AREA, batch_size)
    with torch.inference_mode():
        for b in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False, mininterval=0.5):
            x, lengths = store.gather_windows(index[utt[b]], start[b], valid[b])     # (B, T, D), (B,)
            logits = model(x.to(device), lengths.to(device))                        # (B, C)
            out = logits.float().softmax(-1) if average == "probs" else logits.float()
            out = out.double().cpu().numpy()
            if sums is None:
                sums = np.zeros((len(index), out.shape[1]), dtype=np.float64)
            np.add.at(sums, utt[b], out)
    assert sums is not None                                       # index is not empty: there was a batch
    mean = sums / counts[:, None]                                 # (N, C)
    if average == "logits":
        mean = np.exp(mean - mean.max(axis=1, keepdims=True))
    mean /= mean.sum(axis=1, keepdims=True)
    return mean.astype(np.float32)


def predict_index(model, store: FeatureStore, index, mode: str = "sliding", window: int = 256,
                  hop: int = 128, average: str = "probs", batch_size: int = 256, n_classes=None,
                  progress: bool = False, desc: str = "predicting") -> np.ndarray:
    """Probabilities (len(index), C) for store utterances `index`; mode sliding | centre | full."""
    lengths = store.lengths[np.asarray(index, dtype=np.int64)]
    if mode == "sliding":
        windows = sliding_windows(lengths, window, hop)
    elif mode == "centre":
        windows = centre_windows(lengths, window)
    elif mode == "full":
        windows = full_windows(lengths)
    else:
        raise KitError(f"inference mode {mode!r}: choose sliding, centre or full")
    return predict_windows(model, store, index, windows, average, batch_size,
                           max_frames=batch_size * window, n_classes=n_classes,
                           progress=progress, desc=desc)


def predict_one_by_one(model, store: FeatureStore, index) -> np.ndarray:
    """The course sample's inference: each whole utterance alone, batch size 1. The baseline
    the batched path is benchmarked against. Returns probabilities (len(index), C) float32."""
    device = _model_device(model)
    model.eval()
    out = []
    with torch.inference_mode():
        for i in np.asarray(index, dtype=np.int64):
            x = torch.from_numpy(np.array(store.utterance(int(i)), dtype=np.float32))[None]  # (1, L, D)
            lengths = torch.tensor([x.shape[1]], dtype=torch.long)
            out.append(model(x.to(device), lengths.to(device)).float().softmax(-1)[0].cpu().numpy())
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), dtype=np.float32)


def accuracy(probs: np.ndarray, labels) -> float | None:
    labels = np.asarray(labels)
    if len(labels) == 0:
        return None
    return float((probs.argmax(axis=1) == labels).mean())


# ---------------------------------------------------------------- one run dir
MODES = CHOICES["infer"]["mode"]     # sliding, full, auto (whichever of full and sliding validates better)


def source_mode(cfg) -> str | None:
    """The mode a fine-tune (train.init_from) is predicted in: the full or sliding its config names,
    its source member's (kit.rounds and kit.distill copy it), validation that way only; None for
    any other run (validation three ways, the mode as configured)."""
    return cfg.infer.mode if cfg.train.init_from and cfg.infer.mode in ("full", "sliding") else None


def choose_mode(val: dict, labels) -> tuple[str, dict]:
    """Pick full or sliding for a member: lower validation NLL after temperature scaling (a
    temperature fixes over/under-confidence, which the ensemble calibrates away anyway), ties
    to sliding. val: mode -> probabilities (N, C). Returns (mode, {mode: calibrated NLL})."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return "sliding", {}
    nll = {}
    for m, probs in val.items():
        lp = log_probs(probs)
        nll[m] = mean_nll(calibrate(lp, fit_temperature(lp, labels)), labels)
    return ("full" if nll["full"] < nll["sliding"] else "sliding"), nll


def predict_run(run_dir: str | os.PathLike, store: FeatureStore | None = None, window: int | None = None,
                hop: int | None = None, full: bool | None = None, average: str | None = None,
                which: str = "best", batch_size: int | None = None, progress: bool = True,
                device: str = "auto", mode: str | None = None, compare: bool = True) -> dict:
    """Predict a run's validation and test utterances; write val_probs.npy, test_probs.npy and
    ids.json (with the SHA-256 of the checkpoint predicted from and of the two .npy files) into the
    run dir. None settings come from the run's cfg.infer.

    mode: sliding | full | auto (auto: the one of full and sliding with the lower calibrated
    validation NLL, see choose_mode). None: full=True -> full, full=False -> sliding, full=None
    -> cfg.infer.mode if the config has one, else cfg.infer.full. Validation is predicted in
    all three ways (centre, full, sliding) and each saved as val_probs_<way>.npy; val_probs.npy
    and test_probs.npy are in the chosen mode.

    compare=False with mode full or sliding: validation in that mode only (a fine-tuned member
    predicted in its source member's mode; the other accuracies are then None).

    Refused, before anything is written: a run a trainer is working on, and a checkpoint that
    predicts NaN or inf (a diverged run).

    Returns val_acc (of the chosen mode), val accuracies of centre-crop, full-length and
    sliding-window inference, so the caller can show what the windows buy, and the mode.
    """
    run_dir = Path(run_dir)
    _check_run(run_dir, mode, full)
    model, cfg, digest = _load_model(run_dir, which, device)
    asked = _settings(cfg.infer, run_dir, window=window, hop=hop, full=full, average=average,
                      batch_size=batch_size, mode=mode)
    if store is None:
        store = FeatureStore.open(cfg.data.data_dir, dtype=cfg.data.store_dtype, progress=progress)
    require_same_data(run_dir, store.layout.data_dir)
    if len(store.speakers) != cfg.model.n_classes:
        raise KitError(f"{run_dir}: the model has {cfg.model.n_classes} classes but "
                       f"{store.layout.data_dir} has {len(store.speakers)} speakers")
    split = load_split(run_dir / "split.json", store)
    common = dict(window=asked["window"], hop=asked["hop"], average=asked["average"],
                  batch_size=asked["batch_size"], n_classes=cfg.model.n_classes, progress=progress)
    t0 = time.perf_counter()
    val = _predict_validation(model, store, split.val, asked["mode"], common, compare)
    _require_finite(run_dir, which, "validation", *val.values())
    chosen, nll = _chosen_mode(val, asked["mode"], store.labels[split.val])
    t1 = time.perf_counter()
    test_probs = predict_index(model, store, store.test_index, mode=chosen, desc="test", **common)
    _require_finite(run_dir, which, "test", test_probs)
    t2 = time.perf_counter()
    settings = {"window": asked["window"], "hop": asked["hop"], "full": chosen == "full", "mode": chosen,
                "mode_requested": asked["mode"], "average": asked["average"], "which": which}
    result = _save_predictions(run_dir, store, split.val, val, chosen, nll, test_probs,
                               {**settings, "checkpoint_sha256": digest})
    return {**result, "run_dir": str(run_dir), "n_val": int(len(split.val)), "n_test": int(store.n_test),
            **settings, "val_seconds": t1 - t0, "test_seconds": t2 - t1}


def _check_run(run_dir: Path, mode: str | None, full: bool | None) -> None:
    """Refuse what is not a run dir, a run a trainer is writing (its checkpoints are about to
    change under the predictions) and contradictory mode arguments."""
    if not (run_dir / "config.toml").is_file():
        raise KitError(f"{run_dir}: not a run dir (no config.toml); train one with `kit train`")
    refuse_while_training(run_dir, f"run `kit predict {run_dir}`")
    if mode is not None and full is not None:
        raise KitError("give either mode or full, not both")
    if mode is not None and mode not in MODES:
        raise KitError(f"inference mode {mode!r}: choose one of {', '.join(MODES)}")


def _load_model(run_dir: Path, which: str, device: str):
    """The run's model (which: best | last | avg) on `device` (auto: a GPU when there is one), its
    config, and the SHA-256 of the checkpoint file it was read from."""
    path = run_dir / f"{which}.pt"
    # hashed before and after reading: a file swapped in between would bind these predictions
    # to weights they did not come from
    before = sha256_file(path) if path.is_file() else None      # load_model refuses a missing one
    model, cfg = load_model(run_dir, which)                     # and names a damaged one
    if sha256_file(path) != before:
        raise KitError(f"{path}: changed while it was read (is something training this run?); "
                       f"run `kit predict {run_dir}` again")
    check_written(path, before)
    model.to(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    return model, cfg, before


def _require_finite(run_dir: Path, which: str, what: str, *probs) -> None:
    """Refuse NaN or inf probabilities: a diverged run would drag any vote it joined to one class."""
    if not all(np.isfinite(p).all() for p in probs):
        raise KitError(f"{run_dir}: its {which}.pt predicts non-finite probabilities for {what} utterances "
                       "(the run diverged); nothing was written: train it again (e.g. a lower train.lr) "
                       "or leave it out")


def _settings(inf, run_dir: Path, window, hop, full, average, batch_size, mode) -> dict:
    """The prediction settings: what was asked, else the run's cfg.infer; refused before any work."""
    if mode is None:
        mode = ("full" if inf.full else inf.mode) if full is None else ("full" if full else "sliding")
    if mode not in MODES:
        raise KitError(f"{run_dir}: infer.mode {mode!r}: choose one of {', '.join(MODES)}")
    if hop is None:            # the run's hop, but never past a window the user asked for
        hop = inf.hop if window is None else min(int(inf.hop), int(window))
    settings = {"window": int(inf.window if window is None else window), "hop": int(hop),
                "mode": mode, "average": inf.average if average is None else average,
                "batch_size": int(inf.batch_size if batch_size is None else batch_size)}
    if settings["batch_size"] < 1:
        raise KitError(f"batch size {settings['batch_size']}: must be at least 1")
    sliding_windows([1], settings["window"], settings["hop"])          # refuses a bad window or hop
    if settings["window"] > MAX_FULL_FRAMES:
        raise KitError(f"window {settings['window']}: at most {MAX_FULL_FRAMES} frames (attention memory grows "
                       "with its square); for whole utterances use --mode full")
    if settings["average"] not in AVERAGES:
        raise KitError(f"average {settings['average']!r}: choose one of {', '.join(AVERAGES)}")
    return settings


def _predict_validation(model, store: FeatureStore, val_index, mode: str, common: dict,
                        compare: bool = True) -> dict:
    """Validation three ways (it is small) so the table shows what the windows buy (compare=False
    with mode full or sliding: that way only). Returns {way: probabilities (N, C)}."""
    ways = (mode,) if not compare and mode in ("full", "sliding") else ("centre", "full", "sliding")
    return {m: predict_index(model, store, val_index, mode=m, desc=f"val {m}", **common) for m in ways}


def _chosen_mode(val: dict, mode: str, labels) -> tuple[str, dict]:
    """The mode test is predicted in, and {mode: calibrated NLL} when full and sliding were compared."""
    if "full" not in val or "sliding" not in val:
        return mode, {}
    chosen, nll = choose_mode({m: val[m] for m in ("full", "sliding")}, labels)
    return (chosen if mode == "auto" else mode), nll


def _save_predictions(run_dir: Path, store: FeatureStore, val_index, val: dict, mode: str, nll: dict,
                      test_probs, settings: dict) -> dict:
    """val_probs_<way>.npy, val_probs.npy and test_probs.npy (in `mode`) and ids.json (with the
    SHA-256 of the last two); returns the validation accuracies (and calibrated NLLs) ids.json records."""
    val_labels = store.labels[val_index]
    # ids.json binds the files below to the checkpoint they came from: removed first and written
    # last, so a kill in between leaves a run with no predictions, never new files under old ids
    (run_dir / "ids.json").unlink(missing_ok=True)
    for m, probs in val.items():
        save_numpy(run_dir / f"val_probs_{m}.npy", probs)
    save_numpy(run_dir / "val_probs.npy", val[mode])
    save_numpy(run_dir / "test_probs.npy", test_probs)
    # the readers check these: a file swapped in from another run, or damaged, is never voted
    val_sha256, test_sha256 = sha256_file(run_dir / "val_probs.npy"), sha256_file(run_dir / "test_probs.npy")
    result: dict[str, Any] = {
        "val_acc": accuracy(val[mode], val_labels),
        **{f"val_acc_{m}": accuracy(val[m], val_labels) if m in val else None for m in ("centre", "full", "sliding")},
        "val_nll_full": nll.get("full"),            # after temperature scaling; None without validation
        "val_nll_sliding": nll.get("sliding"),
    }
    PredictionIds(val=[store.paths[i] for i in val_index], val_labels=[int(v) for v in val_labels],
                  test=[store.paths[i] for i in store.test_index], **settings,
                  data_dir=str(Path(store.layout.data_dir).resolve()), val_probs_sha256=val_sha256,
                  test_probs_sha256=test_sha256, data_features=store.content_digest, data_key=store.key,
                  **result).save(run_dir / "ids.json")
    return result
