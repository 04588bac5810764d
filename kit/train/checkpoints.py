"""CheckpointSaver: the run dir's checkpoints, each written atomically (kit.fsio.save_torch):

    last.pt  everything resume needs (TrainState.state_dict, every rank's RNG states), after each
             evaluation and at an interruption
    best.pt  the evaluated weights of the best validation accuracy so far (val_acc_crop: training's
             evaluation of centre crops, kit.train.results.evaluate), with its step
    avg.pt   the mean of the last train.average_last evaluated weights, scored at the end

Each one's SHA-256 goes into checkpoints.json as it is written (kit.written.record_written), so that a
file copied in later is neither resumed nor predicted as this run's (kit.written.check_written).

The counters that say what is best (TrainState.best_acc, best_step, bad_evals) and the weights kept
for averaging (TrainState.avg_keep) live in the TrainState, so last.pt carries them across a resume.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from accelerate.utils import gather_object

from kit.fsio import save_torch, sha256_file
from kit.runs import load_checkpoint
from kit.train.state import TrainState, average_state_dicts, float_state
from kit.written import check_written, record_written

LAST, BEST, AVERAGED = "last.pt", "best.pt", "avg.pt"


class CheckpointSaver:
    """Owns a run dir's last.pt, best.pt and avg.pt. Every rank calls it at the same points (last.pt
    gathers the RNG states of all of them); only the main process writes."""

    def __init__(self, run_dir: Path, main: bool, world: int, device: torch.device, average_last: int = 0):
        self.run_dir, self.main, self.world, self.device = run_dir, main, world, device
        self.average_last = average_last    # evaluations averaged into avg.pt (train.average_last; 0: none)
        self.saved_step: int | None = None  # the step last.pt holds (None: not written nor read yet)

    @property
    def last(self) -> Path:
        return self.run_dir / LAST

    @property
    def best(self) -> Path:
        return self.run_dir / BEST

    @property
    def averaged(self) -> Path:
        return self.run_dir / AVERAGED

    @property
    def resumable(self) -> bool:
        """last.pt is there to resume from."""
        return self.last.is_file()

    def resume(self, state: TrainState, rank: int) -> None:
        """Restore `state` from last.pt as rank `rank`."""
        saved = load_checkpoint(self.last)                      # names a damaged one first
        for path in (self.last, self.best, self.averaged):      # none copied in from another run
            if path.is_file():
                check_written(path)
        state.load_state_dict(saved, rank, self.device, self.last)
        self.saved_step = state.step
        if self.main and state.best_step == state.step > 0 and self._best_step() != state.step:
            self._save_best(state)          # killed between last.pt and best.pt: these weights are the best

    def _best_step(self) -> int | None:
        return load_checkpoint(self.best).get("step") if self.best.is_file() else None

    @staticmethod
    def improves(val_acc_crop: float, best_acc: float) -> bool:
        """What "best" means: a strictly higher validation accuracy (the earliest of equals stays)."""
        return val_acc_crop > best_acc

    def evaluated(self, state: TrainState, val_acc_crop: float, seconds: Callable[[], float]) -> bool:
        """After an evaluation: keep its weights for averaging, count it (best.pt when it is the best
        so far), then last.pt (`seconds`: the training seconds so far, read when it is written).
        True when it improved."""
        if self.average_last > 0:         # every rank holds the same weights, so each keeps them
            state.avg_keep = (state.avg_keep + [float_state(state.eval_model)])[-self.average_last:]
        improved = self.improves(val_acc_crop, state.best_acc)
        if improved:
            state.best_acc, state.best_step, state.bad_evals = val_acc_crop, state.step, 0
        else:
            state.bad_evals += 1
        # last.pt first: a kill before best.pt is written still leaves a run that resumes (resume() writes
        # the best.pt it implies); the other way round, a kill at the first evaluation left none
        self.save_last(state, seconds())
        if self.main and improved:
            self._save_best(state)
        return improved

    def _save_best(self, state: TrainState) -> None:
        _save({"model": float_state(state.eval_model), "step": state.step, "val_acc": state.best_acc}, self.best)

    def save_last(self, state: TrainState, seconds: float) -> None:
        """last.pt: everything resume needs, RNG states of every rank included."""
        rng_torch, rng_numpy, rng_cuda = state.rng_states(self.device)
        if self.world > 1:
            rng_torch, rng_numpy, rng_cuda = gather_object(rng_torch), gather_object(rng_numpy), gather_object(rng_cuda)
        if self.main:
            _save(state.state_dict(seconds, rng_torch, rng_numpy, rng_cuda), self.last)
        self.saved_step = state.step

    def average(self, state: TrainState, build: Callable[[], torch.nn.Module],
                score: Callable[[torch.nn.Module], float]) -> dict:
        """avg.pt from the last N evaluated weights, scored (`score`: its validation accuracy) beside
        best.pt; `build` makes an empty model of the run's shape. {} when none were kept."""
        states = state.avg_keep
        if not states:
            return {}
        model = build().to(self.device)
        model.load_state_dict(average_state_dicts(states))
        acc = score(model)
        if self.main:
            _save({"model": float_state(model), "averaged": len(states)}, self.averaged)
        return {"avg_val_acc": acc, "averaged": len(states)}


def _save(obj, path: Path) -> None:
    """save_torch, its SHA-256 recorded beside the one before it until the file has taken its place, then
    alone: a kill at any point leaves a checkpoint that checkpoints.json accepts."""
    digest: list[str] = []

    def record(tmp: Path) -> None:
        digest.append(sha256_file(tmp))
        record_written(path, digest[0], keep=True)

    save_torch(obj, path, before_rename=record)
    record_written(path, digest[0])
