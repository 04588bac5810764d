"""What a run leaves behind and how it is read: validation (evaluate), metrics.csv, curves.png,
summary.json, and loading a finished run's model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kit.config import RunConfig, from_dict, load_toml
from kit.data import FeatureStore
from kit.errors import KitError
from kit.fsio import atomic_path
from kit.models import build_model
from kit.runs import load_checkpoint

METRIC_COLUMNS = ["step", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "step_seconds"]
EVAL_FRAMES = 64 * 1024          # frames per validation batch (B * T_max), whole utterances
EVAL_AREA = 16 * 1024 * 1024     # B * T_max^2: bounds attention scores (5 GB peak RSS without it)


# ---------------------------------------------------------------- loading a finished run
def load_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise KitError(f"{path}: missing; is {run_dir} a kit run dir?")
    return from_dict(load_toml(path), where=str(path))


def load_model(run_dir: str | Path, which: str = "best"):
    """(model in eval mode on CPU, RunConfig) from run_dir/config.toml and run_dir/<which>.pt."""
    if which not in ("best", "last", "avg"):
        raise KitError(f"checkpoint {which!r}: choose best, last or avg")
    cfg = load_config(run_dir)
    path = Path(run_dir) / f"{which}.pt"
    if not path.is_file():
        hint = ", with train.average_last > 0" if which == "avg" else ""
        raise KitError(f"{path}: missing (train the run first{hint})")
    ckpt = load_checkpoint(path)
    model = build_model(cfg.model, cfg.augment)
    load_weights(model, ckpt["model"], path)
    return model.eval(), cfg


def load_weights(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:        # size mismatch / missing keys: the checkpoint is another model
        raise KitError(f"{path}: does not fit the model in {path.parent / 'config.toml'} "
                       f"({str(e).strip().splitlines()[-1].strip()[:160]})") from None


# ---------------------------------------------------------------- evaluation and logs
@torch.no_grad()
def evaluate(model, store: FeatureStore, index: np.ndarray, accelerator,
             max_frames: int | None = None) -> tuple[float, float]:
    """(loss, accuracy) on whole utterances (or their centre `max_frames` frames) in
    length-sorted padded batches; shards across ranks."""
    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    index = np.asarray(index)[rank::world]
    frames = store.lengths if max_frames is None else np.minimum(store.lengths, max_frames)
    order = index[np.argsort(frames[index], kind="stable")]
    loss_sum = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * int(frames[order[end]]) <= EVAL_FRAMES \
                and (end - start + 1) * int(frames[order[end]]) ** 2 <= EVAL_AREA:
            end += 1
        batch = order[start:end]
        t_max = int(frames[batch].max())
        x, lengths = store.crop_batch(batch, t_max, None, random=False)     # (B, T, D), whole utterances
        y = torch.from_numpy(store.labels[batch]).to(accelerator.device)
        with accelerator.autocast():
            logits = model(x.to(accelerator.device), lengths.to(accelerator.device)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
        start = end
    count = torch.tensor(float(len(index)), device=accelerator.device)
    totals = accelerator.reduce(torch.stack([loss_sum, correct.float(), count]), reduction="sum")
    model.train(was_training)
    n = max(float(totals[2]), 1.0)
    return float(totals[0]) / n, float(totals[1]) / n


def plot_curves(metrics: list[dict], path: Path) -> None:
    """Loss and accuracy against step, train and validation, as one PNG."""
    import matplotlib  # heavy: matplotlib, only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, [m["train_loss"] for m in metrics], label="train")
    ax1.plot(steps, [m["val_loss"] for m in metrics], label="val")
    ax1.set(xlabel="step", ylabel="loss")
    ax2.plot(steps, [m["train_acc"] for m in metrics], label="train")
    ax2.plot(steps, [m["val_acc"] for m in metrics], label="val")
    ax2.set(xlabel="step", ylabel="accuracy")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def metrics_frame(metrics: list[dict]):
    return pd.DataFrame(metrics, columns=METRIC_COLUMNS)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def read_summary(run_dir: str | Path) -> dict | None:
    """The finished run's summary.json, or None when the run has not finished."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def diverged_at(run_dir: str | Path) -> int | None:
    """The step at which the run's training diverged (summary.json), or None when it did not."""
    summary = read_summary(run_dir)
    return summary["step"] if summary is not None and summary.get("stopped_reason") == "diverged" else None
