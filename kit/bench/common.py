"""What every benchmark shares: a row (a ratio of kit to the course baseline), the timers, and the
model they time (the strong recipe's Conformer, also built with stock torch modules).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from kit.models import ConformerEncoder, SpeakerNet
from kit.recipe import load_recipe, member_config


def row(name: str, unit: str, baseline: float, kit: float, target: float | None, higher_is_better=True,
        note: str = "") -> dict:
    baseline, kit = float(baseline), float(kit)         # numpy scalars would not serialise as json
    ratio = (kit / baseline if higher_is_better else baseline / kit) if baseline and kit else float("nan")
    return {"name": name, "unit": unit, "baseline": baseline, "kit": kit, "ratio": ratio, "target": target,
            "met": (ratio >= target) if target else None, "note": note}


def time_once(fn) -> float:
    """Seconds of one run of fn(), not warmed up: how the course pipeline runs for its user."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_warm(fn) -> float:
    """Seconds of one run of fn() after two warm-up runs, by torch's Timer (which waits for the
    GPU), at torch's current thread count (the Timer's default would be one thread)."""
    # deferred: torch.utils.benchmark imports torch.utils.cpp_extension, which warns on stderr on a machine
    # with a CUDA toolkit and no GPU (a Kaggle CPU notebook): only when something is timed
    from torch.utils.benchmark import Timer

    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(number=1).mean


def fixed_budget(cfg, steps: int, eval_every: int | None = None):
    """Make cfg a plain run of exactly `steps` steps: no epochs, early stop or averaging."""
    cfg.train.max_steps, cfg.train.max_epochs, cfg.train.eval_every = steps, 0, eval_every or steps
    cfg.train.patience, cfg.train.average_last = 0, 0
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, steps)
    return cfg


def strong_config(data_dir, batch_size: int, recipe: str | Path = "strong"):
    """The strong tier's Conformer as users train it on this device: the full budget's shape on a
    GPU, the quick budget's (64 wide, 2 layers) on a CPU. Default thread count for both loops."""
    r = load_recipe(recipe)
    cfg = member_config(r, r.members[0][0], "full" if torch.cuda.is_available() else "quick", data_dir)
    cfg.train.batch_size = batch_size
    cfg.train.cpu_threads = 0
    return cfg


def course_model(model_cfg, like=None):
    """kit's model with torch's stock layers, as the course sample's code would
    build it (kit's CPU dropout off, the Conformer's convolution module on Conv1d). `like`: copy
    that model's weights and train/eval mode."""
    stock = ConformerEncoder(model_cfg, stock_conv=True) if model_cfg.encoder == "conformer" else None
    model = SpeakerNet(model_cfg, encoder=stock)
    if like is not None:
        model.load_state_dict(like.state_dict())
        model.train(like.training)
    return model


def cycle(loader):
    """Batches from a DataLoader for ever, epoch after epoch."""
    while True:
        yield from loader
