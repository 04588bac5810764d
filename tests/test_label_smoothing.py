"""train.label_smoothing: the loss a member trains on mixes its target with the uniform distribution."""
from __future__ import annotations

import torch

from kit.train.targets import loss_fn


def _by_hand(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=1)
    mixed = (1 - eps) * target + eps / logits.shape[1]
    return -(mixed * logp).sum(1).mean()


def test_labels_are_smoothed_towards_uniform():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])
    one_hot = torch.nn.functional.one_hot(y, 5).float()
    assert torch.allclose(loss_fn(logits, y, None, 0.2), _by_hand(logits, one_hot, 0.2), atol=1e-6)
    assert torch.allclose(loss_fn(logits, y, None), _by_hand(logits, one_hot, 0.0), atol=1e-6)
    assert not torch.allclose(loss_fn(logits, y, None, 0.2), loss_fn(logits, y, None), atol=1e-3)


def test_soft_targets_are_smoothed_too():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(4, 3, generator=g), torch.tensor([0, 1, 2, 1])
    soft = torch.softmax(torch.randn(4, 3, generator=g), dim=1)
    assert torch.allclose(loss_fn(logits, y, soft, 0.1), _by_hand(logits, soft, 0.1), atol=1e-6)
