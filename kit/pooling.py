"""Poolings: a frame sequence h (B, T, D) and its lengths -> one vector per utterance (B, out_dim).

Frames beyond `lengths` never reach the output; statistics are taken in float32 (bf16-safe).
"""
from __future__ import annotations

import torch
from torch import nn

STD_EPS = 1e-6                  # variance floor before the square root: finite std and gradient


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool, True on real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def weighted_mean_std(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Concatenated mean and std of h (B, T, D) under frame weights w ((B, T, 1) or (B, T, D),
    summing to 1 over time, 0 on padded frames). Two-pass variance in float32. -> (B, 2D)"""
    h = torch.where(w > 0, h.float(), 0.0)          # (B, T, D); padded frames to 0, even an inf there
    mean = (w * h).sum(1)                                                   # (B, D)
    var = (w * (h - mean[:, None]) ** 2).sum(1)                             # (B, D)
    return torch.cat([mean, var.clamp(min=STD_EPS).sqrt()], dim=-1)       # (B, 2D)


class MeanPooling(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.out_dim = d

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = valid_mask(lengths, h.shape[1]).unsqueeze(-1).to(h.dtype)      # (B, T, 1)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)


class SelfAttentionPooling(nn.Module):
    """SAP: a small scorer gives each frame a weight; padded frames get none."""

    def __init__(self, d: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or d
        self.score = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.out_dim = d

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        s = self.score(h).squeeze(-1)                                      # (B, T)
        s = s.masked_fill(~valid_mask(lengths, h.shape[1]), float("-inf"))
        w = torch.softmax(s.float(), dim=1).to(h.dtype)                    # (B, T)
        return torch.einsum("bt,btd->bd", w, h)


class SapMeanPooling(nn.Module):
    """SAP and mean branches concatenated (E = 2D). Concatenated rather than summed so the head
    can weigh the salient-frame summary and the plain average separately, as attentive statistics
    pooling does; it costs only D more head inputs."""

    def __init__(self, d: int):
        super().__init__()
        self.sap, self.mean = SelfAttentionPooling(d), MeanPooling(d)
        self.out_dim = 2 * d

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.sap(h, lengths), self.mean(h, lengths)], dim=-1)   # (B, 2D)


class StatsPooling(nn.Module):
    """Temporal statistics pooling (WeSpeaker's TSTP, x-vector's): mean and std over real frames.
    The std is the population one (divided by the frame count), defined for one-frame inputs."""

    def __init__(self, d: int):
        super().__init__()
        self.out_dim = 2 * d

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = valid_mask(lengths, h.shape[1]).unsqueeze(-1).float()          # (B, T, 1)
        return weighted_mean_std(h, m / m.sum(1, keepdim=True).clamp(min=1))   # (B, 2D)


class AttentiveStatsPooling(nn.Module):
    """Attentive statistics pooling (ECAPA-TDNN, WeSpeaker's ASTP): a bottleneck scorer gives each
    frame and channel a weight (softmax over real frames); weighted mean and std concatenated."""

    def __init__(self, d: int, bottleneck: int = 128):
        super().__init__()
        # tanh, not ReLU, inside the scorer: WeSpeaker notes ReLU there converges badly.
        self.score = nn.Sequential(nn.Linear(d, bottleneck), nn.Tanh(), nn.Linear(bottleneck, d))
        self.out_dim = 2 * d

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        s = self.score(h).float()                                           # (B, T, D)
        s = s.masked_fill(~valid_mask(lengths, h.shape[1]).unsqueeze(-1), float("-inf"))
        return weighted_mean_std(h, torch.softmax(s, dim=1))                # (B, 2D)
