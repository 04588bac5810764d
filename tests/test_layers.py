"""kit.layers: the CPU-cheap dropout and attention behave like torch's, only their random
numbers come cheaper."""
import pytest
import torch
from torch import nn

from kit.config import AugmentConfig, ModelConfig
from kit.layers import FastDropout, FastDropoutAttention, fast_dropout, self_attention
from kit.models import build_model


def test_fast_dropout_drops_p_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    y = fast_dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 3277 / 32768) < 0.002                # p rounded to 1/32768
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 32768 / (32768 - 3277)))
    assert abs(y.mean().item() - 1.0) < 0.005                 # inverted dropout keeps the expectation


def test_fast_dropout_is_identity_in_eval_and_at_p_zero():
    x = torch.randn(4, 5)
    assert fast_dropout(x, 0.3, training=False) is x
    assert fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))


def test_fast_dropout_follows_the_torch_seed_and_passes_gradients_through_kept_elements():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(1)
    a = fast_dropout(x, 0.5)
    torch.manual_seed(1)
    b = fast_dropout(x, 0.5)
    torch.manual_seed(2)
    c = fast_dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    expected = (a != 0).float() * 2.0                          # kept: d/dx (x * 2) = 2; dropped: 0
    assert torch.equal(x.grad, expected)


def test_masks_differ_between_elements_of_one_draw():
    """Four decisions share a 64-bit draw: they must not be copies of one another."""
    torch.manual_seed(0)
    y = fast_dropout(torch.ones(4, 100_000), 0.5).view(-1, 4)          # neighbours share a word
    same = (y[:, 0] == y[:, 1]).float().mean().item()
    assert 0.45 < same < 0.55                                          # independent: agree half the time


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("float_mask", [False, True])
def test_self_attention_without_dropout_matches_torch(batch_first, float_mask):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 7, 16)                                          # (B, T, D)
    pad = torch.tensor([[False] * 7, [False] * 5 + [True] * 2, [False] * 2 + [True] * 5])   # (B, T)
    mask = torch.zeros(3, 7).masked_fill(pad, float("-inf")) if float_mask else pad
    inp = x if batch_first else x.transpose(0, 1)
    want, _ = mha(inp, inp, inp, key_padding_mask=mask, need_weights=False)
    got = self_attention(x, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj, 4, mask, 0.0, batch_first)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_use_fast_dropout_keeps_weights_and_eval_outputs(encoder):
    cfg = ModelConfig(encoder=encoder, d_model=32, n_layers=2, n_heads=4, ffn_dim=64, conv_kernel=5,
                      dropout=0.2, n_mels=8, n_classes=5)
    torch.manual_seed(0)
    stock = build_model(cfg, AugmentConfig())
    torch.manual_seed(0)
    fast = build_model(cfg, AugmentConfig(), fast_dropout=True)
    assert not any(type(m) in (nn.Dropout, nn.MultiheadAttention) for m in fast.modules())
    assert any(isinstance(m, FastDropout) for m in fast.modules())
    assert any(isinstance(m, FastDropoutAttention) for m in fast.modules())
    s, f = stock.state_dict(), fast.state_dict()
    assert list(s) == list(f) and all(torch.equal(s[k], f[k]) for k in s)
    x, lengths = torch.randn(3, 20, 8), torch.tensor([20, 13, 6])
    with torch.no_grad():
        assert torch.allclose(stock.eval()(x, lengths), fast.eval()(x, lengths), atol=1e-5)
    fast.train()                                   # dropout active: still trains, through every weight
    labels = torch.tensor([0, 1, 2])
    nn.functional.cross_entropy(fast(x, lengths, labels), labels).backward()
    in_proj = [m.in_proj_weight for m in fast.modules() if isinstance(m, FastDropoutAttention)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in in_proj)
