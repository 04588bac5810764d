"""What a recipe's budget costs before anything is pushed: FLOPs counted by torch on the members'
real shapes, projected to GPU hours on Kaggle's GPUs and an H100, and checked against a Kaggle
week (30 GPU hours) and its 12-hour sessions.

Counted, not estimated: a training step is one forward + backward of a batch of 2 crops at the
member's segment length through `torch.utils.flop_counter.FlopCounterMode`, scaled to the batch
(every op here is per-example); evaluation and prediction use `kit.bench.forward_flops` (a, b, c of
a + bL + cL^2 from three counted passes) over the utterance lengths. Projected: GPU time = FLOPs /
(the GPU's published dense fp16/bf16 peak x its utilisation): measured on an H200 for the H100
class, assumed for Kaggle's P100 and T4 (see the comment above GPUS). `--measure` times each
member's real-shape step on the machine's own device and prints the hours there.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kit.audition import cut_step
from kit.bench.prediction import forward_flops
from kit.config import RunConfig
from kit.data import FeatureStore, split_for
from kit.errors import KitError
from kit.models import build_model, count_params
from kit.recipe import member_config
from kit.synth import PRESETS, preset_lengths
from kit.train.loop import resolve_precision

KAGGLE_WEEK_HOURS = 30.0        # Kaggle's weekly GPU quota
KAGGLE_SESSION_HOURS = 12.0     # a Kaggle kernel session's limit
# The share of each GPU's dense fp16/bf16 peak that kit's training reaches. MEASURED on the H100/H200
# class only: `kit recipe cost boss --measure 50` on an NVIDIA H200 (same 989 TFLOPS dense bf16 peak as
# an H100 SXM), 2026-12-04, bf16, the full budget's five members at their real shapes: 31-56 TFLOP/s,
# 3.1-5.7% of the peak, 4.0% over the budget's FLOPs (README "What it costs"). kit's members are small
# (2-7 M parameters, batches of 64 x 200-256 frames): their kernels are too small to fill a big GPU.
# ASSUMED, not measured, on Kaggle's GPUs (none can be reached from here; `kit recipe cost --utilisation
# U` sets one figure for all): the P100's fp16 peak is plain vector arithmetic that cuDNN's convolutions
# and GEMMs approach more closely (30%); the H200 ran every member faster than a P100's whole 18.7
# TFLOPS, so a P100 is bound by its arithmetic, not by kernel launches. The T4's 65 TFLOPS are
# tensor-core figures that its 70 W limit and 320 GB/s memory keep small layers far from (12%: it then
# trains ~1.4x a P100, close to what Kaggle users report of the two). On a Kaggle GPU, `kit recipe
# cost --measure` prints the measured hours beside these.


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
    Gpu("h100", "H100/H200 (bf16 dense 989 TFLOPS; 4% measured on an H200)", 989.0, 80, 1, 0.04),
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

    def hours_at(self, tflops: float) -> float:
        """Hours for all its FLOPs at `tflops` TFLOP/s reached."""
        return self.total_pflop * 1e15 / (tflops * 1e12) / 3600

    def hours(self, gpu: Gpu, utilisation: float | None = None) -> float:
        return self.hours_at(gpu.tflops * (utilisation or gpu.utilisation))


def step_gflop(cfg: RunConfig) -> float:
    """GFLOPs of one training step at the member's real batch and crop (counted on 2 crops)."""
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.augment).train()
    n, frames = 2, cfg.data.segment_len
    x, lengths = torch.randn(n, frames, cfg.model.n_mels), torch.full((n,), frames)
    labels = torch.zeros(n, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        torch.nn.functional.cross_entropy(net(x, lengths, labels), labels).backward()
    return counter.get_total_flops() * cfg.train.batch_size / n / 1e9


@dataclass(frozen=True)
class StepRate:
    """One member's training steps timed on this machine's device (`kit recipe cost --measure`)."""
    device: str
    precision: str
    seconds_per_step: float

    def tflops(self, step_gflop: float) -> float:
        return step_gflop / self.seconds_per_step / 1e3


def measure_step(cfg: RunConfig, steps: int = 30, warmup: int = 5) -> StepRate:
    """Seconds per training step of the member's real model, batch and crop on the device kit would
    train on: random features and labels (the packed store's crop is not timed), AdamW (fused on a
    GPU), the precision train.mixed_precision resolves to. The steady state: `warmup` steps untimed."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.train.mixed_precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.augment).train().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, fused=device.type == "cuda" or None)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    b, frames = cfg.train.batch_size, cfg.data.segment_len
    x = torch.randn(b, frames, cfg.model.n_mels, device=device)
    lengths = torch.full((b,), frames, device=device)
    labels = torch.randint(0, cfg.model.n_classes, (b,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x, lengths, labels).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return StepRate(name, precision, (time.perf_counter() - t0) / steps)


def measured_table(costs: list[MemberCost], rates: list[StepRate]) -> str:
    """The measured step rates beside the counted FLOPs: TFLOP/s reached, and the hours each member
    takes on this device: all its FLOPs (steps, evaluations, prediction) at its training step's rate."""
    precision = {"no": "fp32"}.get(rates[0].precision, rates[0].precision)
    lines = [f"Measured on {rates[0].device} ({precision}; random batches of the real shapes, "
             "steady state): `kit recipe cost --measure`",
             "", "| member | ms/step | TFLOP/s reached | hours for its steps (all FLOPs at that rate) |",
             "|---|---|---|---|"]
    total = 0.0
    for c, r in zip(costs, rates, strict=True):
        hours = c.hours_at(r.tflops(c.step_gflop))
        total += hours
        lines.append(f"| {c.name} | {r.seconds_per_step * 1e3:.1f} | {r.tflops(c.step_gflop):.2f} | {hours:.2f} |")
    lines.append(f"| all, one after another | | | {total:.2f} |")
    return "\n".join(lines)


def _predict_flops(flops, cfg: RunConfig, val_lengths: np.ndarray, test_lengths: np.ndarray) -> float:
    """FLOPs of a member's prediction: validation (twice when infer.mode is auto: whole utterances
    and windows, to choose) and the test set, counted as whole utterances."""
    val = float(flops(val_lengths).sum())
    return val + float(flops(test_lengths).sum()) + (val if cfg.infer.mode == "auto" else 0.0)


def predict_gflop(cfg: RunConfig, val_lengths: np.ndarray, test_lengths: np.ndarray) -> float:
    """GFLOPs of one member's prediction (kit.timeplan turns them into seconds)."""
    net = build_model(cfg.model).eval()
    return _predict_flops(forward_flops(net, cfg.model.n_mels), cfg, val_lengths, test_lengths) / 1e9


def member_cost(name: str, cfg: RunConfig, val_lengths: np.ndarray, test_lengths: np.ndarray) -> MemberCost:
    net = build_model(cfg.model).eval()
    flops = forward_flops(net, cfg.model.n_mels)
    crop = np.minimum(val_lengths, 2 * cfg.data.segment_len)
    steps = cfg.train.max_steps
    return MemberCost(name, count_params(net), cfg.train.batch_size, cfg.data.segment_len, steps,
                      step_gflop(cfg), float(flops(crop).sum()) / 1e9,
                      math.ceil(steps / max(cfg.train.eval_every, 1)),
                      _predict_flops(flops, cfg, val_lengths, test_lengths) / 1e9)


def full_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Utterance lengths drawn like the real data's (the `full` synthetic preset: 200-1,500 frames,
    median 550), for a cost without a data dir."""
    return preset_lengths(PRESETS["full"], np.random.default_rng(seed), n)


def member_configs(recipe, budget: str, n_classes: int = 600, audition: bool = False) -> dict[str, RunConfig]:
    """Each member's config in `budget` (with `audition`, every candidate's and twin's), with the
    competition's number of speakers."""
    names = recipe.members_for(budget, audition) + (list(recipe.audition_for(budget)["twins"]) if audition else [])
    return {name: replace(cfg, model=replace(cfg.model, n_classes=n_classes))
            for name in names for cfg in [member_config(recipe, name, budget)]}


def _sizes(data_dir: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validation and test lengths and the number of speakers: the data dir's, or without one the
    real data's (5,667 validation and 4,000 test utterances of the `full` preset's lengths, 600)."""
    if not data_dir:
        return full_lengths(5667, 1), full_lengths(4000, 2), 600

    store = FeatureStore.open(data_dir, progress=False)
    return store.lengths[split_for(store).val], store.lengths[store.test_index], len(store.speakers)


def recipe_costs(recipe, budget: str, data_dir: str | None = None, audition: bool = False) -> list[MemberCost]:
    """Every member of `recipe` in `budget` (with `audition`, every candidate), at the data dir's
    lengths (without one: the real data's)."""
    val, test, n_classes = _sizes(data_dir)
    costs = []
    for name, cfg in member_configs(recipe, budget, n_classes, audition).items():
        try:
            costs.append(member_cost(name, cfg, val, test))
        except KitError as e:       # a model that cannot be built: named as the recipe's member, as a run names it
            raise KitError(f"{recipe.path}: member {name}: {e}") from None
    return costs


def audition_pieces(costs: list[MemberCost], keep: int, rung: float, dearest: bool) -> list[MemberCost]:
    """A step-based audition's work (kit.audition): every candidate to its cut (`rung` of its steps
    and evaluations, no prediction), then the rest of the schedule and the prediction of the `keep`
    that go on. Which go on is decided on the data: the dearest `keep` (an upper bound) or the cheapest."""
    cut = {c.name: (cut_step(c.steps, rung), round(c.evals * rung)) for c in costs}     # steps, evaluations
    pieces = [replace(c, steps=cut[c.name][0], evals=cut[c.name][1], predict_gflop=0.0) for c in costs]
    kept = sorted(costs, key=lambda c: c.total_pflop, reverse=dearest)[:keep]
    return pieces + [replace(c, steps=c.steps - cut[c.name][0], evals=c.evals - cut[c.name][1]) for c in kept]


def audition_lines(costs: list[MemberCost], fixed: list[MemberCost], spec: dict,
                   utilisation: float | None = None, rates: list[StepRate] | None = None) -> list[str]:
    """The audition's projected hours (`costs`: its candidates and twins; `spec`: Recipe.audition_for's)
    against the fixed members' (`fixed`: what `--no-audition` trains, candidates or not), per Kaggle
    GPU; with `rates` (kit recipe cost --measure, the measured step rates of `costs`), also at this
    machine's rates."""
    keep, rung, twins = spec["keep"], float(spec["rung"]), spec["twins"]
    candidates = [c for c in costs if c.name not in twins]
    # the fewest kept: one (`within` keeps only those close to the best, never fewer than one per GPU); the
    # most: the dearest `keep`, and every twin's whole schedule besides (probe 43: twins were not counted)
    low = audition_pieces(candidates, 1, rung, False)
    high = audition_pieces(candidates, keep, rung, True) + [c for c in costs if c.name in twins]
    head = (f"With the audition (`kit recipe run --audition`): {len(candidates)} candidates to {rung:.0%} of their "
            f"steps, at most the best {keep} on to the end (the cheapest one kept .. the dearest {keep}"
            + (f" and {len(twins)} twin(s) from their first step" if twins else "")
            + f"); the fixed members ({len(fixed)}) beside it:")
    lines = [head]
    for g in GPUS[:2]:
        lines.append(f"  Kaggle {g.key}: {kaggle_hours(low, g, utilisation):.1f} .. "
                     f"{kaggle_hours(high, g, utilisation):.1f} h of quota; fixed members "
                     f"{kaggle_hours(fixed, g, utilisation):.1f} h")
    if rates:
        tflops = {c.name: r.tflops(c.step_gflop) for c, r in zip(costs, rates, strict=True)}

        def hours(pieces: list[MemberCost]) -> float:
            return sum(p.hours_at(tflops[p.name]) for p in pieces)
        zoo = (f"fixed members {hours(fixed):.2f} h" if all(c.name in tflops for c in fixed)
               else "fixed members not measured (not all are candidates)")
        lines.append(f"  measured on {rates[0].device}, one after another: {hours(low):.2f} .. {hours(high):.2f} h; "
                     + zoo)
    return lines


def measure_members(recipe, budget: str, steps: int, data_dir: str | None = None, log=None,
                    audition: bool = False) -> list[StepRate]:
    """measure_step for every member of `budget` (with `audition`, every candidate), in the recipe's
    order (log: one line per member)."""
    rates = []
    for name, cfg in member_configs(recipe, budget, _sizes(data_dir)[2], audition).items():
        if log:
            log(f"timing {steps} training steps of {name} ...")
        rates.append(measure_step(cfg, steps))
    return rates


def counted_in_steps(recipe, budget: str, names: list[str] | None = None) -> bool:
    """Whether `budget` ends its members by steps (what kit.cost projects), not by wall-clock minutes
    (the recipe's `minutes` for the budget, or a member's train.minutes): a timed budget's cost is
    its time."""
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
    share = (f"{utilisation:.0%} (--utilisation)" if utilisation else
             ", ".join(f"{g.key} {g.utilisation:.0%}" for g in GPUS) + " (h100: measured on an H200; p100, t4x2: "
             "assumed; kit.cost.GPUS)")
    lines.append(f"GPU hours projected at {share} of each GPU's dense fp16/bf16 peak; "
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
