"""Speaker-ID models built from a ModelConfig: encoder -> pooling -> head, each swappable by name.

Every model is called as `model(x, lengths, labels=None) -> logits` with x (B, T, n_mels) padded
with -20 beyond `lengths`; `model.embed(x, lengths)` returns the pooled embedding (B, E).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from kit.config import AugmentConfig, ModelConfig
from kit.errors import KitError
from kit.layers import use_fast_dropout

ENCODERS = ("transformer", "conformer")
POOLINGS = ("mean", "sap", "sap+mean")
HEADS = ("mlp", "linear", "amsoftmax")


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool, True on real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


# ---------------------------------------------------------------- encoders: (B,T,n_mels) -> (B,T,D)
class TransformerEncoder(nn.Module):
    """The course sample: Linear prenet then nn.TransformerEncoder, padding masked out of attention."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.prenet = nn.Linear(cfg.n_mels, cfg.d_model)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.ffn_dim, cfg.dropout, batch_first=True)
        # No nested-tensor fast path: it changes numerics between padded and unpadded batches.
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.prenet(x)                                                  # (B, T, D)
        return self.encoder(h, src_key_padding_mask=~valid_mask(lengths, x.shape[1]))


class _MaskedConv(nn.Module):
    """Zeroes padded frames before a depthwise conv so padding never leaks into real frames."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv
        self.mask: torch.Tensor | None = None      # (B, 1, T), set by the encoder for each call

    def forward(self, x: torch.Tensor) -> torch.Tensor:                    # x (B, C, T)
        return self.conv(x if self.mask is None else x * self.mask)


def depthwise_conv_time_major(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 'same'-padded depthwise Conv1d on x (B, T, C) without leaving that layout: K shifted
    multiply-adds. weight (C, 1, K) as nn.Conv1d(groups=C) holds it."""
    T, K = x.shape[1], weight.shape[-1]
    xp = F.pad(x, (0, 0, (K - 1) // 2, K // 2))                           # (B, T + K - 1, C)
    w = weight[:, 0, :]                                                    # (C, K)
    out = xp[:, :T] * w[:, 0]
    for k in range(1, K):
        out = out + xp[:, k:k + T] * w[:, k]
    return out if bias is None else out + bias


class _ConvModuleTimeMajor(nn.Module):
    """torchaudio's Conformer convolution module; at inference computed in (B, T, C) layout, the
    pointwise convs as matrix products and the depthwise conv as shifted adds. Same parameters
    and names, same maths (tested against torchaudio's). Why: on this CPU that made the module
    1.7x faster in fp32 inference (torch's Conv1d took 5x longer than the equivalent Linear
    for the 64->128 pointwise conv); in training, bf16 included, it was no faster, so training
    keeps torchaudio's path. Installed by swapping the class of torchaudio's module (its
    attributes stay), so torchaudio is not imported with kit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:                    # x (B, T, D)
        if self.training:                                                  # torchaudio's own forward
            return self.sequential(self.layer_norm(x).transpose(1, 2)).transpose(1, 2)
        pw1, _, dw, norm, act, pw2, drop = self.sequential
        B, T, _ = x.shape
        h = F.glu(F.linear(self.layer_norm(x), pw1.weight[..., 0], pw1.bias), dim=-1)   # (B, T, C)
        if dw.mask is not None:
            h = h * dw.mask.transpose(1, 2)                                  # (B, 1, T) -> (B, T, 1)
        h = depthwise_conv_time_major(h, dw.conv.weight, dw.conv.bias)
        h = act(norm(h.reshape(B * T, -1)).view(B, T, -1))                 # BatchNorm over B*T frames, as on (B, C, T)
        return drop(F.linear(h, pw2.weight[..., 0], pw2.bias))             # (B, T, D)


class ConformerEncoder(nn.Module):
    """Linear prenet then torchaudio's Conformer; its depthwise convs are masked (torchaudio's aren't)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from torchaudio.models import Conformer

        if cfg.conv_kernel % 2 == 0:
            raise KitError(f"model.conv_kernel {cfg.conv_kernel}: the conformer needs an odd kernel size")
        self.prenet = nn.Linear(cfg.n_mels, cfg.d_model)
        self.conformer = Conformer(input_dim=cfg.d_model, num_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim,
                                   num_layers=cfg.n_layers, depthwise_conv_kernel_size=cfg.conv_kernel,
                                   dropout=cfg.dropout)
        self.masked = []
        for layer in self.conformer.conformer_layers:
            seq = layer.conv_module.sequential              # pointwise, GLU, depthwise, norm, ...
            seq[2] = _MaskedConv(seq[2])
            self.masked.append(seq[2])
            if isinstance(seq[3], nn.BatchNorm1d):          # torchaudio's default; GroupNorm keeps its own path
                layer.conv_module.__class__ = _ConvModuleTimeMajor

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        t_max = int(lengths.max())              # torchaudio builds its mask to max(lengths) frames
        x = x[:, :t_max]                                                    # (B, T', n_mels)
        mask = valid_mask(lengths, t_max)[:, None, :].to(x.dtype)           # (B, 1, T')
        for m in self.masked:
            m.mask = mask
        try:
            h, _ = self.conformer(self.prenet(x), lengths)                  # (B, T', D)
        finally:
            for m in self.masked:
                m.mask = None
        return F.pad(h, (0, 0, 0, T - t_max))                               # (B, T, D)


# ---------------------------------------------------------------- pooling: (B,T,D) -> (B,E)
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


# ---------------------------------------------------------------- heads: (B,E) -> (B,n_classes)
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


class AMSoftmaxHead(nn.Module):
    """Additive-margin softmax: s * (cos - m) on the true class when labels are given, else s * cos.

    The margin can ramp linearly from 0 to m over `warmup_steps` (WeSpeaker's schedule); the
    trainer calls set_step(step) every step.
    """

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

    def set_step(self, step: int) -> None:
        ramp = 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)
        self.margin.fill_(self.m_max * ramp)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.normalize(self.bn(emb).float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T   # (B, C)
        if labels is not None:
            cos = cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.s * cos


# ---------------------------------------------------------------- SpecAugment
class SpecAugment(nn.Module):
    """Time and frequency masks drawn for the whole batch at once; only in training mode.

    Masked cells take the utterance's mean over its real frames (an in-range value, unlike the
    -20 padding); time masks start inside each utterance's real length.
    """

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg

    @staticmethod
    def _bands(n_masks: int, width: int, size: torch.Tensor, axis_len: int, batch: int, device) -> torch.Tensor:
        """(B, axis_len) bool: union of n_masks bands of width U[0, width] starting inside `size`."""
        pos = torch.arange(axis_len, device=device)[None, :]                # (1, L)
        out = torch.zeros(batch, axis_len, dtype=torch.bool, device=device)
        for _ in range(n_masks):                                            # a handful of masks, not items
            w = (torch.rand(batch, device=device) * (width + 1)).long()     # (B,)
            w = torch.minimum(w, size)
            start = (torch.rand(batch, device=device) * (size - w + 1)).long()
            out |= (pos >= start[:, None]) & (pos < (start + w)[:, None])
        return out

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        B, T, D = x.shape
        c = self.cfg
        valid = valid_mask(lengths, T).unsqueeze(-1)                        # (B, T, 1)
        fill = (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)   # (B, 1, D)
        freq = self._bands(c.freq_masks, c.freq_width, torch.full((B,), D, device=x.device), D, B, x.device)
        time = self._bands(c.time_masks, c.time_width, lengths.to(x.device), T, B, x.device)
        cells = (freq[:, None, :] | time[:, :, None]) & valid               # (B, T, D)
        return torch.where(cells, fill.expand_as(x), x)


# ---------------------------------------------------------------- the whole model
class SpeakerNet(nn.Module):
    def __init__(self, cfg: ModelConfig, augment: AugmentConfig | None = None):
        super().__init__()
        self.encoder = TransformerEncoder(cfg) if cfg.encoder == "transformer" else ConformerEncoder(cfg)
        d = cfg.d_model
        self.pooling = {"mean": MeanPooling, "sap": SelfAttentionPooling, "sap+mean": SapMeanPooling}[cfg.pooling](d)
        e = self.pooling.out_dim
        if cfg.head == "mlp":
            self.head = MLPHead(e, d, cfg.n_classes)
        elif cfg.head == "linear":
            self.head = LinearHead(e, cfg.n_classes, cfg.head_bn)
        else:
            self.head = AMSoftmaxHead(e, cfg.n_classes, cfg.am_s, cfg.am_m, cfg.margin_warmup_steps, cfg.head_bn)
        self.specaug = SpecAugment(augment) if augment is not None and augment.specaugment else None

    def set_step(self, step: int) -> None:
        """Tell step-scheduled parts (the AM-Softmax margin) where training is."""
        if hasattr(self.head, "set_step"):
            self.head.set_step(step)

    def without_margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training logits with the AM-Softmax margin added back: what prediction would score,
        so training accuracy is comparable across heads."""
        if isinstance(self.head, AMSoftmaxHead):
            return logits + self.head.s * self.head.margin * F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return logits

    def embed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.specaug is not None:
            x = self.specaug(x, lengths)                                    # no-op in eval
        return self.pooling(self.encoder(x, lengths), lengths)             # (B, E)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(x, lengths), labels)                    # (B, n_classes)


def build_model(cfg: ModelConfig, augment: AugmentConfig | None = None, fast_dropout: bool = False) -> SpeakerNet:
    """The model a ModelConfig names; pass the AugmentConfig to get in-model SpecAugment.
    fast_dropout swaps in kit.layers' CPU-cheap dropout (same parameters and maths)."""
    for name, value, allowed in (("encoder", cfg.encoder, ENCODERS), ("pooling", cfg.pooling, POOLINGS),
                                 ("head", cfg.head, HEADS)):
        if value not in allowed:
            raise KitError(f"model.{name} {value!r}: choose one of {', '.join(allowed)}")
    if cfg.d_model % cfg.n_heads:
        raise KitError(f"model.d_model {cfg.d_model} must be divisible by model.n_heads {cfg.n_heads}")
    model = SpeakerNet(cfg, augment)
    return use_fast_dropout(model) if fast_dropout else model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
