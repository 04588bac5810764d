"""Drop-in layers that train the same models faster on a CPU: dropout and attention whose
random numbers cost a fraction of torch's. Same parameters, same state_dict keys, same maths.

Why: profiling a CPU training step of the strong tier's Conformer showed torch's dropout
(`bernoulli_`, about 5 ns per element on this machine's generator) taking ~37% of the step,
most of it on the (B, heads, T, T) attention weights. Here one 64-bit draw from the same
torch generator feeds four dropout decisions of 15 bits each, so seeding and resume are
unchanged. On a GPU torch's fused dropout is already cheap and is used as is.
"""
from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

M = TypeVar("M", bound=nn.Module)              # use_fast_dropout returns the module it was given

_BITS = 15                      # random bits per dropout decision: p is rounded to 1/32768


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p (rounded to a multiple of
    1/32768), scale the rest by 1/(1-p). Falls back to F.dropout off the CPU."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    threshold = round(p * (1 << _BITS))                    # drop where the 15-bit draw < threshold
    if threshold == 0:
        return x
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_()           # (n/4,) 63 random bits each
    draws = words.view(torch.int16)[:n].view(x.shape) & ((1 << _BITS) - 1)   # x's shape, uniform [0, 2^15)
    scale = (1 << _BITS) / ((1 << _BITS) - threshold)
    keep = (draws >= threshold).to(x.dtype).mul_(scale)                     # 0 or 1/(1-p); float
    return x * keep                     # a float multiply: masked_fill with a bool mask is 10x slower here


class FastDropout(nn.Dropout):
    """nn.Dropout through fast_dropout (same p, same eval behaviour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


class FastDropoutAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose attention-weight dropout is fast_dropout when training on a
    CPU. Elsewhere (eval, GPU, no dropout, cross-attention, weights asked for) it is torch's."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        own = (self.training and self.dropout > 0 and query.device.type == "cpu" and not need_weights
               and attn_mask is None and not is_causal and self.kdim == self.vdim == self.embed_dim
               and query is key and key is value and self.bias_k is None and not self.add_zero_attn)
        if not own:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                   need_weights=need_weights, attn_mask=attn_mask,
                                   average_attn_weights=average_attn_weights, is_causal=is_causal)
        x = query if self.batch_first else query.transpose(0, 1)             # (B, T, D)
        return self_attention(x, self.in_proj_weight, self.in_proj_bias, self.out_proj, self.num_heads,
                              key_padding_mask, self.dropout, self.batch_first), None


def self_attention(x, in_proj_weight, in_proj_bias, out_proj: nn.Linear, heads: int, key_padding_mask,
                   dropout: float, batch_first: bool) -> torch.Tensor:
    """Multi-head self-attention with fast_dropout on the weights. x (B, T, D); key_padding_mask
    (B, T) bool (True = padding) or additive float, as nn.MultiheadAttention takes it."""
    B, T, D = x.shape
    qkv = F.linear(x, in_proj_weight, in_proj_bias).view(B, T, 3, heads, D // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)                                       # each (B, H, T, hd)
    scores = (q * (D // heads) ** -0.5) @ k.transpose(-1, -2)                  # (B, H, T, T)
    if key_padding_mask is not None:
        if key_padding_mask.dtype == torch.bool:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        else:
            scores = scores + key_padding_mask[:, None, None, :].to(scores.dtype)
    weights = fast_dropout(scores.softmax(-1), dropout)                        # (B, H, T, T)
    out = out_proj((weights @ v).transpose(1, 2).reshape(B, T, D))             # (B, T, D)
    return out if batch_first else out.transpose(0, 1)


def use_fast_dropout(module: M) -> M:
    """Swap every nn.Dropout and nn.MultiheadAttention inside `module` for the fast versions,
    keeping their parameters. Returns the module."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
        elif type(child) is nn.MultiheadAttention:
            fast = FastDropoutAttention(child.embed_dim, child.num_heads, dropout=child.dropout,
                                        bias=child.in_proj_bias is not None, add_bias_kv=child.bias_k is not None,
                                        add_zero_attn=child.add_zero_attn, kdim=child.kdim, vdim=child.vdim,
                                        batch_first=child.batch_first)
            fast.load_state_dict(child.state_dict())
            fast.train(child.training)
            setattr(module, name, fast)
        else:
            use_fast_dropout(child)
    return module
