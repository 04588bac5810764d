"""The training loop: random crops from the FeatureStore -> model -> AdamW, one plain loop through
accelerate (CPU, one GPU or DDP), with validation, early stopping, checkpoints, resume and logs.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kit.budget import SKIP_STEPS
from kit.config import RunConfig, dump_toml, from_dict, load_toml, to_dict
from kit.data import FeatureStore, save_split, split_for
from kit.errors import KitError
from kit.fsio import save_torch, write_csv, write_json, write_text
from kit.models import build_model, count_params
from kit.runs import check_resume, load_checkpoint, run_identity

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
        raise KitError(f"{path}: missing (train the run first{', with train.average_last > 0' if which == 'avg' else ''})")
    ckpt = load_checkpoint(path)
    model = build_model(cfg.model, cfg.augment)
    _load_weights(model, ckpt["model"], path)
    return model.eval(), cfg


def _load_weights(model: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:        # size mismatch / missing keys: the checkpoint is another model
        raise KitError(f"{path}: does not fit the model in {path.parent / 'config.toml'} "
                       f"({str(e).strip().splitlines()[-1].strip()[:160]})") from None


# ---------------------------------------------------------------- helpers
def cpu_has_bf16() -> bool:
    """The CPU multiplies bf16 natively (AVX512-BF16 or AMX). Measured on such a CPU (2-core AMD
    EPYC): bf16 autocast trained the quick recipes 1.3-1.9x faster at the same accuracy."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


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


def _float_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def weights_digest(model: torch.nn.Module) -> str:
    """A fingerprint of the weights: DDP ranks (and repeated runs) can be compared by it."""
    import hashlib

    h = hashlib.sha1()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def average_state_dicts(states: list[dict]) -> dict:
    """Mean of float tensors (WeSpeaker's average_model); integer buffers come from the last one."""
    out = {}
    for k, v in states[-1].items():
        out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
    return out


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kit.fsio import atomic_path

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


def _make_accelerator(precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Several runs in one process (a recipe, the tests) may ask for different precisions; the
    # shared state is reset between them. Never under DDP: the process group must survive.
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", state.get("mixed_precision")) not in (None, precision) and \
            str(state.get("distributed_type", "NO")).endswith("NO"):
        AcceleratorState._reset_state()
    # cpu=True without a GPU so the env vars of a CPU launch (WORLD_SIZE, RANK) select gloo DDP
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())


# ---------------------------------------------------------------- the loop
def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          store: FeatureStore | None = None, stop_after: int | None = None, budget: str | None = None) -> dict:
    """Train one model into run_dir and return its summary (also written as summary.json).

    cfg is completed in place from the data: data_dir (absolute), n_mels and n_classes.
    The run dir is locked while it trains, and its identity.json records what defines the run
    (data, config, `budget`: the recipe budget's name); a start that would replace or resume
    a run on other data or another model shape is refused (kit.runs).

    stop_after: a test hook that stops as if interrupted after that many steps (last.pt kept,
    no summary), so resuming can be checked against an uninterrupted run.
    """
    from kit.config import validate
    from kit.runs import check_start, clean_leftovers, run_lock

    validate(cfg)               # the CLI sets budgets after the config was loaded
    run_dir = Path(run_dir)
    primary = int(os.environ.get("RANK", "0")) == 0
    with run_lock(run_dir, primary=primary):
        check_start(run_dir, resume)
        if primary:
            clean_leftovers(run_dir)
        return _train(cfg, run_dir, resume, progress, store, stop_after, budget)


def _train(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool, store: FeatureStore | None,
           stop_after: int | None, budget: str | None) -> dict:
    from accelerate.utils import gather_object
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    from kit.budget import StepPlan, lr_at
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    began = time.time()
    accelerator = _make_accelerator(resolve_precision(cfg.train.mixed_precision))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if device.type == "cpu":
        torch.set_flush_denormal(True)      # denormals slow CPU training ~10x after a few thousand steps
        if cfg.train.cpu_threads > 0:
            torch.set_num_threads(cfg.train.cpu_threads)
    main = accelerator.is_main_process

    if store is None:
        with accelerator.main_process_first():      # one rank packs the store, the others reuse it
            store = FeatureStore.open(cfg.data.data_dir, cfg.data.store_dtype, progress=progress and main)
    if device.type == "cuda" and cfg.data.store_on_gpu:
        store.to_device(device)                 # crops gathered on the GPU: no batch copies per step
    cfg.data.data_dir = str(Path(store.layout.data_dir).resolve())
    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    identity = run_identity(cfg, store, budget, run_dir if resume else None)
    split = split_for(store, cfg.data.val_fraction, cfg.data.split_seed)
    if len(split.val) == 0:
        raise KitError(f"{cfg.data.data_dir}: the validation split is empty (data.val_fraction {cfg.data.val_fraction})")
    steps_total = total_steps(cfg, len(split.train), world)
    if cfg.train.minutes > 0:           # a time budget: the step total is fitted as the run goes
        plan = StepPlan.timed(cfg.train.minutes * 60, steps_total, cfg.train.warmup_steps)
    else:
        plan = StepPlan.fixed(steps_total, cfg.train.warmup_steps, cfg.train.eval_every)

    torch.manual_seed(cfg.train.seed)               # identical initial weights on every rank
    model = build_model(cfg.model, cfg.augment, cfg.train.fast_dropout).to(device)     # on the device first: EMA copies it
    n_params = count_params(model)
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                    fused=cfg.train.fused_optimizer or None)
    # The learning rate is a function of the step and the plan (kit.budget.lr_at), so resume
    # rebuilds it: a resumed run may extend train.max_steps.
    ema = ModelEmaV3(model, decay=cfg.train.ema_decay) if cfg.train.ema else None
    torch.manual_seed(cfg.train.seed * 1000 + rank)  # different dropout/SpecAugment draws per rank
    rng = np.random.default_rng([cfg.train.seed, rank])  # different crops per rank

    step, best_acc, best_step, bad_evals, seconds_before = 0, -1.0, 0, 0, 0.0
    metrics: list[dict] = []
    run_loss = run_correct = run_count = 0.0     # train loss/accuracy since the last evaluation
    avg_keep: list[dict] = []       # the last N evaluated weights, for train.average_last
    last_path = run_dir / "last.pt"
    if resume and last_path.is_file():
        check_resume(run_dir, identity)
        ckpt = load_checkpoint(last_path)
        if not {"optimizer", "step", "rng_torch", "rng_numpy"} <= set(ckpt):
            raise KitError(f"{last_path}: not a resumable checkpoint (no optimizer or step in it)")
        _load_weights(model, ckpt.get("train_model", ckpt["model"]), last_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["model"])
        step, best_acc, best_step = ckpt["step"], ckpt["best_val_acc"], ckpt["best_step"]
        bad_evals, seconds_before = ckpt["bad_evals"], ckpt["seconds"]
        torch.set_rng_state(ckpt["rng_torch"][rank])
        if device.type == "cuda" and ckpt.get("rng_cuda"):
            torch.cuda.set_rng_state(ckpt["rng_cuda"][rank])
        rng.bit_generator.state = json.loads(ckpt["rng_numpy"][rank])
        avg_keep = list(ckpt.get("avg_keep", []))
        run_loss, run_correct, run_count = ckpt.get("running", [0.0, 0.0, 0.0])
        plan.load_state_dict(ckpt.get("plan", {}))
        metrics = [m for m in _read_metrics(run_dir / "metrics.csv") if m["step"] <= step]
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        write_text(run_dir / "config.toml", dump_toml(to_dict(cfg)))
        write_json(run_dir / "identity.json", identity)
        save_split(split, run_dir / "split.json", store)

    net = model                                     # the plain module: checkpoints, EMA, evaluation
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.train.compile:                           # after DDP wrapping, as torch recommends
        model = torch.compile(model)

    def eval_model():
        return ema.module if ema is not None else net

    def checkpoint(path: Path) -> None:
        """last.pt: everything resume needs, RNG states of every rank included."""
        rng_torch, rng_numpy = [torch.get_rng_state()], [json.dumps(rng.bit_generator.state)]
        rng_cuda = [torch.cuda.get_rng_state()] if device.type == "cuda" else []
        if world > 1:
            rng_torch, rng_numpy, rng_cuda = gather_object(rng_torch), gather_object(rng_numpy), gather_object(rng_cuda)
        if not main:
            return
        state = {"model": _float_state(eval_model()), "step": step, "best_val_acc": best_acc,
                 "best_step": best_step, "bad_evals": bad_evals, "seconds": seconds(),
                 "optimizer": optimizer.state_dict(),
                 "rng_torch": list(rng_torch), "rng_numpy": list(rng_numpy), "rng_cuda": list(rng_cuda),
                 "avg_keep": avg_keep, "running": [float(run_loss), float(run_correct), run_count],
                 "plan": plan.state_dict()}
        if ema is not None:
            state["train_model"] = _float_state(net)
        save_torch(state, path)

    def seconds() -> float:
        return seconds_before + time.time() - began

    train_idx, labels = split.train, store.labels
    seg, bs = cfg.data.segment_len, cfg.train.batch_size
    stopped = "budget"
    model.train()
    bar = tqdm(total=plan.total, initial=step, desc=cfg.name, disable=not (progress and main),
               leave=False, dynamic_ncols=True, mininterval=1.0)
    loop_began, eval_seconds, steps_before = time.time(), 0.0, step   # steps/s excludes evaluation
    timer = [0.0, 0.0]             # [time, evaluation seconds] when the session's timed steps began
    # Before the first evaluation is timed, guess its cost in training steps: a forward pass
    # over the validation frames is about a third of a training step over as many frames.
    # A time-budgeted run evaluates centre crops of at most 2 x segment_len frames: whole long
    # utterances through attention cost a 3.5-minute CPU run more than half its time (measured).
    eval_frames = 2 * seg if plan.is_timed else None
    eval_guess = len(split.val) * float(np.mean(np.minimum(store.lengths[split.val], eval_frames or 10**9))) \
        / (3 * bs * seg)
    while step < plan.total:
        batch = train_idx[rng.integers(0, len(train_idx), bs)]
        x, lengths = store.crop_batch(batch, seg, rng)                      # (B, T, D), (B,)
        x, lengths = x.to(device), lengths.to(device)
        y = torch.from_numpy(labels[batch]).to(device)                      # (B,)
        net.set_step(step)
        lr = lr_at(step + 1, plan.total, plan.warmup, cfg.train.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(x, lengths, y).float()                               # (B, n_classes)
        loss = F.cross_entropy(logits, y)
        accelerator.backward(loss)
        if cfg.train.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(net, step=step)
        step += 1
        # summed on the device: reading a value back every step would stall a GPU
        run_loss = run_loss + loss.detach() * len(batch)
        run_correct = run_correct + (net.without_margin(logits.detach(), y).argmax(-1) == y).sum()
        run_count += len(batch)
        bar.update(1)
        if plan.is_timed:
            _fit_plan(plan, step, step - steps_before, timer, eval_seconds, seconds(), accelerator, bar, eval_guess)
        if step % 10 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{float(run_loss) / run_count:.3f}", acc=f"{float(run_correct) / run_count:.3f}",
                            lr=f"{lr:.2e}")

        time_up = cfg.train.max_minutes > 0 and time.time() - began > cfg.train.max_minutes * 60
        if world > 1 and cfg.train.max_minutes > 0:     # every rank must take the same decision
            time_up = bool(accelerator.reduce(torch.tensor(float(time_up), device=device), "max"))
        if plan.eval_due(step) or time_up:
            eval_began = time.time()
            val_loss, val_acc = evaluate(eval_model(), store, split.val, accelerator, eval_frames)
            metrics.append({"step": step, "epoch": step * bs * world / len(train_idx), "lr": lr,
                            "train_loss": float(run_loss) / run_count, "train_acc": float(run_correct) / run_count,
                            "val_loss": val_loss, "val_acc": val_acc, "seconds": seconds(),
                            "step_seconds": eval_began - loop_began - eval_seconds})   # this session, no eval
            run_loss = run_correct = run_count = 0.0
            if cfg.train.average_last > 0:      # every rank holds the same weights, so each keeps them
                avg_keep = (avg_keep + [_float_state(eval_model())])[-cfg.train.average_last:]
            improved = val_acc > best_acc
            if improved:
                best_acc, best_step, bad_evals = val_acc, step, 0
            else:
                bad_evals += 1
            if main:
                write_csv(run_dir / "metrics.csv", _frame(metrics))
                if improved:
                    save_torch({"model": _float_state(eval_model()), "step": step, "val_acc": val_acc},
                               run_dir / "best.pt")
            checkpoint(last_path)
            plan.evaluated(time.time() - eval_began)
            eval_seconds += time.time() - eval_began
            if cfg.train.patience > 0 and bad_evals >= cfg.train.patience:
                stopped = "early_stop"
                break
            if time_up:
                stopped = "time"
                break
        if stop_after is not None and step >= stop_after:
            if not plan.eval_due(step):
                checkpoint(last_path)
            bar.close()
            return {"step": step, "stopped_reason": "interrupted", "best_val_acc": best_acc}
    bar.close()
    loop_window = [loop_began, time.time()]      # wall-clock span of the steps, for zoo benchmarks

    summary = {"name": cfg.name, "params": n_params, "best_val_acc": best_acc, "best_step": best_step,
               "step": step, "total_steps": plan.total, "stopped_reason": stopped, "seconds": seconds(),
               "n_train": int(len(split.train)), "n_val": int(len(split.val)), "device": str(device),
               "processes": world, "mixed_precision": accelerator.mixed_precision,
               "weights_sha1": weights_digest(eval_model()),
               "train_seconds": time.time() - loop_began - eval_seconds,   # this session's steps only
               "train_steps": step - steps_before, "loop_window": loop_window}
    if cfg.train.average_last > 0:
        summary.update(_average(avg_keep, cfg, store, split, accelerator, run_dir, main))
    if main:
        if metrics:
            plot_curves(metrics, run_dir / "curves.png")
        write_json(run_dir / "summary.json", summary)
    accelerator.wait_for_everyone()
    return summary


def _fit_plan(plan, step: int, session_steps: int, timer: list, eval_seconds: float, spent: float,
              accelerator, bar, eval_guess: float) -> None:
    """Re-fit a time-budgeted plan to the measured step rate (every rank gets the same total).
    eval_guess: an evaluation's cost in training steps, used until one has been measured."""
    if session_steps == SKIP_STEPS:
        timer[:] = [time.time(), eval_seconds]
    if not plan.fit_due(session_steps):
        return
    step_seconds = (time.time() - timer[0] - (eval_seconds - timer[1])) / (session_steps - SKIP_STEPS)
    total = plan.fit(step, spent, step_seconds, eval_guess * step_seconds)
    if accelerator.num_processes > 1:         # ranks measure slightly different rates
        plan.set_total(int(round(float(accelerator.reduce(
            torch.tensor(float(total), device=accelerator.device), "mean")))))
    bar.total = plan.total
    bar.refresh()


def _average(states: list[dict], cfg: RunConfig, store, split, accelerator, run_dir: Path, main: bool) -> dict:
    """avg.pt from the last N evaluation checkpoints, scored on validation beside best.pt."""
    n = len(states)
    if n == 0:
        return {}
    model = build_model(cfg.model, cfg.augment).to(accelerator.device)
    model.load_state_dict(average_state_dicts(states))
    _, acc = evaluate(model, store, split.val, accelerator)
    if main:
        save_torch({"model": _float_state(model), "averaged": n}, run_dir / "avg.pt")
    return {"avg_val_acc": acc, "averaged": n}


def _frame(metrics: list[dict]):
    import pandas as pd

    return pd.DataFrame(metrics, columns=METRIC_COLUMNS)


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    import pandas as pd

    return pd.read_csv(path).to_dict("records")


def read_summary(run_dir: str | Path) -> dict | None:
    """The finished run's summary.json, or None when the run has not finished."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def end_distributed() -> None:
    """Tear down the DDP process group before exit; gloo otherwise aborts (SIGABRT) at teardown."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":        # `accelerate launch -m kit.train ...` / `python -m kit.train ...`
    import sys

    from kit.cli.train import train_main

    try:
        code = train_main(sys.argv[1:])
    finally:
        end_distributed()
    sys.exit(code)
