"""train(): one model into a run dir. The loop reads top to bottom as named steps:

    Trainer.__init__    accelerator, data, split, targets, step plan, model, optimizer, EMA
    Trainer.resume      TrainState from last.pt (or init_from's weights for a fine-tune)
    Trainer.train_step  crop a batch -> forward -> loss -> backward -> optimizer -> EMA
    Trainer.evaluate    validation (val_acc_crop), metrics.csv, early stop; best.pt and last.pt
    Trainer.finish      averaged weights, curves.png, summary.json

The run dir's checkpoints (last.pt, best.pt, avg.pt) are written by its CheckpointSaver
(kit.train.checkpoints).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kit.budget import SKIP_STEPS, lr_at
from kit.compat import cpu_has_bf16
from kit.config import RunConfig, dump_toml, to_dict, validate
from kit.data import FeatureStore
from kit.env import check_stopped
from kit.errors import KitError
from kit.fsio import write_csv, write_text
from kit.identity import check_resume, check_resumed_step, run_identity
from kit.models import build_model, check_model, count_params
from kit.runs import check_out, check_start, clean_leftovers, load_checkpoint, run_lock
from kit.split import save_split, split_for
from kit.train.checkpoints import CheckpointSaver
from kit.train.clock import Clock, StepTimer
from kit.train.devices import (
    check_memory,
    configure_cpu,
    end_distributed,
    make_accelerator,
    resolve_precision,
    step_bytes,
    step_plan,
    total_steps,
)
from kit.train.optim import WeightEma, adamw
from kit.train.results import evaluate, load_weights, metrics_frame, plot_curves, read_metrics
from kit.train.state import TrainState, weights_digest
from kit.train.targets import build_targets, loss_fn
from kit.train.trackers import TrackerLog, check_installed
from kit.written import check_written, write_identity, write_summary

# kit.train.devices (devices, budgets) and kit.train.clock moved out; names imported from here still are.
__all__ = ["LOSS_CHECK_EVERY", "Clock", "StepTimer", "Trainer", "TrainingDiverged", "cpu_has_bf16", "end_distributed",
           "resolve_precision", "step_bytes", "total_steps", "train"]

LOSS_CHECK_EVERY = 50      # steps between reads of the running loss when no progress bar reads it (one sync)


class TrainingDiverged(KitError):
    """Training stopped on non-finite weights; summary.json says "diverged", the checkpoints are the
    last good ones. A recipe votes without the member (kit.zoo)."""


# ---------------------------------------------------------------- the entry point
def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          store: FeatureStore | None = None, stop_after: int | None = None, budget: str | None = None,
          callbacks=()) -> dict:
    """Train one model into run_dir and return its summary (also written as summary.json).

    cfg is completed in place from the data: data_dir (absolute), n_mels and n_classes.
    The run dir is locked while it trains, and its identity.json records what defines the run
    (data, config, `budget`: the recipe budget's name); a start that would replace or resume
    a run on other data or another model shape is refused (kit.runs), and so is an existing folder
    of someone's own files that is not a run dir, before anything is written into it (kit.runs.check_out).

    stop_after: a test hook that stops as if interrupted after that many steps (last.pt kept,
    no summary), so resuming can be checked against an uninterrupted run.
    callbacks: objects with any of on_train_begin(trainer), on_step(trainer), on_evaluated(trainer,
    seconds), on_train_end(trainer, summary) -- e.g. StepTimer, for benchmarks. on_train_end comes
    however the session's loop ends: finished, diverged or stop_after (summary["stopped_reason"]).
    train.log_with adds kit.train.trackers.TrackerLog.
    """
    validate(cfg)               # the CLI sets budgets after the config was loaded
    check_model(cfg.model)      # a model that cannot be built: one line, before the run dir is made
    if cfg.train.log_with:      # a missing tracker package is one line now, not a run that logs nothing
        check_installed(cfg.train.log_with)
        callbacks = [*callbacks, TrackerLog()]
    run_dir = Path(run_dir)
    primary = int(os.environ.get("RANK", "0")) == 0
    if primary:                 # before run_lock makes the folder (the other ranks would see rank 0's files)
        check_out(run_dir)
    with run_lock(run_dir, primary=primary):
        check_start(run_dir, resume)
        if primary:
            clean_leftovers(run_dir)
        trainer = Trainer(cfg, run_dir, store, progress, budget, resume, callbacks)
        return trainer.run(stop_after)



class Trainer:
    """One run being trained: set up in __init__, then run() = resume, steps, evaluations, finish."""

    def __init__(self, cfg: RunConfig, run_dir: Path, store: FeatureStore | None, progress: bool,
                 budget: str | None, resume: bool, callbacks=()):
        self.cfg, self.run_dir, self.resuming, self.callbacks = cfg, run_dir, resume, list(callbacks)
        self.progress = progress
        self.clock = Clock(began=time.time())
        acc = self.accelerator = make_accelerator(resolve_precision(cfg.train.mixed_precision), cfg.train.log_with,
                                                  run_dir)
        self.device, self.rank, self.world, self.main = acc.device, acc.process_index, acc.num_processes, \
            acc.is_main_process
        self.saver = CheckpointSaver(run_dir, self.main, self.world, self.device, cfg.train.average_last)
        configure_cpu(self.device, cfg.train.cpu_threads)
        self.store = self._open_store(store)
        check_memory(cfg, self.device, run_dir)          # n_mels is known now; nothing big allocated yet
        self.identity = run_identity(cfg, self.store, budget, run_dir if resume else None)
        self.split = split_for(self.store, cfg.data.val_fraction, cfg.data.split_seed)
        if len(self.split.val) == 0:
            raise KitError(f"{cfg.data.data_dir}: the validation split is empty "
                           f"(data.val_fraction {cfg.data.val_fraction})")
        self.targets = build_targets(self.store, self.split, cfg.data.pseudo_labels, cfg.train.teacher,
                                     cfg.train.distill_weight, cfg.data.allow_external_labels, cfg.data.train_on_val)
        plan = step_plan(cfg, len(self.targets.index), self.world)
        torch.manual_seed(cfg.train.seed)               # identical initial weights on every rank
        net = build_model(cfg.model, cfg.augment, cfg.train.fast_dropout).to(self.device)  # before EMA copies it
        if cfg.train.init_from and not (resume and self.saver.resumable):
            self._init_from(net, cfg.train.init_from)
        self.n_params = count_params(net)
        optimizer = adamw(net, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                          fused=cfg.train.fused_optimizer or None)
        ema = WeightEma(net, decay=cfg.train.ema_decay) if cfg.train.ema else None
        torch.manual_seed(cfg.train.seed * 1000 + self.rank)   # different dropout/SpecAugment draws per rank
        rng = np.random.default_rng([cfg.train.seed, self.rank])   # different crops per rank
        self.state = TrainState(net=net, optimizer=optimizer, plan=plan, rng=rng, ema=ema)
        self.metrics: list[dict] = []
        self.stopped = "budget"
        # What prepare() and train_step() set. prepare() wraps net and optimizer for the steps (DDP,
        # torch.compile, accelerate's AcceleratedOptimizer); model is Any: torch.compile returns a callable.
        self.model: Any = net
        self.optimizer: torch.optim.Optimizer = optimizer
        self.bar: Any = None                    # a tqdm bar once prepare() runs (tqdm has no types)
        self.eval_frames: int | None = None     # evaluation's centre-crop length (None: whole utterances)
        self.eval_guess = 0.0                   # the first evaluation's cost in training steps, guessed
        self.lr = 0.0                           # the learning rate of the last step

    def _open_store(self, store: FeatureStore | None) -> FeatureStore:
        cfg = self.cfg
        if store is None:
            with self.accelerator.main_process_first():     # one rank packs the store, the others reuse it
                store = FeatureStore.open(cfg.data.data_dir, cfg.data.store_dtype,
                                          progress=self.progress and self.main)
        if self.device.type == "cuda" and cfg.data.store_on_gpu:
            store.to_device(self.device)            # crops gathered on the GPU: no batch copies per step
        cfg.data.data_dir = str(Path(store.layout.data_dir).resolve())
        cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
        return store

    def _init_from(self, net: torch.nn.Module, source: str) -> None:
        """Start from another run's weights (a fine-tune): a .pt file, or a run dir's last.pt."""
        path = Path(source).expanduser()        # as the recipe's pre-flight check reads it (kit.members)
        path = path / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise KitError(f"{path}: checkpoint not found (train.init_from)")
        check_written(path)
        load_weights(net, load_checkpoint(path, "point train.init_from at a sound checkpoint")["model"], path)

    def _call(self, event: str, *args) -> None:
        for cb in self.callbacks:
            if hasattr(cb, event):
                getattr(cb, event)(self, *args)

    # -------------------------------------------------------------- run
    def run(self, stop_after: int | None = None) -> dict:
        self.resume()
        self.write_run_files()
        self.prepare()
        self._call("on_train_begin")
        st = self.state
        while st.step < st.plan.total:
            check_stopped()             # a stop whose exception Python lost in a callback (kit.env)
            self.train_step()
            self._call("on_step")
            time_up = self.time_up()
            if st.plan.eval_due(st.step) or time_up:
                if self.evaluate(time_up):
                    break
            if stop_after is not None and st.step >= stop_after:
                return self.interrupt()
        return self.finish()

    def resume(self) -> None:
        if self.resuming and self.saver.resumable:
            check_resume(self.run_dir, self.identity)
            self.saver.resume(self.state, self.rank)
            check_resumed_step(self.run_dir, self.state.step, self.cfg.train)
            self.clock.seconds_before = self.state.seconds_before
            self.metrics = [m for m in read_metrics(self.run_dir / "metrics.csv") if m["step"] <= self.state.step]
        elif self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def write_run_files(self) -> None:
        if self.main:
            write_text(self.run_dir / "config.toml", dump_toml(to_dict(self.cfg)))
            write_identity(self.run_dir, self.identity)        # names its checkpoints.json's run first
            save_split(self.split, self.run_dir / "split.json", self.store)

    def prepare(self) -> None:
        """accelerate's wrapping (DDP), torch.compile, the progress bar and the session's clock."""
        st, cfg = self.state, self.cfg
        self.model, self.optimizer = self.accelerator.prepare(st.net, st.optimizer)
        if cfg.train.compile:                           # after DDP wrapping, as torch recommends
            self.model = torch.compile(self.model)
        self.model.train()
        self.bar = tqdm(total=st.plan.total, initial=st.step, desc=cfg.name, disable=not (self.progress and self.main),
                        leave=False, dynamic_ncols=True, mininterval=1.0)
        self.clock.begin_loop(st.step)
        # A time-budgeted run evaluates centre crops of infer.window frames (at least segment_len): whole
        # long utterances through attention cost a 3.5-minute CPU run more than half its time (measured).
        # One length for every member whatever its crops, so an audition's cut compares them on the same
        # frames (at 2 x segment_len, ecapa-s's 200-frame crops were scored on 400 frames and resnet-s's
        # 128 on 256, and on tts (2026-12-06) ecapa-s went on instead of the suite's best member).
        seg, bs = cfg.data.segment_len, cfg.train.batch_size
        self.eval_frames = max(cfg.infer.window, seg) if st.plan.is_timed else None
        # Before the first evaluation is timed, guess its cost in training steps: a forward pass
        # over the validation frames is about a third of a training step over as many frames.
        frames = np.minimum(self.store.lengths[self.split.val], self.eval_frames or 10**9)
        self.eval_guess = len(self.split.val) * float(np.mean(frames)) / (3 * bs * seg)

    def train_step(self) -> None:
        """One optimizer step on a batch of random crops."""
        st, cfg, device = self.state, self.cfg, self.device
        rows = self.targets.index[st.rng.integers(0, len(self.targets.index), cfg.train.batch_size)]
        x, lengths = self.store.crop_batch(rows, cfg.data.segment_len, st.rng)   # (B, T, D), (B,)
        x, lengths = x.to(device), lengths.to(device)
        y, target = self.targets.batch(rows, device)                # (B,), (B, C) or None
        st.net.set_step(st.step)
        self.lr = lr_at(st.step + 1, st.plan.total, st.plan.warmup, cfg.train.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        logits = self.model(x, lengths, y).float()                  # (B, n_classes)
        loss = loss_fn(logits, y, target, cfg.train.label_smoothing)
        self.accelerator.backward(loss)
        if cfg.train.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if st.ema is not None:
            st.ema.update(st.net, step=st.step)
        st.step += 1
        st.record(loss, (st.net.without_margin(logits.detach(), y).argmax(-1) == y).sum(), len(rows))
        self.bar.update(1)
        if st.plan.is_timed:
            self.fit_plan()
        self.watch_loss()

    def watch_loss(self) -> None:
        """Show the running loss on the bar (every 10 steps), and stop a run whose weights went
        non-finite when the loss read back is. The loss is read only where the bar reads it or every
        LOSS_CHECK_EVERY steps: each read waits for the GPU. A non-finite loss with finite weights is
        an fp16 step the gradient scaler skipped, not a divergence."""
        st = self.state
        shown = st.step % 10 == 0 and not self.bar.disable
        due = st.step % LOSS_CHECK_EVERY == 0 or (shown and self.world == 1)   # ranks check at the same steps
        if not (shown or due):
            return
        loss_sum, correct, count = st.running
        loss = float(loss_sum) / count
        if shown:
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{float(correct) / count:.3f}", lr=f"{self.lr:.2e}")
        if due and self._any_rank(not math.isfinite(loss)) and not self.weights_finite():
            self.diverge(f"train loss {loss:g}")

    def _any_rank(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor(float(flag), device=self.device), "max"))

    def weights_finite(self) -> bool:
        """Every float in the trained and the evaluated weights is finite (one device sync)."""
        st = self.state
        values = [v for model in {id(m): m for m in (st.net, st.eval_model)}.values()
                  for v in model.state_dict().values() if v.is_floating_point()]
        return bool(torch.stack([torch.isfinite(v).all() for v in values]).all())

    def diverge(self, what: str) -> None:
        """Stop a diverged run before its weights reach a checkpoint: summary.json says "diverged",
        last.pt and best.pt stay those of the last good evaluation."""
        st, cfg = self.state, self.cfg
        self.bar.close()
        saved = self.saver.saved_step
        summary = {**self.summary("diverged"), "checkpoint_step": saved}
        if self.main:
            write_summary(self.run_dir, summary)
        self._call("on_train_end", summary)     # a recipe trains its next member in this process
        kept = "no checkpoint was written" if saved is None else f"the last good checkpoint (step {saved}) is kept"
        raise TrainingDiverged(f"{self.run_dir}: training diverged at step {st.step} ({what}); {kept}; lower "
                               f"train.lr (now {cfg.train.lr:g}) or raise train.warmup_steps, then train again "
                               "with --fresh")

    def fit_plan(self) -> None:
        """Re-fit a time-budgeted plan to the measured step rate (every rank gets the same total)."""
        st, clock = self.state, self.clock
        session_steps = st.step - clock.steps_before
        if session_steps == SKIP_STEPS:
            clock.timed_from = (time.time(), clock.eval_seconds)
        if not st.plan.fit_due(session_steps):
            return
        began, evals_then = clock.timed_from
        step_seconds = (time.time() - began - (clock.eval_seconds - evals_then)) / (session_steps - SKIP_STEPS)
        total = st.plan.fit(st.step, clock.seconds(), step_seconds, self.eval_guess * step_seconds)
        if self.world > 1:         # ranks measure slightly different rates
            acc = self.accelerator
            st.plan.set_total(int(round(float(acc.reduce(torch.tensor(float(total), device=self.device), "mean")))))
        self.bar.total = st.plan.total
        self.bar.refresh()

    def time_up(self) -> bool:
        """train.max_minutes has passed or train.stop_step is reached (every rank takes the same decision)."""
        if 0 < self.cfg.train.stop_step <= self.state.step:
            return True
        limit = self.cfg.train.max_minutes
        up = limit > 0 and time.time() - self.clock.began > limit * 60
        return self._any_rank(up) if limit > 0 else up

    def evaluate(self, time_up: bool) -> bool:
        """Validate (centre crops: val_acc_crop, "val_acc" in metrics.csv), log, keep best.pt and
        last.pt (the CheckpointSaver); True when the loop should stop."""
        st, cfg = self.state, self.cfg
        began = time.time()
        val_loss, val_acc_crop = evaluate(st.eval_model, self.store, self.split.val, self.accelerator,
                                          self.eval_frames)
        train_loss, train_acc = st.take_running()
        if not math.isfinite(val_loss) or not self.weights_finite():     # before anything is saved
            self.diverge(f"train loss {train_loss:g}, validation loss {val_loss:g}")
        self.metrics.append({
            "step": st.step, "epoch": st.step * cfg.train.batch_size * self.world / len(self.targets.index),
            "lr": self.lr, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
            "val_acc": val_acc_crop, "seconds": self.clock.seconds(),
            "step_seconds": self.clock.training_seconds(began)})
        if self.main:
            write_csv(self.run_dir / "metrics.csv", metrics_frame(self.metrics))
        self.saver.evaluated(st, val_acc_crop, self.clock.seconds)
        st.plan.evaluated(time.time() - began)
        self.clock.eval_seconds += time.time() - began
        self._call("on_evaluated", time.time() - began)
        if cfg.train.patience > 0 and st.bad_evals >= cfg.train.patience:
            self.stopped = "early_stop"
            return True
        if time_up:
            self.stopped = "time"
        return time_up

    def interrupt(self) -> dict:
        """The stop_after test hook: stop as if killed right after a checkpoint."""
        st = self.state
        if not st.plan.eval_due(st.step):
            self.saver.save_last(st, self.clock.seconds())
        self.bar.close()
        summary = {"step": st.step, "stopped_reason": "interrupted", "best_val_acc": st.best_acc}
        self._call("on_train_end", summary)
        return summary

    def summary(self, stopped_reason: str) -> dict:
        """What summary.json says of every run that ended (finished or diverged)."""
        st, cfg = self.state, self.cfg
        return {"name": cfg.name, "params": self.n_params, "best_val_acc": st.best_acc, "best_step": st.best_step,
                "step": st.step, "total_steps": st.plan.total, "stopped_reason": stopped_reason,
                "seconds": self.clock.seconds(), "n_train": int(len(self.split.train)),
                "n_val": int(len(self.split.val)), "device": str(self.device), "processes": self.world,
                "mixed_precision": self.accelerator.mixed_precision,
                **({"steps_per_second": self.clock.step_rates(st.plan, st.step, self.device.type == "cpu")}
                   if st.plan.probe_rate else {}),
                **({"session_cpu_cores": self.clock.session_cores()} if self.device.type == "cpu" else {})}

    def finish(self) -> dict:
        """summary.json (+ avg.pt and curves.png)."""
        st, cfg = self.state, self.cfg
        self.bar.close()
        summary = {**self.summary(self.stopped), "weights_sha1": weights_digest(st.eval_model)}
        if self.targets.n_pseudo or self.targets.n_teacher:
            summary.update(n_pseudo=self.targets.n_pseudo, n_teacher=self.targets.n_teacher)
        if cfg.train.average_last > 0:
            summary.update(self.saver.average(st, lambda: build_model(cfg.model, cfg.augment), self._score_averaged))
        if self.main:
            if self.metrics:
                plot_curves(self.metrics, self.run_dir / "curves.png")
            write_summary(self.run_dir, summary)
        self._call("on_train_end", summary)
        self.accelerator.wait_for_everyone()
        return summary

    def _score_averaged(self, model: torch.nn.Module) -> float:
        """avg.pt's validation accuracy (summary.json's avg_val_acc): evaluate() of whole utterances,
        not the eval_frames crops of a timed run."""
        return evaluate(model, self.store, self.split.val, self.accelerator)[1]
