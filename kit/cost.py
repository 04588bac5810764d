"""What a recipe's budget costs before anything is pushed: FLOPs counted by torch on the members'
real shapes, projected to GPU hours on Kaggle's GPUs and an H100, and checked against a Kaggle
week (30 GPU hours) and its 12-hour sessions.

Counted, not estimated: a training step is one forward + backward of a batch of 2 crops at the
member's segment length through `torch.utils.flop_counter.FlopCounterMode`, scaled to the batch
(every op here is per-example); evaluation and prediction use `kit.bench.forward_flops` (a, b, c of
a + bL + cL^2 from three counted passes) over the utterance lengths. Projected: GPU time = FLOPs /
(the GPU's published dense fp16/bf16 peak x its utilisation). The utilisations are assumptions, not
measurements (no GPU has been lent to kit's development): see the comment above GPUS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from kit.config import RunConfig

KAGGLE_WEEK_HOURS = 30.0        # Kaggle's weekly GPU quota
KAGGLE_SESSION_HOURS = 12.0     # a Kaggle kernel session's limit
# The share of each GPU's dense fp16/bf16 peak that kit's training reaches: ASSUMED per GPU, not
# measured (no GPU has been lent to kit's development; `kit cost --utilisation U` sets one figure for
# all). kit's members are small (2-7 M parameters, batches of 64 x 200-256 frames), the kind of model
# that keeps a GPU's arithmetic far from busy; large-model training reports 40-50% (PaLM's "model
# FLOPs utilisation"). The P100's fp16 peak is plain vector arithmetic that cuDNN's convolutions
# and GEMMs approach more closely than tensor-core peaks (30%); the T4's 65 TFLOPS are tensor-core
# figures that its 70 W limit and 320 GB/s memory keep small layers far from (12%: it then trains
# ~1.4x a P100, close to what Kaggle users report of the two); an H100's even more so (15%).
# Replace them with a measured step rate when a GPU is lent (README "What it costs").


@dataclass(frozen=True)
class Gpu:
    key: str
    name: str
    tflops: float          # dense fp16/bf16 peak, from the vendor's datasheet
    memory_gib: float
    per_session: int       # GPUs in one Kaggle session (kit trains one member per GPU)
    utilisation: float     # assumed share of `tflops` reached (see above)


GPUS = (
    Gpu("p100", "P100 16 GB (Kaggle 'GPU P100'; fp16 18.7 TFLOPS)", 18.7, 16, 1, 0.30),
    Gpu("t4x2", "2 x T4 16 GB (Kaggle 'GPU T4 x2'; fp16 tensor 65 TFLOPS each)", 65.0, 15, 2, 0.12),
    Gpu("h100", "H100 SXM 80 GB (bf16 dense 989 TFLOPS)", 989.0, 80, 1, 0.15),
)


@dataclass
class MemberCost:
    name: str
    params: int
    batch: int
    segment_len: int
    steps: int
    step_gflop: float          # one training step, forward + backward
    eval_gflop: float          # one evaluation over validation (centre crops, as training scores)
    evals: int
    predict_gflop: float       # validation (twice: whole and windows, for mode = auto) and test once

    @property
    def total_pflop(self) -> float:
        return (self.steps * self.step_gflop + self.evals * self.eval_gflop + self.predict_gflop) / 1e6

    def hours(self, gpu: Gpu, utilisation: float | None = None) -> float:
        return self.total_pflop * 1e15 / (gpu.tflops * 1e12 * (utilisation or gpu.utilisation)) / 3600


def step_gflop(cfg: RunConfig) -> float:
    """GFLOPs of one training step at the member's real batch and crop (counted on 2 crops)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from kit.models import build_model

    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.augment).train()
    n, frames = 2, cfg.data.segment_len
    x, lengths = torch.randn(n, frames, cfg.model.n_mels), torch.full((n,), frames)
    labels = torch.zeros(n, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        torch.nn.functional.cross_entropy(net(x, lengths, labels), labels).backward()
    return counter.get_total_flops() * cfg.train.batch_size / n / 1e9


def member_cost(name: str, cfg: RunConfig, val_lengths: np.ndarray, test_lengths: np.ndarray) -> MemberCost:
    from kit.bench.prediction import forward_flops
    from kit.models import build_model, count_params

    net = build_model(cfg.model).eval()
    flops = forward_flops(net, cfg.model.n_mels)
    crop = np.minimum(val_lengths, 2 * cfg.data.segment_len)
    val = float(flops(val_lengths).sum())
    predict = val + float(flops(test_lengths).sum()) + (val if cfg.infer.mode == "auto" else 0.0)
    steps = cfg.train.max_steps
    return MemberCost(name, count_params(net), cfg.train.batch_size, cfg.data.segment_len, steps,
                      step_gflop(cfg), float(flops(crop).sum()) / 1e9,
                      math.ceil(steps / max(cfg.train.eval_every, 1)), predict / 1e9)


def full_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Utterance lengths drawn like the real data's (the `full` synthetic preset: 200-1,500 frames,
    median 550), for a cost without a data dir."""
    from kit.synth import PRESETS, preset_lengths

    return preset_lengths(PRESETS["full"], np.random.default_rng(seed), n)


def recipe_costs(recipe, budget: str, data_dir: str | None = None) -> list[MemberCost]:
    """Every member of `recipe` in `budget`, at the data dir's lengths (without one: the real
    data's sizes, 5,667 validation and 4,000 test utterances of the `full` preset's lengths)."""
    from kit.recipe import member_config

    if data_dir:
        from kit.data import FeatureStore, split_for

        store = FeatureStore.open(data_dir, progress=False)
        val = store.lengths[split_for(store).val]
        test, n_classes = store.lengths[store.test_index], len(store.speakers)
    else:
        val, test, n_classes = full_lengths(5667, 1), full_lengths(4000, 2), 600
    costs = []
    for name in recipe.members_for(budget):
        cfg = member_config(recipe, name, budget)
        costs.append(member_cost(name, replace(cfg, model=replace(cfg.model, n_classes=n_classes)), val, test))
    return costs


def counted_in_steps(recipe, budget: str, names: list[str] | None = None) -> bool:
    """Whether `budget` ends its members by steps (what kit.cost projects), not by wall-clock minutes
    (the recipe's `minutes` for the budget, or a member's train.minutes): a timed budget's cost is
    its time."""
    from kit.recipe import member_config

    if recipe.minutes.get(budget):
        return False
    return not any(member_config(recipe, n, budget).train.minutes > 0 for n in names or recipe.members_for(budget))


def fits_a_week(costs: list[MemberCost], utilisation: float | None = None) -> bool:
    """Whether some Kaggle GPU (P100, T4 x2) runs these members within one week's quota."""
    return any(kaggle_hours(costs, g, utilisation) <= KAGGLE_WEEK_HOURS for g in GPUS[:2])


def kaggle_hours(costs: list[MemberCost], gpu: Gpu, utilisation: float | None = None) -> float:
    """GPU-quota hours on Kaggle: each session trains `per_session` members at once (longest first
    onto the least busy GPU); the quota counts a session's wall time, not its GPUs."""
    lanes = [0.0] * gpu.per_session
    for h in sorted((c.hours(gpu, utilisation) for c in costs), reverse=True):
        lanes[lanes.index(min(lanes))] += h
    return max(lanes)


def verdict(costs: list[MemberCost], gpu: Gpu, utilisation: float | None = None) -> str:
    hours = kaggle_hours(costs, gpu, utilisation)
    longest = max(c.hours(gpu, utilisation) for c in costs)
    sessions = "" if longest <= KAGGLE_SESSION_HOURS else (
        f"; its longest member needs {math.ceil(longest / KAGGLE_SESSION_HOURS)} sessions (kit continues it)")
    if hours <= KAGGLE_WEEK_HOURS / 2:
        return f"fits a Kaggle week with room for a re-run ({hours:.1f} of {KAGGLE_WEEK_HOURS:.0f} h){sessions}"
    if hours <= KAGGLE_WEEK_HOURS:
        return f"fits a Kaggle week, no room for a re-run ({hours:.1f} of {KAGGLE_WEEK_HOURS:.0f} h){sessions}"
    return f"does NOT fit a Kaggle week ({hours:.1f} of {KAGGLE_WEEK_HOURS:.0f} h){sessions}"


def cost_table(costs: list[MemberCost], utilisation: float | None = None) -> str:
    """The members' counted FLOPs and the projected hours, as a Markdown table, and a verdict per GPU."""
    head = ("| member | params | batch x frames | steps | GFLOP/step | PFLOP total | "
            + " | ".join(f"{g.key} h" for g in GPUS) + " |")
    lines = [head, "|" + "---|" * (6 + len(GPUS))]
    for c in costs:
        lines.append(f"| {c.name} | {c.params / 1e6:.1f} M | {c.batch} x {c.segment_len} | {c.steps:,} | "
                     f"{c.step_gflop:,.0f} | {c.total_pflop:,.1f} | "
                     + " | ".join(f"{c.hours(g, utilisation):.1f}" for g in GPUS) + " |")
    total = sum(c.total_pflop for c in costs)
    lines.append(f"| all | | | | | {total:,.1f} | "
                 + " | ".join(f"{sum(c.hours(g, utilisation) for c in costs):.1f}" for g in GPUS) + " |")
    lines.append("")
    share = f"{utilisation:.0%}" if utilisation else ", ".join(f"{g.key} {g.utilisation:.0%}" for g in GPUS)
    lines.append(f"GPU hours projected at {share} of each GPU's dense fp16/bf16 peak (assumed: kit.cost.GPUS); "
                 "FLOPs counted by torch on the real shapes. t4x2: hours on one T4; a T4 x2 session trains "
                 "two members at once, so the quota below counts the longer of its two lanes.")
    for g in GPUS[:2]:
        lines.append(f"Kaggle {g.name}: {verdict(costs, g, utilisation)}")
    return "\n".join(lines)


def projection_line(recipe, budget: str, names: list[str] | None = None) -> str | None:
    """One line for a launcher: the budget's projected Kaggle GPU hours (None when its members are
    timed by the wall clock: their cost is their minutes)."""
    names = names or recipe.members_for(budget)
    if not counted_in_steps(recipe, budget, names):
        return None
    costs = [c for c in recipe_costs(recipe, budget) if c.name in names]
    hours = ", ".join(f"{kaggle_hours(costs, g):.1f} h on {g.key}" for g in GPUS[:2])
    return (f"projected cost of {', '.join(names)} ({budget} budget): {hours} of Kaggle GPU quota "
            "(FLOPs counted, GPU utilisation assumed: kit recipe cost)")
