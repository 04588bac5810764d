"""What a run's weights are updated with: AdamW that leaves biases and norms out of weight decay, and a
moving average (EMA) of the weights.

Both are timm's, to the parameter group and the update (`create_optimizer_v2(net, "adamw", ...)` and
`ModelEmaV3(net, decay)` with its defaults); tests/test_optim.py checks them against timm. They are
written here because importing timm imports torchvision and all of timm's models: 2.5 s of every
training process on a 2-core CPU (a 3-step run in a new process, tests/test_optim.py's script: 11.2 and
11.4 s, 13.5 and 14.0 s with `import timm.optim` added; 2026-12-07), and a recipe on a CPU starts one
for each candidate, rung, survivor and stage.
"""
from __future__ import annotations

import copy

import torch


def adamw(net: torch.nn.Module, lr: float, weight_decay: float, fused: bool | None) -> torch.optim.AdamW:
    """AdamW over net's trainable parameters: biases and 1-d parameters (norms' scales) without weight
    decay, the rest with it; one group without decay when weight_decay is 0."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in net.named_parameters():
        if param.requires_grad:
            plain = not weight_decay or param.ndim <= 1 or name.endswith(".bias")
            (no_decay if plain else decay).append(param)
    groups = [{"params": params, "weight_decay": wd} for params, wd in ((no_decay, 0.0), (decay, weight_decay))
              if params]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, fused=fused)


class WeightEma(torch.nn.Module):
    """An exponential moving average of every floating-point tensor in a model's state dict (parameters
    and buffers; integer buffers are copied). `module` is the averaged copy, in eval mode."""

    def __init__(self, model: torch.nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average toward model's weights after optimizer step `step` (1-based): the first
        step's weights are copied, later ones weigh 1 - decay."""
        weight = 1.0 if step <= 1 else 1.0 - self.decay
        ema, new = [], []
        for ema_value, value in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema_value.is_floating_point():
                ema.append(ema_value)
                new.append(value.to(dtype=ema_value.dtype))
            else:
                ema_value.copy_(value)
        if ema:
            torch._foreach_lerp_(ema, new, weight)
