"""Prediction benchmarks: utterances/s of kit's batched sliding windows vs the course's one
utterance at a time, and on a CPU the ceiling any batching could reach (FLOPs at the matmul peak).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kit.bench.common import course_model, row, time_once, time_warm
from kit.course import course_predict
from kit.infer import predict_index, sliding_windows
from kit.models import build_model


def forward_flops(model, n_mels: int):
    """FLOPs of one forward pass over a (1, L) utterance as a function of L, fitted as
    a + b L + c L^2 from three counted passes: exact for these models (linear layers and convs
    grow with L, attention with L^2). Attention is counted through torch's math kernel."""
    lengths, counts = (64, 128, 256), []
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)      # nn.TransformerEncoder's fused path: not counted
    try:
        for L in lengths:
            with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.inference_mode():
                model(torch.zeros(1, L, n_mels), torch.tensor([L]))
            counts.append(counter.get_total_flops())
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    coef = np.polyfit(lengths, counts, 2)
    return lambda L: np.polyval(coef, np.asarray(L, dtype=np.float64))


def matmul_peak(seconds: float = 0.5, n: int = 1024) -> float:
    """FLOP/s of large fp32 matrix products on this CPU (all of torch's threads): about the most
    arithmetic any model code can get out of it."""
    # deferred: torch.utils.benchmark warns on import on a machine with a CUDA toolkit and no GPU
    from torch.utils.benchmark import Timer

    timer = Timer("a @ b", globals={"a": torch.randn(n, n), "b": torch.randn(n, n)},
                  num_threads=torch.get_num_threads())
    return 2 * n ** 3 / timer.blocked_autorange(min_run_time=seconds).mean


def bench_prediction(data_dir, store, cfg, limit: int | None = None) -> list[dict]:
    """Utterances/s over the test set: batched sliding windows (the run's window/hop, and
    non-overlapping windows) vs the course's one utterance at a time, both on the GPU when there is
    one. On a CPU, one more row says how far any batching could go: kit's windows' arithmetic at the
    machine's matmul peak."""
    torch.manual_seed(0)
    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model).eval().to(device)
    index = store.test_index[:limit] if limit else store.test_index
    paths = [store.paths[i] for i in index]
    inf = cfg.infer
    stock = course_model(cfg.model, like=model).to(device)   # same weights; built outside the clock
    t_base = time_once(lambda: course_predict(stock, data_dir, paths))
    rows, kit_times = [], {}
    for hop in (inf.hop, inf.window):
        kit_times[hop] = time_warm(functools.partial(predict_index, model, store, index, mode="sliding",
                                                     window=inf.window, hop=hop, batch_size=inf.batch_size,
                                                     n_classes=cfg.model.n_classes))
        rows.append(row(f"prediction ({len(index)} test utterances, window {inf.window}/hop {hop})",
                        "utterances/s", len(index) / t_base, len(index) / kit_times[hop], None,
                        note="baseline: DataLoader batch 1, torch.load per file, whole utterance"))
    if device.type == "cpu":
        flops = forward_flops(model, store.n_mels)
        lengths = store.lengths[index]
        base_flops = float(flops(lengths).sum())
        kit_flops = float(flops(sliding_windows(lengths, inf.window, inf.window)[2]).sum())
        peak = matmul_peak()
        t_kit = kit_times[inf.window]
        rows.append(row(f"prediction ceiling: kit's window {inf.window}/hop {inf.window} arithmetic at this "
                        "CPU's fp32 matmul peak", "utterances/s", len(index) / t_base,
                        len(index) * peak / kit_flops, None,
                        note=f"arithmetic: course {base_flops / 1e9:.1f} GFLOP at {base_flops / t_base / 1e9:.0f} "
                             f"GFLOP/s, kit {kit_flops / 1e9:.1f} GFLOP at {kit_flops / t_kit / 1e9:.0f} GFLOP/s; "
                             f"matmul peak {peak / 1e9:.0f} GFLOP/s: no batching can beat this ratio without "
                             "doing less arithmetic"))
    return rows
