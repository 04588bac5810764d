"""kit.train.optim: the optimizer and the EMA are timm's to the parameter group and the update, and a
training run no longer imports timm (nor torchvision, which timm imports)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kit.config import RunConfig
from kit.models import build_model
from kit.train.optim import WeightEma, adamw


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = RunConfig()
    cfg.model.d_model, cfg.model.ffn_dim, cfg.model.n_heads = 32, 64, 2
    return build_model(cfg.model, cfg.augment)


def _loss(net: torch.nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 64, 40, generator=g)
    y = torch.randint(0, 10, (4,), generator=g)
    return torch.nn.functional.cross_entropy(net(x, torch.full((4,), 64), y), y)


@pytest.mark.parametrize("weight_decay", [0.05, 0.0])
def test_adamw_has_timms_groups_and_takes_timms_steps(weight_decay):
    from timm.optim import create_optimizer_v2

    ours_net, timms_net = _net(), _net()
    ours = adamw(ours_net, lr=1e-3, weight_decay=weight_decay, fused=None)
    timms = create_optimizer_v2(timms_net, "adamw", lr=1e-3, weight_decay=weight_decay, fused=None)
    names = {id(p): n for n, p in ours_net.named_parameters()}
    timm_names = {id(p): n for n, p in timms_net.named_parameters()}
    assert [([names[id(p)] for p in g["params"]], g["weight_decay"]) for g in ours.param_groups] == \
        [([timm_names[id(p)] for p in g["params"]], g["weight_decay"]) for g in timms.param_groups]
    assert len(ours.param_groups) == (2 if weight_decay else 1)
    assert {k: v for k, v in ours.defaults.items()} == timms.defaults
    for net, opt in ((ours_net, ours), (timms_net, timms)):
        net.train()
        for step in range(3):
            torch.manual_seed(step)
            opt.zero_grad()
            _loss(net, step).backward()
            opt.step()
    for (name, a), b in zip(ours_net.state_dict().items(), timms_net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    timms.load_state_dict(ours.state_dict())            # a checkpoint of either resumes the other


def test_weight_ema_is_timms_model_ema_v3():
    from timm.utils import ModelEmaV3

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ours, timms = WeightEma(net, decay=0.9), ModelEmaV3(net, decay=0.9)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for step in range(1, 6):
        opt.zero_grad()
        net(torch.randn(8, 3, generator=torch.Generator().manual_seed(step))).pow(2).mean().backward()
        opt.step()
        ours.update(net, step=step)
        timms.update(net, step=step)
        for (name, a), b in zip(ours.module.state_dict().items(), timms.module.state_dict().values(),
                                strict=True):
            assert torch.equal(a, b), (step, name)
    assert not ours.module.training and ours.module.state_dict()["1.num_batches_tracked"].item() == 5
    assert not torch.equal(ours.module[0].weight, net[0].weight)         # an average, not a copy


TRAINS_WITHOUT_TIMM = """
import sys
from pathlib import Path
from kit.config import layered
from kit.train import train
base = {"data": {"data_dir": sys.argv[1], "segment_len": 32, "store_dtype": "float32"},
        "model": {"d_model": 16, "ffn_dim": 32, "n_heads": 2},
        "train": {"batch_size": 8, "max_steps": 3, "eval_every": 3, "cpu_threads": 1, "ema": True}}
train(layered(("test", base)), Path(sys.argv[2]), progress=False)
print(sorted(m for m in ("timm", "torchvision") if m in sys.modules))
"""


@pytest.mark.slow
def test_a_training_run_imports_neither_timm_nor_torchvision(tiny_data, tmp_path):
    done = subprocess.run([sys.executable, "-c", TRAINS_WITHOUT_TIMM, str(tiny_data), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
