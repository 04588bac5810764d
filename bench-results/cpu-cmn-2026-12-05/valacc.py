"""Validation accuracy (full and sliding 400/200) of a run's last.pt; prints one line."""
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from kit.data import FeatureStore
from kit.infer import predict_index, accuracy
from kit.split import load_split
from kit.train.results import load_model
run = sys.argv[1]
model, cfg = load_model(run, "last")
store = FeatureStore.open(cfg.data.data_dir, cfg.data.store_dtype, progress=False)
split = load_split(f"{run}/split.json", store)
labels = store.labels[split.val]
out = {m: accuracy(predict_index(model, store, split.val, m, 400, 200, n_classes=cfg.model.n_classes), labels)
       for m in ("full", "sliding")}
s = json.load(open(f"{run}/summary.json"))
print(run, cfg.data.segment_len, s["step"], f"{s['seconds']:.0f}s", " ".join(f"{k} {v:.4f}" for k, v in out.items()))
