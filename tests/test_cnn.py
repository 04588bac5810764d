"""The convolutional encoders: ResNet and ECAPA-TDNN shapes, frame rates, depth, and padding that
never reaches an utterance's output in eval mode."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kit.cnn import BasicBlock
from kit.config import ModelConfig
from kit.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")     # conftest: tiny models run fastest on one thread


def cnn(**kw) -> ModelConfig:
    base = dict(encoder="resnet", channels=8, resnet_depth=10, pooling="stats", head="linear", n_mels=40, n_classes=5)
    return ModelConfig(**{**base, **kw})


def padded_batch(T: int = 21, lengths=(21, 13, 6)):
    """Utterances of the given lengths padded with -20 to T frames."""
    torch.manual_seed(0)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), T, 40)
    x[torch.arange(T)[None, :] >= lengths[:, None]] = -20.0
    return x, lengths


def trained_looking(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine terms, as after training: fresh ones (mean 0, var 1,
    bias 0) map a zeroed frame to zero and would hide padding that leaks."""
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model.eval()


def test_resnet_downsamples_time_and_mel_by_eight():
    model = build_model(cnn(channels=8))
    x, lengths = padded_batch()
    h, out_lengths = model.encoder(x, lengths)
    assert h.shape == (3, 3, 8 * 8 * 5)                         # ceil(21 / 8) frames, 64 channels x 5 mel bands
    assert model.encoder.out_dim == 320
    assert out_lengths.tolist() == [3, 2, 1]                    # ceil(length / 8)
    odd = build_model(cnn(channels=4, n_mels=36)).encoder       # 36 -> 18 -> 9 -> 5 mel bands
    assert odd(torch.randn(2, 16, 36), torch.tensor([16, 9]))[0].shape == (2, 2, odd.out_dim) and odd.out_dim == 160


@pytest.mark.parametrize("depth,blocks", [(10, [1, 1, 1, 1]), (18, [2, 2, 2, 2]), (34, [3, 4, 6, 3])])
def test_resnet_depth_sets_blocks_per_stage(depth, blocks):
    encoder = build_model(cnn(channels=4, resnet_depth=depth)).encoder
    assert [sum(isinstance(b, BasicBlock) for b in stage) for stage in encoder.layers] == blocks


def test_ecapa_keeps_the_frame_rate_and_aggregates_three_blocks():
    model = build_model(cnn(encoder="ecapa", channels=16, pooling="astp"))
    x, lengths = padded_batch()
    h, out_lengths = model.encoder(x, lengths)
    assert h.shape == (3, 21, 48) and model.encoder.out_dim == 48 and model.pooling.out_dim == 96
    assert torch.equal(out_lengths, lengths)
    assert torch.all(h >= 0)                                    # ReLU after the aggregating conv


@pytest.mark.parametrize("encoder,pooling", [("resnet", "stats"), ("resnet", "astp"), ("ecapa", "astp"),
                                             ("ecapa", "mean"), ("resnet", "sap")])
def test_padding_does_not_change_the_embedding(encoder, pooling):
    model = trained_looking(build_model(cnn(encoder=encoder, pooling=pooling)))
    x, lengths = padded_batch()
    with torch.no_grad():
        in_batch = model.embed(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model.embed(x[i:i + 1, :n], lengths[i:i + 1])
            torch.testing.assert_close(in_batch[i:i + 1], alone, atol=1e-4, rtol=1e-4)
        extra = torch.cat([x[2:3], torch.full((1, 30, 40), -20.0)], dim=1)   # much more padding
        torch.testing.assert_close(model.embed(extra, lengths[2:3]), in_batch[2:3], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("encoder", ["resnet", "ecapa"])
def test_a_full_batch_needs_no_mask_and_gives_the_same_frames(encoder):
    """Training crops fill the batch: the encoder then skips masking; the frames are those a
    masked call gives."""
    model = trained_looking(build_model(cnn(encoder=encoder)))
    x, _ = padded_batch(lengths=(21, 21, 21))
    with torch.no_grad():
        full, _ = model.encoder(x, torch.tensor([21, 21, 21]))
        masked, _ = model.encoder(torch.cat([x, torch.zeros(3, 3, 40)], 1), torch.tensor([21, 21, 21]))
    torch.testing.assert_close(masked[:, :full.shape[1]], full, atol=1e-4, rtol=1e-4)
