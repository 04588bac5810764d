"""Models: every registered encoder/pooling/head combination, padding masking, the margin heads
(AM- and AAM-Softmax) and their warm-up, SpecAugment only in training, old checkpoints loading."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from kit.config import AugmentConfig, ModelConfig, RunConfig, validate
from kit.errors import KitError
from kit.heads import AAMSoftmaxHead
from kit.models import ENCODERS, HEADS, POOLINGS, AMSoftmaxHead, SpecAugment, build_model
from kit.pooling import AttentiveStatsPooling, StatsPooling

pytestmark = pytest.mark.usefixtures("one_thread")     # conftest: tiny models run fastest on one thread


def small(**kw) -> ModelConfig:
    base = dict(d_model=16, n_heads=2, ffn_dim=32, n_layers=1, conv_kernel=3, n_mels=40, n_classes=5, dropout=0.0,
                channels=8, resnet_depth=10)
    return ModelConfig(**{**base, **kw})


def padded_batch():
    """Three utterances of 12, 7 and 4 frames padded with -20 to 12 frames."""
    torch.manual_seed(0)
    lengths = torch.tensor([12, 7, 4])
    x = torch.randn(3, 12, 40)
    x[torch.arange(12)[None, :] >= lengths[:, None]] = -20.0
    return x, lengths


# Frame width D of each encoder in small(): d_model, 8 * channels * ceil(40 / 8), 3 * channels.
FRAME_DIM = {"transformer": 16, "conformer": 16, "resnet": 8 * 8 * 5, "ecapa": 3 * 8}
POOLED = {"mean": 1, "sap": 1, "sap+mean": 2, "stats": 2, "astp": 2}      # E / D


@pytest.mark.parametrize("encoder,pooling,head", list(itertools.product(ENCODERS, POOLINGS, HEADS)))
def test_every_combination_gives_logits_embeddings_and_gradients(encoder, pooling, head):
    torch.manual_seed(0)
    model = build_model(small(encoder=encoder, pooling=pooling, head=head, head_bn=True))
    x, lengths = padded_batch()
    labels = torch.tensor([0, 1, 2])
    torch.nn.functional.cross_entropy(model(x, lengths, labels), labels).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    assert model(x, lengths).shape == (3, 5)
    assert model.embed(x, lengths).shape == (3, POOLED[pooling] * FRAME_DIM[encoder])


@pytest.mark.parametrize("encoder,pooling", [("transformer", "mean"), ("transformer", "sap+mean"),
                                             ("conformer", "sap"), ("conformer", "sap+mean"),
                                             ("transformer", "stats"), ("conformer", "astp")])
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


@pytest.mark.parametrize("head_cls", [AMSoftmaxHead, AAMSoftmaxHead])
def test_margin_warmup_ramps_linearly(head_cls):
    head = head_cls(8, 4, s=30.0, m=0.2, warmup_steps=100)
    seen = []
    for step in (0, 25, 50, 100, 500):
        head.update(step)
        seen.append(round(head.m, 6))
    assert seen == [0.0, 0.05, 0.1, 0.2, 0.2]
    head.set_step(25)                                              # the name kit's trainer used before
    assert head.m == pytest.approx(0.05)


@pytest.mark.parametrize("head", ["amsoftmax", "aamsoftmax"])
def test_model_set_step_reaches_the_head(head):
    model = build_model(small(head=head, am_m=0.4, margin_warmup_steps=10))
    model.set_step(5)
    assert model.head.m == pytest.approx(0.2)


def test_aamsoftmax_adds_the_angle_only_on_the_true_class():
    torch.manual_seed(0)
    head = AAMSoftmaxHead(8, 4, s=10.0, m=0.3)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    plain, with_margin = head(emb), head(emb, labels)
    cos = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(head.weight, dim=-1).T
    torch.testing.assert_close(plain, 10.0 * cos)                  # no labels: s * cos
    onehot = torch.nn.functional.one_hot(labels, 4).bool()
    assert torch.equal(with_margin[~onehot], plain[~onehot])
    assert torch.all(cos[onehot] > -math.cos(0.3))                 # random embeddings: the angular branch
    torch.testing.assert_close(with_margin[onehot], 10.0 * torch.cos(torch.acos(cos[onehot]) + 0.3))


def test_aamsoftmax_true_class_logit_keeps_falling_past_the_threshold():
    """Past theta = pi - m, cos(theta + m) would rise again; the true-class logit must keep falling
    with the angle and have no jump at the threshold."""
    head = AAMSoftmaxHead(2, 2, s=1.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    theta = torch.linspace(0, math.pi, 2001)
    emb = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)          # angle theta to class 0
    logit = head(emb, torch.zeros(2001, dtype=torch.long))[:, 0]
    steps = logit[1:] - logit[:-1]
    assert torch.all(steps < 0) and steps.abs().max() < 0.01
    torch.testing.assert_close(logit[-1], torch.tensor(-2.0 + math.cos(0.5)))  # cos - (1 + cos(pi - m)) at -1


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


@pytest.mark.parametrize("part,registry", [("encoder", ENCODERS), ("pooling", POOLINGS), ("head", HEADS)])
def test_unknown_names_are_refused_with_the_choices(part, registry):
    with pytest.raises(KitError, match=f"model.{part} 'nope': choose one of") as err:
        build_model(small(**{part: "nope"}))
    assert all(name in str(err.value) for name in registry)


def test_bad_sizes_are_refused():
    with pytest.raises(KitError, match="divisible"):
        build_model(small(d_model=15, n_heads=2))
    with pytest.raises(KitError, match="model.channels 12"):
        build_model(small(encoder="ecapa", channels=12))
    with pytest.raises(KitError, match="model.resnet_depth 50: choose one of 10, 18, 34"):
        build_model(small(encoder="resnet", resnet_depth=50))


@pytest.mark.parametrize("head", ["amsoftmax", "aamsoftmax"])
def test_training_accuracy_sees_logits_without_the_margin(head):
    torch.manual_seed(0)
    model = build_model(small(head=head, am_s=10.0, am_m=0.3)).eval()
    x, lengths = padded_batch()
    labels = torch.tensor([0, 1, 2])
    torch.testing.assert_close(model.without_margin(model(x, lengths, labels), labels), model(x, lengths))


def test_aamsoftmax_margin_comes_out_on_both_sides_of_the_threshold():
    torch.manual_seed(0)
    head = AAMSoftmaxHead(8, 3, s=30.0, m=0.4)
    emb = torch.cat([torch.randn(4, 8), -head.weight.detach()[:2]])          # the last two: cos = -1
    labels = torch.tensor([0, 1, 2, 0, 0, 1])
    torch.testing.assert_close(head.remove_margin(head(emb, labels), labels), head(emb), atol=1e-4, rtol=1e-4)


def test_stats_pooling_is_mean_and_std_of_the_real_frames():
    torch.manual_seed(0)
    h, lengths = torch.randn(2, 6, 3), torch.tensor([6, 4])
    h[1, 4:] = float("inf")                                        # whatever sits in padding stays out
    out = StatsPooling(3)(h, lengths)
    for i, n in enumerate(lengths.tolist()):
        real = h[i, :n]
        torch.testing.assert_close(out[i], torch.cat([real.mean(0), real.std(0, unbiased=False)]))


def test_attentive_stats_pooling_with_flat_scores_is_stats_pooling():
    torch.manual_seed(0)
    pool = AttentiveStatsPooling(3, bottleneck=4)
    h, lengths = torch.randn(2, 6, 3), torch.tensor([6, 4])
    h[1, 4:] = 1e4
    assert not torch.allclose(pool(h, lengths), StatsPooling(3)(h, lengths))
    with torch.no_grad():
        pool.score[2].weight.zero_()                               # every frame scores the same
    torch.testing.assert_close(pool(h, lengths), StatsPooling(3)(h, lengths))


@pytest.mark.parametrize("pool_cls", [StatsPooling, AttentiveStatsPooling])
def test_statistics_pooling_is_float32_and_finite_under_bf16_autocast(pool_cls):
    torch.manual_seed(0)
    pool = pool_cls(8)
    h = torch.full((2, 5, 8), 3.0, requires_grad=True)            # constant frames: std 0, clamped
    lengths = torch.tensor([5, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(h, lengths)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(h.grad).all()


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_encoder_trains_under_bf16_autocast_with_fast_dropout(encoder):
    torch.manual_seed(0)
    model = build_model(small(encoder=encoder, pooling="astp", head="aamsoftmax", dropout=0.1), fast_dropout=True)
    x, lengths = padded_batch()
    labels = torch.tensor([0, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x, lengths, labels).float()
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def _shapes(table: str) -> dict:
    """'name 16,40' lines -> {name: (16, 40)}."""
    rows = (line.split() for line in table.strip().splitlines())
    return {name: tuple(int(n) for n in shape.split(",") if n) for name, shape in rows}


# state_dict keys and shapes of kit's models before the registries (commit fc5d745), small() with n_layers=1.
OLD_TRANSFORMER_SAP_AMSOFTMAX_BN = _shapes("""
encoder.prenet.weight 16,40
encoder.prenet.bias 16
encoder.encoder.layers.0.self_attn.in_proj_weight 48,16
encoder.encoder.layers.0.self_attn.in_proj_bias 48
encoder.encoder.layers.0.self_attn.out_proj.weight 16,16
encoder.encoder.layers.0.self_attn.out_proj.bias 16
encoder.encoder.layers.0.linear1.weight 32,16
encoder.encoder.layers.0.linear1.bias 32
encoder.encoder.layers.0.linear2.weight 16,32
encoder.encoder.layers.0.linear2.bias 16
encoder.encoder.layers.0.norm1.weight 16
encoder.encoder.layers.0.norm1.bias 16
encoder.encoder.layers.0.norm2.weight 16
encoder.encoder.layers.0.norm2.bias 16
pooling.score.0.weight 16,16
pooling.score.0.bias 16
pooling.score.2.weight 1,16
pooling.score.2.bias 1
head.weight 5,16
head.bn.weight 16
head.bn.bias 16
head.bn.running_mean 16
head.bn.running_var 16
head.bn.num_batches_tracked ,
""")
_LAYER = "encoder.conformer.conformer_layers.0."
OLD_CONFORMER_SAPMEAN_MLP = _shapes("""
encoder.prenet.weight 16,40
encoder.prenet.bias 16
pooling.sap.score.0.weight 16,16
pooling.sap.score.0.bias 16
pooling.sap.score.2.weight 1,16
pooling.sap.score.2.bias 1
head.net.0.weight 16,32
head.net.0.bias 16
head.net.2.weight 5,16
head.net.2.bias 5
""") | {_LAYER + name: shape for name, shape in _shapes("""
ffn1.sequential.0.weight 16
ffn1.sequential.0.bias 16
ffn1.sequential.1.weight 32,16
ffn1.sequential.1.bias 32
ffn1.sequential.4.weight 16,32
ffn1.sequential.4.bias 16
self_attn_layer_norm.weight 16
self_attn_layer_norm.bias 16
self_attn.in_proj_weight 48,16
self_attn.in_proj_bias 48
self_attn.out_proj.weight 16,16
self_attn.out_proj.bias 16
conv_module.layer_norm.weight 16
conv_module.layer_norm.bias 16
conv_module.sequential.0.weight 32,16,1
conv_module.sequential.0.bias 32
conv_module.sequential.2.conv.weight 16,1,3
conv_module.sequential.2.conv.bias 16
conv_module.sequential.3.weight 16
conv_module.sequential.3.bias 16
conv_module.sequential.3.running_mean 16
conv_module.sequential.3.running_var 16
conv_module.sequential.3.num_batches_tracked ,
conv_module.sequential.5.weight 16,16,1
conv_module.sequential.5.bias 16
ffn2.sequential.0.weight 16
ffn2.sequential.0.bias 16
ffn2.sequential.1.weight 32,16
ffn2.sequential.1.bias 32
ffn2.sequential.4.weight 16,32
ffn2.sequential.4.bias 16
final_layer_norm.weight 16
final_layer_norm.bias 16
""").items()}


@pytest.mark.parametrize("cfg,old", [
    (small(encoder="transformer", pooling="sap", head="amsoftmax", head_bn=True), OLD_TRANSFORMER_SAP_AMSOFTMAX_BN),
    (small(encoder="conformer", pooling="sap+mean", head="mlp"), OLD_CONFORMER_SAPMEAN_MLP)])
def test_checkpoints_of_earlier_runs_still_load(cfg, old, tmp_path):
    torch.manual_seed(0)
    state = {name: torch.tensor(3) if name.endswith("num_batches_tracked") else torch.rand(shape)
             for name, shape in old.items()}
    torch.save(state, tmp_path / "old.pt")
    model = build_model(cfg)
    model.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True))       # strict: same keys, shapes
    x, lengths = padded_batch()
    assert torch.isfinite(model.eval()(x, lengths)).all()


def test_conformer_with_stock_convs_gives_the_same_outputs():
    """ConformerEncoder(stock_conv=True) (kit bench's course-style model) computes the convolution
    module with Conv1d at inference too; same parameters, same outputs."""
    from kit.models import ConformerEncoder, SpeakerNet

    cfg = small(encoder="conformer", conv_kernel=5)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    stock = SpeakerNet(cfg, encoder=ConformerEncoder(cfg, stock_conv=True)).eval()
    stock.load_state_dict(model.state_dict())
    x, lengths = padded_batch()
    torch.testing.assert_close(stock(x, lengths), model(x, lengths), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoder,pooling", [("resnet", "stats"), ("transformer", "sap"), ("ecapa", "astp")])
def test_cmn_takes_out_each_utterances_constant_offset_and_keeps_padding_masked(encoder, pooling):
    """model.feature_norm = "cmn": a channel or loudness that adds a constant to every frame of one
    utterance's log-mel (here +3 on the 7-frame one, -2 on the 4-frame one) leaves its embedding
    as it was; without cmn it does not. Padding still changes nothing."""
    x, lengths = padded_batch()
    valid = (torch.arange(12)[None, :] < lengths[:, None]).unsqueeze(-1)           # (B, T, 1)
    shifted = torch.where(valid, x + torch.tensor([0.0, 3.0, -2.0])[:, None, None], x)
    for norm, same in (("cmn", True), ("none", False)):
        torch.manual_seed(0)
        model = build_model(small(encoder=encoder, pooling=pooling, feature_norm=norm)).eval()
        with torch.no_grad():
            before, after = model.embed(x, lengths), model.embed(shifted, lengths)
            alone = model.embed(shifted[2:3, :4], lengths[2:3])
        torch.testing.assert_close(after[0], before[0])                             # not shifted
        assert torch.allclose(after[1:], before[1:], atol=1e-4, rtol=1e-4) == same, norm
        if same:
            torch.testing.assert_close(after[2:3], alone, atol=1e-4, rtol=1e-4)


def test_cmn_is_a_choice_checked_when_the_config_loads():
    cfg = RunConfig()
    cfg.model.feature_norm = "cvn"
    with pytest.raises(KitError, match="model.feature_norm 'cvn'"):
        validate(cfg)
