"""One batching path (kit.windows.length_batches, FeatureStore.gather_windows) for training's
evaluation and prediction: its batches, gathers and evaluation numbers equal those of the two paths
it replaced (kept below as references: results.evaluate's shortest-first loop with crop_batch, and
kit.infer's batch_plan and numpy gather_windows), so no accuracy or prediction moved."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kit.train.results
from kit.config import RunConfig
from kit.data import PAD_VALUE, FeatureStore
from kit.models import build_model
from kit.split import split_for
from kit.train.results import evaluate
from kit.windows import centre_windows, length_batches, sliding_windows


# ---------------------------------------------------------------- the replaced code, as references
def old_batch_plan(valid_len, batch_size, max_frames, max_area=None):
    """kit.infer.batch_plan before the batching was shared."""
    valid_len = np.asarray(valid_len)
    order = np.argsort(-valid_len, kind="stable")
    batches, i = [], 0
    while i < len(order):
        longest = max(int(valid_len[order[i]]), 1)
        take = min(batch_size, max_frames // longest)
        if max_area:
            take = min(take, max_area // (longest * longest))
        take = max(1, take)
        batches.append(order[i:i + take])
        i += take
    return batches


def old_eval_batches(frames, max_frames, max_area):
    """The batching loop of kit.train.results.evaluate before it was shared (positions in frames)."""
    order = np.argsort(frames, kind="stable")
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * int(frames[order[end]]) <= max_frames \
                and (end - start + 1) * int(frames[order[end]]) ** 2 <= max_area:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def old_gather_windows(store, store_index, start, valid_len):
    """kit.infer.gather_windows (numpy) before the gather was shared."""
    store_index = np.asarray(store_index, dtype=np.int64)
    T = int(valid_len.max())
    steps = np.arange(T)
    rows = (store.offsets[store_index] + start)[:, None] + np.minimum(steps[None, :], valid_len[:, None] - 1)
    x = np.asarray(store.features[rows], dtype=np.float32)
    x[steps[None, :] >= valid_len[:, None]] = PAD_VALUE
    return x, valid_len.astype(np.int64)


@torch.no_grad()
def old_evaluate(model, store, index, max_frames=None):
    """kit.train.results.evaluate before the batching was shared (one CPU process)."""
    model.eval()
    frames = store.lengths if max_frames is None else np.minimum(store.lengths, max_frames)
    order = np.asarray(index)[np.argsort(frames[index], kind="stable")]
    loss_sum, correct = torch.zeros(()), torch.zeros(())
    for b in old_eval_batches(frames[order], kit.train.results.EVAL_FRAMES, kit.train.results.EVAL_AREA):
        batch = order[b]
        x, lengths = store.crop_batch(batch, int(frames[batch].max()), None, random=False)
        y = torch.from_numpy(store.labels[batch])
        logits = model(x, lengths).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
    return float(loss_sum) / len(index), float(correct) / len(index)


class OneCPU:
    """What evaluate() asks of an accelerate.Accelerator, for one CPU process."""
    process_index, num_processes, device = 0, 1, torch.device("cpu")

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def reduce(self, tensor, reduction="sum"):
        return tensor


@pytest.fixture(scope="module", params=["float32", "float16"])
def store(request, tiny_data, tmp_path_factory):
    return FeatureStore.open(tiny_data, dtype=request.param, cache_dir=tmp_path_factory.mktemp("cache"),
                             progress=False)


# ---------------------------------------------------------------- the batches
def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_length_batches_are_the_old_prediction_and_evaluation_batches(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 400, rng.integers(1, 300))
    lengths[rng.integers(0, len(lengths), len(lengths) // 3)] = 120        # ties keep their order
    prediction_caps = [(3, 600, None), (16, 16 * 40, 16 * 256 * 256), (256, 256 * 64, 4 * 4096 ** 2), (8, 10, 50),
                       (1, 1000, None)]
    for batch_size, max_frames, max_area in prediction_caps:
        assert _same(length_batches(lengths, max_frames, max_area, batch_size),
                     old_batch_plan(lengths, batch_size, max_frames, max_area))
    for max_frames, max_area in [(64 * 1024, 16 * 1024 * 1024), (1000, 10**5), (500, 30_000), (50, 100)]:
        assert _same(length_batches(lengths, max_frames, max_area, longest_first=False),
                     old_eval_batches(lengths, max_frames, max_area))


def test_length_batches_of_nothing_and_of_a_window_over_the_caps():
    assert length_batches([], 100) == []
    assert [len(b) for b in length_batches([500, 5], max_frames=100)] == [1, 1]     # too long: alone


# ---------------------------------------------------------------- the gather and what it feeds
def test_gather_windows_is_the_old_gather(store):
    lengths = store.lengths[store.test_index]
    for utt, start, valid in (sliding_windows(lengths, 40, 20), centre_windows(lengths, 64),
                              centre_windows(lengths, 10**6)):
        for b in length_batches(valid, 16 * 64, None, 16):
            x, n = store.gather_windows(store.test_index[utt[b]], start[b], valid[b])
            ref_x, ref_n = old_gather_windows(store, store.test_index[utt[b]], start[b], valid[b])
            assert x.dtype == torch.float32 and np.array_equal(x.numpy(), ref_x)
            assert n.dtype == torch.int64 and np.array_equal(n.numpy(), ref_n)


def _model(store, pooling):
    cfg = RunConfig().model
    cfg.d_model, cfg.ffn_dim, cfg.pooling = 16, 32, pooling
    cfg.n_mels, cfg.n_classes = store.n_mels, len(store.speakers)
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("caps", [(64 * 1024, 16 * 1024 * 1024), (1000, 10**5), (500, 30_000)])
def test_evaluate_gives_the_old_numbers(store, caps, monkeypatch):
    monkeypatch.setattr(kit.train.results, "EVAL_FRAMES", caps[0])
    monkeypatch.setattr(kit.train.results, "EVAL_AREA", caps[1])
    val = split_for(store, 0.25, 0).val
    for pooling in ("mean", "sap"):
        model = _model(store, pooling)
        for max_frames in (None, 100, 48, 7):
            for index in (val, store.train_index):
                assert evaluate(model, store, index, OneCPU(), max_frames) == \
                    old_evaluate(model, store, index, max_frames)                # bit for bit
