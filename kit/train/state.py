"""TrainState: everything a run needs to resume bit-exactly, in one object with
state_dict()/load_state_dict() (the keys of last.pt, unchanged since kit's first checkpoints)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from kit.budget import StepPlan
from kit.errors import KitError
from kit.train.results import load_weights

if TYPE_CHECKING:
    from kit.models import SpeakerNet
    from kit.train.optim import WeightEma

RESUMABLE = {"optimizer", "step", "rng_torch", "rng_numpy"}


def float_state(model: torch.nn.Module) -> dict:
    """A CPU copy of a module's state_dict (what checkpoints hold)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def weights_digest(model: torch.nn.Module) -> str:
    """A fingerprint of the weights: DDP ranks (and repeated runs) can be compared by it."""
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


@dataclass
class TrainState:
    """The model being trained (`net`: the plain module), its EMA, the optimizer, the step plan,
    this rank's crop generator, and the loop's counters.

    `model` in last.pt is the weights evaluation uses (the EMA when there is one, then the raw
    weights are `train_model`), so best.pt, last.pt and prediction agree on what "the model" is."""
    net: SpeakerNet
    optimizer: torch.optim.Optimizer
    plan: StepPlan
    rng: np.random.Generator
    ema: WeightEma | None = None
    step: int = 0
    best_acc: float = -1.0
    best_step: int = 0
    bad_evals: int = 0
    seconds_before: float = 0.0             # training seconds of earlier sessions
    avg_keep: list = field(default_factory=list)    # the last N evaluated weights (train.average_last)
    running: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # train loss sum, correct, count

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def rng_states(self, device: torch.device) -> tuple[list, list, list]:
        """This rank's RNG states (torch, numpy, cuda) as one-element lists, to gather over ranks."""
        cuda = [torch.cuda.get_rng_state()] if device.type == "cuda" else []
        return [torch.get_rng_state()], [json.dumps(self.rng.bit_generator.state)], cuda

    def state_dict(self, seconds: float, rng_torch: list, rng_numpy: list, rng_cuda: list) -> dict:
        """last.pt's contents; rng_*: every rank's states (gathered)."""
        loss, correct, count = self.running
        state = {"model": float_state(self.eval_model), "step": self.step, "best_val_acc": self.best_acc,
                 "best_step": self.best_step, "bad_evals": self.bad_evals, "seconds": seconds,
                 "optimizer": self.optimizer.state_dict(),
                 "rng_torch": list(rng_torch), "rng_numpy": list(rng_numpy), "rng_cuda": list(rng_cuda),
                 "avg_keep": self.avg_keep, "running": [float(loss), float(correct), count],
                 "plan": self.plan.state_dict()}
        if self.ema is not None:
            state["train_model"] = float_state(self.net)
        return state

    def load_state_dict(self, ckpt: dict, rank: int, device: torch.device, where) -> None:
        """Restore from last.pt (`where`: its path, for errors) as rank `rank`."""
        if not RESUMABLE <= set(ckpt):
            raise KitError(f"{where}: not a resumable checkpoint (no optimizer or step in it)")
        load_weights(self.net, ckpt.get("train_model", ckpt["model"]), where)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["model"])
        self.step, self.best_acc, self.best_step = ckpt["step"], ckpt["best_val_acc"], ckpt["best_step"]
        self.bad_evals, self.seconds_before = ckpt["bad_evals"], ckpt["seconds"]
        torch.set_rng_state(ckpt["rng_torch"][rank])
        if device.type == "cuda" and ckpt.get("rng_cuda"):
            torch.cuda.set_rng_state(ckpt["rng_cuda"][rank])
        self.rng.bit_generator.state = json.loads(ckpt["rng_numpy"][rank])
        self.avg_keep = list(ckpt.get("avg_keep", []))
        self.running = list(ckpt.get("running", [0.0, 0.0, 0.0]))
        self.plan.load_state_dict(ckpt.get("plan", {}))

    def record(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        """Add a step's loss and correct count (summed on the device: reading a value back every
        step would stall a GPU)."""
        self.running = [self.running[0] + loss.detach() * n, self.running[1] + correct, self.running[2] + n]

    def take_running(self) -> tuple[float, float]:
        """(train loss, train accuracy) since the last evaluation, and reset them."""
        loss, correct, count = self.running
        self.running = [0.0, 0.0, 0.0]
        return float(loss) / count, float(correct) / count
