"""Heads: an utterance embedding (B, E) -> class logits (B, n_classes), called as head(emb, labels=None).

Margin heads add their margin to the true class only when given labels (training), and own its warm-up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Module):
    """The course sample's head."""

    def __init__(self, e: int, d: int, n_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(e, d), nn.ReLU(), nn.Linear(d, n_classes))

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(emb)


class LinearHead(nn.Module):
    def __init__(self, e: int, n_classes: int, bn: bool):
        super().__init__()
        self.bn = nn.BatchNorm1d(e) if bn else nn.Identity()
        self.fc = nn.Linear(e, n_classes)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.bn(emb))


class MarginHead(nn.Module):
    """Cosine logits s * cos(emb, class weight), with a margin on the true class when labels are given.

    The margin ramps linearly from 0 to m over `warmup_steps` (WeSpeaker's schedule); the trainer
    calls update(step) every step. Subclasses say how the margin enters (add_margin) and how to
    take it out of training logits again (remove_margin), so training accuracy scores what
    prediction would.
    """
    margin: torch.Tensor                # a buffer (registered in __init__)

    def __init__(self, e: int, n_classes: int, s: float, m: float, warmup_steps: int = 0, bn: bool = False):
        super().__init__()
        self.bn = nn.BatchNorm1d(e) if bn else nn.Identity()
        self.weight = nn.Parameter(torch.empty(n_classes, e))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m_max, self.warmup_steps = s, m, warmup_steps
        # A tensor, not a float, so a compiled model does not recompile as the margin ramps.
        self.register_buffer("margin", torch.tensor(m if warmup_steps <= 0 else 0.0), persistent=False)

    @property
    def m(self) -> float:
        return float(self.margin)

    def update(self, step: int) -> None:
        ramp = 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)
        self.margin.fill_(self.m_max * ramp)

    set_step = update                   # the name kit used before heads had update()

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.bn(emb)
        # float32 even under autocast: a bf16 cosine is off by ~0.004, s * that ~0.1 in the logits.
        with torch.autocast(emb.device.type, enabled=False):
            cos = F.normalize(emb.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T   # (B, C)
        return self.s * (cos if labels is None else self.add_margin(cos, labels))

    def add_margin(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def remove_margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training logits -> the logits the same embeddings give without labels."""
        raise NotImplementedError


class AMSoftmaxHead(MarginHead):
    """Additive-margin softmax (CosFace, WeSpeaker's AddMarginProduct): s * (cos - m) on the true class."""

    def add_margin(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)

    def remove_margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits + self.s * self.margin * F.one_hot(labels, logits.shape[1]).to(logits.dtype)


class AAMSoftmaxHead(MarginHead):
    """Additive angular margin softmax (ArcFace, WeSpeaker's ArcMarginProduct): s * cos(theta + m)
    on the true class. Past theta = pi - m, where cos(theta + m) would turn back up, the true class
    gets cos - (1 + cos(pi - m)) instead: decreasing and continuous at the threshold (WeSpeaker's
    choice; no easy margin, so that remove_margin can invert it)."""

    def add_margin(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m, idx = self.margin, labels[:, None]
        c = cos.gather(1, idx)                                              # (B, 1) true-class cosine
        sin = (1.0 - c * c).clamp(min=1e-7).sqrt()                          # clamp: finite gradient at |c| = 1
        phi = torch.where(c > -torch.cos(m), c * torch.cos(m) - sin * torch.sin(m), c - 1.0 + torch.cos(m))
        return cos.scatter(1, idx, phi)                                     # cos(pi - m) = -cos(m)

    def remove_margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m, idx = self.margin, labels[:, None]
        phi = logits.gather(1, idx).float() / self.s                        # (B, 1)
        # phi > -1 exactly where the angular branch was taken (theta + m < pi); invert either branch.
        c = torch.where(phi > -1.0, torch.cos(torch.acos(phi.clamp(-1.0, 1.0)) - m), phi + 1.0 - torch.cos(m))
        return logits.scatter(1, idx, (self.s * c).to(logits.dtype))
