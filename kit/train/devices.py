"""Devices and budgets of a training run: the mixed precision, the Accelerator, CPU settings, the
step total and plan, and the memory one training step needs (checked before anything is allocated).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from accelerate import Accelerator

from kit.budget import StepPlan
from kit.cnn import RESNET_BLOCKS
from kit.compat import cpu_has_bf16, reset_accelerate_precision
from kit.config import RunConfig
from kit.errors import KitError
from kit.train.trackers import project_config


def resolve_precision(name: str) -> str:
    """auto -> bf16 on a GPU that supports it, fp16 on other CUDA GPUs; on a CPU bf16 where it
    has bf16 instructions, else "no" (emulated bf16 is slower than fp32)."""
    if name != "auto":
        if name not in ("no", "bf16", "fp16"):
            raise KitError(f"train.mixed_precision {name!r}: choose auto, no, bf16 or fp16")
        return name
    if not torch.cuda.is_available():
        return "bf16" if cpu_has_bf16() else "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def total_steps(cfg: RunConfig, n_train: int, world: int) -> int:
    """The step budget: train.max_epochs x (n_train / global batch) when set, else train.max_steps."""
    if cfg.train.max_epochs > 0:
        return max(1, math.ceil(cfg.train.max_epochs * n_train / (cfg.train.batch_size * world)))
    return cfg.train.max_steps


def step_plan(cfg: RunConfig, n_train: int, world: int) -> StepPlan:
    """The run's StepPlan over total_steps: fitted as the run goes under a time budget (train.minutes),
    else fixed."""
    steps_total = total_steps(cfg, n_train, world)
    if cfg.train.minutes > 0:           # a time budget: the step total is fitted as the run goes
        return StepPlan.timed(cfg.train.minutes * 60, steps_total, cfg.train.warmup_steps, evals=cfg.train.evals)
    return StepPlan.fixed(steps_total, cfg.train.warmup_steps, cfg.train.eval_every)


# Floats autograd keeps per input frame, per unit of width, for backward (peak RSS of one forward +
# backward on CPU in float32, measured for the recipes' encoders and rounded up by 10-30%).
ATTENTION_WIDTH = {"transformer": 32, "conformer": 64}     # x d_model per layer
ATTENTION_SCORES = 6                                       # x n_heads x segment_len per layer
RESNET_FRAME, ECAPA_FRAME = 10, 64                         # x channels (x n_mels for the 2-D ResNet)


def _encoder_size(m, frames: int) -> tuple[float, float, float]:
    """(parameters, floats kept per input frame, output width) of model settings `m` on crops of
    `frames` frames: the orders of magnitude, not exact counts."""
    if m.encoder in ATTENTION_WIDTH:
        twice = 2 if m.encoder == "conformer" else 1     # a Conformer block has two feed-forwards and a conv
        params = m.n_layers * twice * (4 * m.d_model ** 2 + 2 * m.d_model * m.ffn_dim)
        per_frame = m.n_layers * (ATTENTION_WIDTH[m.encoder] * m.d_model + 4 * m.ffn_dim
                                  + ATTENTION_SCORES * m.n_heads * frames)
        return params, per_frame, m.d_model
    if m.encoder == "resnet":
        blocks = RESNET_BLOCKS.get(m.resnet_depth, RESNET_BLOCKS[34])
        params = sum(n * 18 * (m.channels * 2 ** k) ** 2 for k, n in enumerate(blocks))
        per_frame = RESNET_FRAME * m.channels * m.n_mels * sum(n / 2 ** k for k, n in enumerate(blocks))
        return params, per_frame, m.channels * m.n_mels
    return 25 * m.channels ** 2, ECAPA_FRAME * m.channels, 6 * m.channels      # ecapa


def step_bytes(cfg: RunConfig) -> int:
    """A generous estimate of one training step's memory in bytes, in float32 (mixed precision needs
    less): the weights with their gradients, AdamW's two moments and the EMA (5 copies), the batch
    of crops (batch_size x segment_len x n_mels), and the activations kept for backward."""
    m, batch, frames = cfg.model, cfg.train.batch_size, cfg.data.segment_len
    params, per_frame, width = _encoder_size(m, frames)
    params += width * (m.d_model + m.n_classes)                 # pooling and head
    return int(4 * (5 * params + batch * frames * (m.n_mels + per_frame)))


def memory_available(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): the GPU's free memory, or the machine's physical memory on a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), f"free on {torch.cuda.get_device_name(device)}"
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of memory on this machine"


def check_memory(cfg: RunConfig, device: torch.device, run_dir: Path) -> None:
    """Refuse, before anything is allocated, a step that cannot fit (step_bytes)."""
    need, (have, what) = step_bytes(cfg), memory_available(device)
    if need > have:
        gib = 2 ** 30
        raise KitError(f"{run_dir}: one training step needs about {need / gib:,.1f} GiB, more than the "
                       f"{have / gib:,.1f} GiB {what}; lower train.batch_size (now {cfg.train.batch_size}) "
                       f"or data.segment_len (now {cfg.data.segment_len}), or make the model smaller")


def configure_cpu(device: torch.device, threads: int) -> None:
    """On a CPU: flush denormals, and use `threads` threads when above 0 (train.cpu_threads)."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)      # denormals slow CPU training ~10x after a few thousand steps
        if threads > 0:
            torch.set_num_threads(threads)


def make_accelerator(precision: str, log_with: str = "", run_dir: str | Path = "."):
    """An Accelerator for one run (several runs in one process may ask for different precisions:
    kit.compat.reset_accelerate_precision); with log_with, its tracker writes into run_dir/trackers
    (kit.train.trackers)."""
    reset_accelerate_precision(precision)
    # cpu=True without a GPU so the env vars of a CPU launch (WORLD_SIZE, RANK) select gloo DDP
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(), log_with=log_with or None,
                       project_config=project_config(run_dir) if log_with else None)


def end_distributed() -> None:
    """Tear down the DDP process group before exit; gloo otherwise aborts (SIGABRT) at teardown."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

