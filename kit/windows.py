"""Where the windows of an utterance go, and how windows are batched: the one batching path of
training's evaluation (kit.train.results.evaluate: one centre window per utterance, the crop behind
val_acc_crop) and of prediction (kit.infer: sliding, centre or full windows, behind val_acc; full
windows, capped at kit.infer.MAX_FULL_FRAMES, are its own).

A window is (utt, start, valid): the utterance (a position in the caller's index), its first frame
and its frame count. `length_batches` groups windows of similar length under the caller's caps;
FeatureStore.gather_windows cuts a batch of them out of the store, padded.
"""
from __future__ import annotations

import numpy as np

from kit.errors import KitError


def sliding_windows(lengths, window: int, hop: int):
    """Windows of `window` frames every `hop` frames over each utterance.

    The last window is aligned to the utterance end so every frame is covered; an
    utterance no longer than a window is one window of its own length (padded and masked
    later). Returns (utt_index, start, valid_len), each (n_windows,) int64, windows of an
    utterance consecutive and in time order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if window < 1:                  # named alone: a hop left to its default follows the window (probe 40)
        raise KitError(f"window {window} must be at least 1 frame")
    if hop < 1:
        raise KitError(f"hop {hop} must be at least 1 frame")
    if hop > window:
        raise KitError(f"hop {hop} > window {window} would skip frames; use hop <= window")
    room = np.maximum(lengths - window, 0)                         # (N,) frames past one window
    n_win = -(-room // hop) + 1                                    # (N,) ceil(room / hop) + 1
    utt = np.repeat(np.arange(len(lengths), dtype=np.int64), n_win)  # (W,)
    first = np.cumsum(n_win) - n_win                                 # (N,) first window of each
    k = np.arange(len(utt), dtype=np.int64) - first[utt]            # (W,) window number within its utterance
    start = np.minimum(k * hop, room[utt])
    valid = np.minimum(lengths[utt], window)
    return utt, start, valid


def centre_windows(lengths, window: int):
    """One window of `window` frames at the centre of each utterance (the whole of a short one)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return (np.arange(len(lengths), dtype=np.int64), np.maximum(lengths - window, 0) // 2,
            np.minimum(lengths, window))


def length_batches(lengths, max_frames: int, max_area: int | None = None, batch_size: int | None = None,
                   longest_first: bool = True) -> list[np.ndarray]:
    """Split windows of `lengths` frames into batches of similar length: a list of index arrays.

    The windows are sorted by length (stable; longest first, or shortest first) and cut greedily
    in that order: a batch grows while, padded to its longest window, it holds at most `batch_size`
    windows (None: no count cap), `max_frames` frames and, if given, `max_area` windows x frames^2
    (attention scores). A window over the caps is a batch of its own. On CPU attention is
    memory-bound: measured on the demo set, 16 windows of 256 frames ran 1.6x faster than 256 of
    them, and full-length batches 2.5x faster.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths if longest_first else lengths, kind="stable")
    batches, i = [], 0
    while i < len(order):
        cap = min(len(order) - i, batch_size or len(order), max(1, max_frames))   # every window has a frame
        longest = np.maximum(np.maximum.accumulate(lengths[order[i:i + cap]]), 1)  # (cap,) padded length
        count = np.arange(1, cap + 1, dtype=np.int64)                              # (cap,) windows
        fits = count * longest <= max_frames                   # grows with count: the batch is a prefix
        if max_area:
            fits &= count * longest * longest <= max_area
        take = cap if fits.all() else max(1, int(np.argmin(fits)))
        batches.append(order[i:i + take])
        i += take
    return batches
