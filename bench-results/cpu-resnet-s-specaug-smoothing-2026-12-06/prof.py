"""Where a resnet-s training step's time goes on one thread."""
import sys, time
import numpy as np, torch
torch.set_num_threads(1)
from kit.config import from_dict, load_toml
from kit.data import FeatureStore
from kit.models import build_model
from timm.optim import create_optimizer_v2
import torch.nn.functional as F
cfg = from_dict(load_toml(sys.argv[1]))
store = FeatureStore.open(sys.argv[2], cfg.data.store_dtype, progress=False)
cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
net = build_model(cfg.model, cfg.augment, True).train()
opt = create_optimizer_v2(net, "adamw", lr=1e-3, weight_decay=0.01, fused=True)
rng = np.random.default_rng(0)
n = store.n_train
T = {"crop": 0.0, "fwd": 0.0, "bwd": 0.0, "opt": 0.0}
def step(t):
    a = time.perf_counter()
    rows = rng.integers(0, n, cfg.train.batch_size)
    x, lengths = store.crop_batch(rows, cfg.data.segment_len, rng)
    y = torch.from_numpy(store.labels[rows])
    b = time.perf_counter()
    loss = F.cross_entropy(net(x, lengths, y).float(), y)
    c = time.perf_counter()
    loss.backward()
    d = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 3.0)
    opt.step(); opt.zero_grad(set_to_none=True)
    e = time.perf_counter()
    if t:
        T["crop"] += b - a; T["fwd"] += c - b; T["bwd"] += d - c; T["opt"] += e - d
for i in range(30): step(False)
N = 200
for i in range(N): step(True)
print({k: f"{1000*v/N:.2f} ms" for k, v in T.items()}, f"total {1000*sum(T.values())/N:.1f} ms/step")
with torch.profiler.profile() as p:
    for i in range(30): step(False)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
