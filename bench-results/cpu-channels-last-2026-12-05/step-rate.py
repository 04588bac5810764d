import sys, time, torch
torch.set_num_threads(1)
from kit.config import load_toml, from_dict
from kit.models import build_model
cfg = from_dict(load_toml(sys.argv[1]))
cfg.model.n_mels = 40; cfg.model.n_classes = 200
seg = cfg.data.segment_len
def bench(dtype, cl, n=40):
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.augment, True)
    if cl: net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(32, seg, 40); L = torch.full((32,), seg); y = torch.randint(0, 200, (32,))
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype=="bf16"):
            out = net(x, L, y).float()
        loss = torch.nn.functional.cross_entropy(out, y); loss.backward(); opt.step(); opt.zero_grad()
    for _ in range(5): step()
    t = time.time()
    for _ in range(n): step()
    return n / (time.time() - t)
for dt in ("bf16", "fp32"):
    for cl in (False, True):
        if cl and cfg.model.encoder != "resnet": continue
        print(cfg.name, dt, "channels_last" if cl else "", f"{bench(dt, cl):.2f} steps/s", flush=True)
