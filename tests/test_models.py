"""Models: every encoder/pooling/head combination, padding masking, AM-Softmax margin and its
warm-up, SpecAugment only in training."""
from __future__ import annotations

import itertools

import pytest
import torch

from kit.config import AugmentConfig, ModelConfig
from kit.errors import KitError
from kit.models import AMSoftmaxHead, SpecAugment, build_model


def small(**kw) -> ModelConfig:
    base = dict(d_model=16, n_heads=2, ffn_dim=32, n_layers=1, conv_kernel=3, n_mels=40, n_classes=5, dropout=0.0)
    return ModelConfig(**{**base, **kw})


def padded_batch():
    """Three utterances of 12, 7 and 4 frames padded with -20 to 12 frames."""
    torch.manual_seed(0)
    lengths = torch.tensor([12, 7, 4])
    x = torch.randn(3, 12, 40)
    x[torch.arange(12)[None, :] >= lengths[:, None]] = -20.0
    return x, lengths


@pytest.mark.parametrize("encoder,pooling,head", list(itertools.product(
    ["transformer", "conformer"], ["mean", "sap", "sap+mean"], ["mlp", "linear", "amsoftmax"])))
def test_every_combination_gives_logits_and_embeddings(encoder, pooling, head):
    model = build_model(small(encoder=encoder, pooling=pooling, head=head, head_bn=True)).eval()
    x, lengths = padded_batch()
    assert model(x, lengths).shape == (3, 5)
    expected_e = 32 if pooling == "sap+mean" else 16
    assert model.embed(x, lengths).shape == (3, expected_e)


@pytest.mark.parametrize("encoder,pooling", [("transformer", "mean"), ("transformer", "sap+mean"),
                                             ("conformer", "sap"), ("conformer", "sap+mean")])
def test_padding_does_not_change_the_embedding(encoder, pooling):
    model = build_model(small(encoder=encoder, pooling=pooling)).eval()
    x, lengths = padded_batch()
    alone = model.embed(x[2:3, :4], lengths[2:3])           # the 4-frame utterance, unpadded
    in_batch = model.embed(x, lengths)[2:3]                 # the same, padded to 12 beside longer ones
    extra = torch.cat([x[2:3], torch.full((1, 30, 40), -20.0)], dim=1)
    more_padding = model.embed(extra, lengths[2:3])
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(more_padding, alone, atol=1e-5, rtol=1e-5)


def test_amsoftmax_margin_only_with_labels():
    torch.manual_seed(0)
    head = AMSoftmaxHead(8, 4, s=10.0, m=0.3)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    plain = head(emb)
    with_margin = head(emb, labels)
    diff = plain - with_margin
    onehot = torch.nn.functional.one_hot(labels, 4).bool()
    torch.testing.assert_close(diff[onehot], torch.full((6,), 3.0))  # s * m on the true class only
    assert torch.all(diff[~onehot] == 0)
    assert plain.abs().max() <= 10.0 + 1e-5                           # s * cos is bounded by s


def test_margin_warmup_ramps_linearly():
    head = AMSoftmaxHead(8, 4, s=30.0, m=0.2, warmup_steps=100)
    seen = []
    for step in (0, 25, 50, 100, 500):
        head.set_step(step)
        seen.append(round(head.m, 6))
    assert seen == [0.0, 0.05, 0.1, 0.2, 0.2]


def test_model_set_step_reaches_the_head():
    model = build_model(small(head="amsoftmax", am_m=0.4, margin_warmup_steps=10))
    model.set_step(5)
    assert model.head.m == pytest.approx(0.2)


def test_specaugment_only_in_training_and_respects_lengths():
    torch.manual_seed(0)
    aug = SpecAugment(AugmentConfig(specaugment=True, freq_masks=2, freq_width=8, time_masks=2, time_width=10))
    x, lengths = padded_batch()
    x = x.repeat(8, 1, 1)                                        # (24, 12, 40)
    lengths = lengths.repeat(8)
    aug.train()
    out = aug(x, lengths)
    assert out.shape == x.shape and not torch.equal(out, x)
    pad = torch.arange(12)[None, :] >= lengths[:, None]          # padded frames stay -20
    assert torch.all(out[pad] == -20.0)
    aug.eval()
    assert torch.equal(aug(x, lengths), x)


def test_model_applies_specaugment_in_training_only():
    model = build_model(small(), AugmentConfig(specaugment=True, freq_width=10, time_width=5))
    x, lengths = padded_batch()
    model.eval()
    torch.testing.assert_close(model(x, lengths), model(x, lengths))
    model.train()
    torch.manual_seed(1)
    a = model(x, lengths)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x, lengths))


def test_bad_names_are_refused():
    with pytest.raises(KitError, match="model.pooling"):
        build_model(small(pooling="max"))
    with pytest.raises(KitError, match="divisible"):
        build_model(small(d_model=15, n_heads=2))


def test_training_accuracy_sees_logits_without_the_margin():
    model = build_model(small(head="amsoftmax", am_s=10.0, am_m=0.3)).eval()
    x, lengths = padded_batch()
    labels = torch.tensor([0, 1, 2])
    torch.testing.assert_close(model.without_margin(model(x, lengths, labels), labels), model(x, lengths))


@pytest.mark.parametrize("training", [False, True])
def test_conformer_conv_module_matches_torchaudios(training):
    """kit computes the Conformer's convolution module in (B, T, C) layout at inference: same
    outputs and gradients as torchaudio's own module, same state_dict."""
    import copy

    from torchaudio.models.conformer import _ConvolutionModule

    cfg = ModelConfig(encoder="conformer", d_model=32, n_layers=2, n_heads=4, ffn_dim=64, conv_kernel=15,
                      dropout=0.0, n_mels=8, n_classes=5)
    torch.manual_seed(0)
    kit_model = build_model(cfg)
    reference = copy.deepcopy(kit_model)
    for layer in reference.encoder.conformer.conformer_layers:
        layer.conv_module.__class__ = _ConvolutionModule
    x, lengths = torch.randn(3, 40, 8), torch.tensor([40, 25, 9])       # padding masked before the conv
    kit_model.train(training)
    reference.train(training)
    out, want = kit_model(x, lengths), reference(x, lengths)
    assert torch.allclose(out, want, atol=1e-5)
    out.sum().backward()
    want.sum().backward()
    ref_params = dict(reference.named_parameters())
    for name, p in kit_model.named_parameters():
        assert torch.allclose(p.grad, ref_params[name].grad, atol=1e-5), name
    assert list(kit_model.state_dict()) == list(reference.state_dict())
