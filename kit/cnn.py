"""Convolutional encoders after WeSpeaker: a thin ResNet over (time, mel) and ECAPA-TDNN over time.

Padded frames are zeroed before every conv that sees neighbouring frames, so in eval mode an
utterance gives the same output alone as padded in a batch.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from kit.config import ModelConfig
from kit.errors import KitError
from kit.pooling import valid_mask

RESNET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}   # depth -> BasicBlocks per stage


def _frame_mask(lengths: torch.Tensor, T: int, shape: tuple) -> torch.Tensor | None:
    """Float mask of real frames viewed as `shape` (e.g. (B, 1, T, 1)); None when no frame is padded."""
    if bool((lengths >= T).all()):      # training crops are mostly full: skip the multiplies
        return None
    return valid_mask(lengths, T).float().view(shape)


def _masked(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return h if mask is None else h * mask.to(h.dtype)        # keep h's dtype under autocast


# ---------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a shortcut (a strided 1x1 conv where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, C_in, T, F) zero on padded frames; mask (B, 1, T', 1) at the output's time resolution."""
        h = _masked(F.relu(self.bn1(self.conv1(x))), mask)
        return _masked(F.relu(self.bn2(self.conv2(h)) + self.shortcut(x)), mask)   # (B, C_out, T', F')


class ResNetEncoder(nn.Module):
    """WeSpeaker's ResNet (BasicBlocks, widths c, 2c, 4c, 8c, strides 1, 2, 2, 2 on time and mel)
    at base width c = cfg.channels and depth cfg.resnet_depth. Returns (B, T/8, 8c * n_mels/8)
    frames, the mel axis flattened into features, and the lengths at that frame rate."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.resnet_depth not in RESNET_BLOCKS:
            raise KitError(f"model.resnet_depth {cfg.resnet_depth}: choose one of "
                           f"{', '.join(map(str, RESNET_BLOCKS))}")
        c = cfg.channels
        self.conv1 = nn.Conv2d(1, c, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        widths, strides, c_in = (c, 2 * c, 4 * c, 8 * c), (1, 2, 2, 2), c
        self.layers = nn.ModuleList()
        for width, stride, n in zip(widths, strides, RESNET_BLOCKS[cfg.resnet_depth], strict=True):
            self.layers.append(nn.ModuleList([BasicBlock(c_in if i == 0 else width, width, stride if i == 0 else 1)
                                              for i in range(n)]))
            c_in = width
        f = cfg.n_mels
        for stride in strides:
            f = (f + stride - 1) // stride                  # a 3x3 conv, padding 1, stride s: ceil(f / s)
        self.out_dim = 8 * c * f

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        mask = _frame_mask(lengths, T, (B, 1, T, 1))
        h = _masked(x.unsqueeze(1), mask)                                   # (B, 1, T, n_mels); -20 padding to 0
        h = _masked(F.relu(self.bn1(self.conv1(h))), mask)                 # (B, c, T, n_mels)
        for stage in self.layers:
            for block in cast(Iterable[BasicBlock], stage):     # a ModuleList of BasicBlocks
                if block.conv1.stride[0] > 1:
                    T, lengths = (T + 1) // 2, (lengths + 1) // 2
                    mask = None if mask is None else _frame_mask(lengths, T, (B, 1, T, 1))
                h = block(h, mask)                                          # (B, C, T', F')
        return h.permute(0, 2, 1, 3).flatten(2), lengths                    # (B, T', C * F'), (B,)


# ---------------------------------------------------------------- ECAPA-TDNN
class ConvReluBn(nn.Module):
    """Conv1d -> ReLU -> BatchNorm, in that order as in ECAPA-TDNN; 'same' padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                    # (B, C, T)
        return self.bn(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net's hierarchical conv: channels split into `scale` groups; each group but the last
    is convolved after adding the previous group's output, widening the receptive field."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int = 8):
        super().__init__()
        self.width = channels // scale
        self.convs = nn.ModuleList([ConvReluBn(self.width, self.width, kernel, dilation) for _ in range(scale - 1)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        groups = x.split(self.width, dim=1)
        out, h = [], None
        for group, conv in zip(groups, self.convs, strict=False):      # the last group is passed on as is
            h = _masked(conv(group if h is None else h + group), mask)     # (B, width, T)
            out.append(h)
        return torch.cat(out + [groups[-1]], dim=1)                        # (B, C, T)


class SqueezeExcite(nn.Module):
    """Channel gates from the mean over real frames."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(channels, bottleneck), nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
        mean = x.mean(2) if mask is None else _masked(x, mask).sum(2) / lengths[:, None].to(x.dtype)  # (B, C)
        return x * torch.sigmoid(self.linear2(F.relu(self.linear1(mean))))[:, :, None]


class SERes2Block(nn.Module):
    def __init__(self, channels: int, dilation: int, scale: int = 8):
        super().__init__()
        self.conv1 = ConvReluBn(channels, channels)
        self.res2 = Res2Conv(channels, 3, dilation, scale)
        self.conv2 = ConvReluBn(channels, channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
        h = self.res2(_masked(self.conv1(x), mask), mask)                  # (B, C, T)
        return x + self.se(self.conv2(h), mask, lengths)


class EcapaEncoder(nn.Module):
    """ECAPA-TDNN (WeSpeaker's ECAPA_TDNN without its pooling and embedding layer): a k=5 conv,
    three SE-Res2Net blocks with dilations 2, 3, 4, and the three blocks' outputs aggregated by a
    1x1 conv. c = cfg.channels (512 in the paper); returns (B, T, 3c) frames (1536 at c = 512)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.channels
        if c % 8:
            raise KitError(f"model.channels {c}: ecapa splits channels into 8 Res2Net groups; use a multiple of 8")
        self.layer1 = ConvReluBn(cfg.n_mels, c, kernel=5)
        self.blocks = nn.ModuleList([SERes2Block(c, dilation) for dilation in (2, 3, 4)])
        self.conv = nn.Conv1d(3 * c, 3 * c, 1)
        self.out_dim = 3 * c

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        mask = _frame_mask(lengths, T, (B, 1, T))
        h = self.layer1(_masked(x.transpose(1, 2), mask))                  # (B, c, T); -20 padding to 0 first
        outs = []
        for block in self.blocks:
            h = block(h, mask, lengths)
            outs.append(h)
        h = F.relu(self.conv(torch.cat(outs, dim=1)))                      # (B, 3c, T)
        return h.transpose(1, 2), lengths                                  # (B, T, 3c), (B,)
