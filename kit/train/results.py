"""What a run leaves behind and how it is read: validation (evaluate), metrics.csv, curves.png,
summary.json, and loading a finished run's model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kit.config import RunConfig, from_dict, load_toml
from kit.data import FeatureStore
from kit.errors import KitError, first_line
from kit.fsio import atomic_path
from kit.identity import START_OVER, config_changes, config_identity, describe, read_identity
from kit.models import build_model
from kit.runs import load_checkpoint
from kit.windows import centre_windows, length_batches

METRIC_COLUMNS = ["step", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "step_seconds"]
# evaluate()'s caps on a batch (kit.windows.length_batches); prediction has its own (kit.infer)
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
    require_trained_config(run_dir, cfg)
    path = Path(run_dir) / f"{which}.pt"
    if not path.is_file():
        hint = ", with train.average_last > 0" if which == "avg" else ""
        raise KitError(f"{path}: missing (train the run first{hint})")
    ckpt = load_checkpoint(path)
    model = build_model(cfg.model, cfg.augment)
    load_weights(model, ckpt["model"], path)
    return model.eval(), cfg


def require_trained_config(run_dir: str | Path, cfg: RunConfig) -> None:
    """Refuse a config.toml edited since the run trained in a model setting of its identity
    (identity.json's "config"): an n_heads or feature_norm changes no parameter's shape, so the
    weights would load without a word into another model and predict worse. The other settings
    (training's, [infer]) do not change what the weights compute: free to change, as on a resume. A
    run from before identity.json is not checked."""
    try:
        recorded = read_identity(run_dir)
    except KitError as e:       # the weights are sound: moving the record aside predicts them (unchecked)
        raise KitError(f"{first_line(e).split('; ')[0]}; to predict the run's weights without this check, move "
                       "its identity.json aside (kit then cannot check its config.toml against what it trained "
                       "as)") from None
    if recorded is None:
        return
    changes = [c for c in config_changes(recorded["config"], config_identity(cfg), "model.")
               if "dropout" not in c.split(" ", 1)[0]]      # off at prediction: the same model
    if changes:
        path = Path(run_dir) / "config.toml"
        raise KitError(f"{path}: edited since the run trained ({describe(changes)}; its identity.json records the "
                       f"run as it trained), so its weights would be read into another model and predict worse; "
                       f"put config.toml back as the run trained, or to train again, {START_OVER}")


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
    """(loss, accuracy) of each utterance's centre `max_frames` frames (the whole of a shorter one;
    whole utterances when None): the accuracy is training's val_acc_crop (metrics.csv and
    summary.json call it val_acc), not a prediction's. The windows go through kit.windows'
    batching, shortest first, under EVAL_FRAMES and EVAL_AREA; shards across ranks."""
    was_training = model.training
    model.eval()
    device = accelerator.device
    index = np.asarray(index)[accelerator.process_index::accelerator.num_processes]
    lengths = store.lengths[index]
    _, start, valid = centre_windows(lengths, max_frames or int(lengths.max(initial=1)))
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    for b in length_batches(valid, EVAL_FRAMES, EVAL_AREA, longest_first=False):
        x, frames = store.gather_windows(index[b], start[b], valid[b])          # (B, T, D), (B,)
        y = torch.from_numpy(store.labels[index[b]]).to(device)
        with accelerator.autocast():
            logits = model(x.to(device), frames.to(device)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
    count = torch.tensor(float(len(index)), device=device)
    totals = accelerator.reduce(torch.stack([loss_sum, correct.float(), count]), reduction="sum")
    model.train(was_training)
    n = max(float(totals[2]), 1.0)
    return float(totals[0]) / n, float(totals[1]) / n


def plot_curves(metrics: list[dict], path: Path) -> None:
    """Loss and accuracy against step, train and validation, as one PNG."""
    import matplotlib  # heavy: matplotlib, only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after use("Agg"), pyplot picks its backend on import

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
    """The rows of a run's metrics.csv, none when it is missing. One that is damaged (empty, not a CSV,
    without its step and val_acc columns, a value that is not a number) is one line naming it (probe 51:
    a resume after a full disk or a hand edit ended in pandas' traceback)."""
    if not path.is_file():
        return []
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:      # pandas' EmptyDataError and ParserError, UnicodeDecodeError
        raise KitError(_damaged_metrics(path, first_line(e))) from None
    missing = [c for c in ("step", "val_acc") if c not in frame.columns]
    odd = [c for c in frame.columns if c in METRIC_COLUMNS and not pd.api.types.is_numeric_dtype(frame[c])]
    if missing or odd:
        raise KitError(_damaged_metrics(path, f"no {', '.join(missing)} column" if missing else
                                        f"{', '.join(odd)} not numbers"))
    return frame.to_dict("records")


def _damaged_metrics(path: Path, why: str) -> str:
    return (f"{path}: damaged ({why}); remove it and run again: the run resumes from its checkpoint, its "
            "curves from there")
