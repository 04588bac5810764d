import sys, json, numpy as np
from kit.data import FeatureStore
from kit.split import load_split
for run in sys.argv[1:]:
    import tomllib
    cfg = tomllib.load(open(f"{run}/config.toml", "rb"))
    store = FeatureStore.open(cfg["data"]["data_dir"], "float16", progress=False)
    y = store.labels[load_split(f"{run}/split.json", store).val]
    P = {m: np.load(f"{run}/val_probs_{m}.npy") for m in ("full", "sliding", "centre")}
    a = lambda p: (p.argmax(1) == y).mean()
    g = np.exp((np.log(P["full"]+1e-9) + np.log(P["sliding"]+1e-9))/2)
    print(run.split("/")[-3], run.split("/")[-1], {k: round(a(v), 4) for k, v in P.items()}, "mean f+s", round(a(P["full"]+P["sliding"]), 4), "geo", round(a(g), 4))
