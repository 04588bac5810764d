"""Speaker-ID models built from a ModelConfig: encoder -> pooling -> head, each picked by name
from one registry per part (ENCODERS, POOLINGS, HEADS below).

Every model is called as `model(x, lengths, labels=None) -> logits` with x (B, T, n_mels) padded
with -20 beyond `lengths`; `model.embed(x, lengths)` returns the pooled embedding (B, E).
An encoder maps (x, lengths) -> (h (B, T', D), lengths at T') and has `out_dim` D; a pooling maps
(h, lengths) -> (B, E) and has `out_dim` E; a head maps (emb, labels=None) -> (B, n_classes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kit.cnn import EcapaEncoder, ResNetEncoder
from kit.config import AugmentConfig, ModelConfig
from kit.conformer import Conformer
from kit.errors import KitError
from kit.heads import AAMSoftmaxHead, AMSoftmaxHead, LinearHead, MarginHead, MLPHead
from kit.layers import use_fast_dropout
from kit.pooling import (
    AttentiveStatsPooling,
    MeanPooling,
    SapMeanPooling,
    SelfAttentionPooling,
    StatsPooling,
    valid_mask,
)


# ---------------------------------------------------------------- encoders: (B,T,n_mels) -> (B,T',D)
def _check_attention_width(cfg: ModelConfig) -> None:
    if cfg.d_model % cfg.n_heads:
        raise KitError(f"model.d_model {cfg.d_model} must be divisible by model.n_heads {cfg.n_heads}")


class TransformerEncoder(nn.Module):
    """The course sample: Linear prenet then nn.TransformerEncoder, padding masked out of attention."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        _check_attention_width(cfg)
        self.out_dim = cfg.d_model
        self.prenet = nn.Linear(cfg.n_mels, cfg.d_model)
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.ffn_dim, cfg.dropout, batch_first=True)
        # No nested-tensor fast path: it changes numerics between padded and unpadded batches.
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.prenet(x)                                                  # (B, T, D)
        return self.encoder(h, src_key_padding_mask=~valid_mask(lengths, x.shape[1])), lengths


class ConformerEncoder(nn.Module):
    """Linear prenet then kit's Conformer (kit.conformer: torchaudio's, with padding masked before
    each depthwise conv). stock_conv computes the convolution module with torch's Conv1d at
    inference too (no time-major path), as torchaudio and the course sample's code would; same
    parameters and outputs either way."""

    def __init__(self, cfg: ModelConfig, stock_conv: bool = False):
        super().__init__()
        if cfg.conv_kernel % 2 == 0:
            raise KitError(f"model.conv_kernel {cfg.conv_kernel}: the conformer needs an odd kernel size")
        _check_attention_width(cfg)
        self.out_dim = cfg.d_model
        self.prenet = nn.Linear(cfg.n_mels, cfg.d_model)
        self.conformer = Conformer(input_dim=cfg.d_model, num_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim,
                                   num_layers=cfg.n_layers, depthwise_conv_kernel_size=cfg.conv_kernel,
                                   dropout=cfg.dropout, time_major_inference=not stock_conv)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = x.shape[1]
        t_max = int(lengths.max())              # no work on frames that are padding in every utterance
        h, _ = self.conformer(self.prenet(x[:, :t_max]), lengths)           # (B, T', D)
        return F.pad(h, (0, 0, 0, T - t_max)), lengths                      # (B, T, D)


# ---------------------------------------------------------------- cepstral mean normalisation
def mean_normalise(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each utterance's mean log-mel over its real frames taken out (CMN, as WeSpeaker does to its
    fbanks): a fixed channel or loudness is a constant offset in log-mel, so this removes it. Padding
    stays as it is (the encoders mask it)."""
    valid = valid_mask(lengths, x.shape[1]).unsqueeze(-1)                  # (B, T, 1)
    mean = (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)   # (B, 1, D)
    return torch.where(valid, x - mean, x)


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


# ---------------------------------------------------------------- registries: name -> builder
# Encoders are built as cls(cfg), poolings as cls(encoder.out_dim), heads as builder(pooling.out_dim, cfg).
ENCODERS = {
    "transformer": TransformerEncoder,
    "conformer": ConformerEncoder,
    "resnet": ResNetEncoder,
    "ecapa": EcapaEncoder,
}
POOLINGS = {
    "mean": MeanPooling,
    "sap": SelfAttentionPooling,
    "sap+mean": SapMeanPooling,
    "stats": StatsPooling,
    "astp": AttentiveStatsPooling,
}
HEADS = {
    "mlp": lambda e, cfg: MLPHead(e, cfg.d_model, cfg.n_classes),
    "linear": lambda e, cfg: LinearHead(e, cfg.n_classes, cfg.head_bn),
    "amsoftmax": lambda e, cfg: AMSoftmaxHead(e, cfg.n_classes, cfg.am_s, cfg.am_m, cfg.margin_warmup_steps,
                                              cfg.head_bn),
    "aamsoftmax": lambda e, cfg: AAMSoftmaxHead(e, cfg.n_classes, cfg.am_s, cfg.am_m, cfg.margin_warmup_steps,
                                                cfg.head_bn),
}


def check_names(cfg: ModelConfig) -> None:
    """KitError naming the choices when cfg names an encoder, pooling or head no registry has."""
    for part, registry in (("encoder", ENCODERS), ("pooling", POOLINGS), ("head", HEADS)):
        name = getattr(cfg, part)
        if name not in registry:
            raise KitError(f"model.{part} {name!r}: choose one of {', '.join(registry)}")


# ---------------------------------------------------------------- the whole model
class SpeakerNet(nn.Module):
    """encoder -> pooling -> head as cfg names them; `encoder` replaces the named one, built already."""

    def __init__(self, cfg: ModelConfig, augment: AugmentConfig | None = None, encoder: nn.Module | None = None):
        super().__init__()
        check_names(cfg)
        self.encoder = ENCODERS[cfg.encoder](cfg) if encoder is None else encoder
        self.pooling = POOLINGS[cfg.pooling](self.encoder.out_dim)
        self.head = HEADS[cfg.head](self.pooling.out_dim, cfg)
        self.specaug = SpecAugment(augment) if augment is not None and augment.specaugment else None
        self.cmn = cfg.feature_norm == "cmn"

    def set_step(self, step: int) -> None:
        """Tell step-scheduled parts (a margin head's margin) where training is."""
        if isinstance(self.head, MarginHead):
            self.head.update(step)

    def without_margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training logits with a margin head's margin taken out: what prediction would score,
        so training accuracy is comparable across heads."""
        return self.head.remove_margin(logits, labels) if isinstance(self.head, MarginHead) else logits

    def embed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cmn:
            x = mean_normalise(x, lengths)
        if self.specaug is not None:
            x = self.specaug(x, lengths)                                    # no-op in eval
        h, lengths = self.encoder(x, lengths)                               # (B, T', D), lengths at T'
        return self.pooling(h, lengths)                                     # (B, E)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(x, lengths), labels)                    # (B, n_classes)


def build_model(cfg: ModelConfig, augment: AugmentConfig | None = None, fast_dropout: bool = False) -> SpeakerNet:
    """The model a ModelConfig names; pass the AugmentConfig to get in-model SpecAugment.
    fast_dropout swaps in kit.layers' CPU-cheap dropout (same parameters and maths)."""
    model = SpeakerNet(cfg, augment)
    return use_fast_dropout(model) if fast_dropout else model


def check_model(cfg: ModelConfig) -> None:
    """Refuse (KitError) a ModelConfig whose model cannot be built -- d_model not a multiple of
    n_heads, an even conformer kernel, ECAPA channels not a multiple of 8 -- before any run starts:
    the model is built on torch's meta device, which allocates nothing."""
    with torch.device("meta"):
        SpeakerNet(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
