"""kit's Conformer against torchaudio's: torchaudio's state_dicts load into it, and it gives the same
outputs and gradients, padding included (torchaudio's depthwise convs masked the way kit's are)."""
from __future__ import annotations

import pytest
import torch
from torchaudio.models import Conformer as TorchaudioConformer

from kit.conformer import Conformer, MaskedDepthwiseConv

SHAPE = dict(input_dim=16, num_heads=2, ffn_dim=32, num_layers=2, depthwise_conv_kernel_size=5)


pytestmark = pytest.mark.usefixtures("one_thread")     # conftest


def padded_batch(lengths=(20, 13, 6)):
    """(B, T, 16) with T the longest length, as torchaudio's Conformer takes it; padding is noise."""
    torch.manual_seed(0)
    lengths = torch.tensor(lengths)
    return torch.randn(len(lengths), int(lengths.max()), 16, requires_grad=True), lengths


def kit_key(torchaudio_key: str) -> str:
    """The one name that differs: kit's depthwise conv wraps its Conv1d (`.conv`)."""
    return torchaudio_key.replace("conv_module.sequential.2.", "conv_module.sequential.2.conv.")


def torchaudio_pair(dropout: float = 0.0, time_major_inference: bool = True):
    """torchaudio's Conformer and kit's holding its weights."""
    torch.manual_seed(0)
    reference = TorchaudioConformer(**SHAPE, dropout=dropout)
    ours = Conformer(**SHAPE, dropout=dropout, time_major_inference=time_major_inference)
    ours.load_state_dict(reference.state_dict())                      # strict: every key, every shape
    return reference, ours


def mask_depthwise_convs(reference: torch.nn.Module, lengths: torch.Tensor) -> None:
    """Zero padded frames before each of torchaudio's depthwise convs (public hooks), as kit does."""
    mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None])[:, None, :].float()   # (B, 1, T)
    for layer in reference.conformer_layers:
        layer.conv_module.sequential[2].register_forward_pre_hook(lambda module, args: (args[0] * mask,))


def run(model, x, lengths, seed: int = 1):
    torch.manual_seed(seed)                                            # the same dropout draws for both
    out, out_lengths = model(x, lengths)
    assert torch.equal(out_lengths, lengths)
    return out


def test_state_dict_keys_are_torchaudios_with_the_conv_wrapped():
    reference, ours = torchaudio_pair()
    assert list(ours.state_dict()) == [kit_key(k) for k in reference.state_dict()]
    assert any(k.endswith("sequential.2.conv.weight") for k in ours.state_dict())   # kit's checkpoints' names


def test_a_torchaudio_state_dict_gives_torchaudios_outputs_on_an_unpadded_batch():
    reference, ours = torchaudio_pair()
    x, lengths = padded_batch((20, 20, 20))
    for model in (reference, ours):
        model.eval()
    torch.testing.assert_close(run(ours, x, lengths), run(reference, x, lengths), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("time_major", [True, False])
def test_same_outputs_and_input_gradients_as_torchaudio_with_padding(training, time_major):
    reference, ours = torchaudio_pair(dropout=0.1 if training else 0.0, time_major_inference=time_major)
    x, lengths = padded_batch()
    mask_depthwise_convs(reference, lengths)
    got, want = [], []
    for model, out in ((reference, want), (ours, got)):
        model.train(training)
        y = run(model, x, lengths)
        out += [y, *torch.autograd.grad(y.square().sum(), x)]
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)            # outputs (B, T, D)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)            # d loss / d x


@pytest.mark.parametrize("training", [True, False])
def test_same_parameter_gradients_as_torchaudio_with_padding(training):
    reference, ours = torchaudio_pair(dropout=0.1 if training else 0.0)
    x, lengths = padded_batch()
    mask_depthwise_convs(reference, lengths)
    for model in (reference, ours):
        model.train(training)
        run(model, x.detach(), lengths).square().sum().backward()
    want = {kit_key(name): p.grad for name, p in reference.named_parameters()}
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, want[name], atol=1e-5, rtol=1e-5, msg=name)


def test_without_the_mask_padding_would_leak_into_real_frames():
    """Why kit masks: torchaudio's own convs let a padded frame's values reach the real frames."""
    reference, ours = torchaudio_pair()
    x, lengths = padded_batch()
    reference.eval()
    ours.eval()
    noisy = x.detach().clone()
    noisy[1, 13:] = 100.0                                              # change only utterance 1's padding
    real = slice(0, 13)
    torch.testing.assert_close(run(ours, x.detach(), lengths)[1, real], run(ours, noisy, lengths)[1, real])
    assert not torch.allclose(run(reference, x.detach(), lengths)[1, real], run(reference, noisy, lengths)[1, real])


def test_masked_depthwise_conv_zeroes_padding_before_the_conv():
    conv = MaskedDepthwiseConv(channels=3, kernel=3)
    x = torch.randn(1, 3, 5)
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0, 0.0]]])
    torch.testing.assert_close(conv(x, mask), conv.conv(x * mask))
    torch.testing.assert_close(conv(x), conv.conv(x))
