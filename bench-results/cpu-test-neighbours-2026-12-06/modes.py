import json, numpy as np
D = "/tmp/tmp.MYM67a8XpI/kit/runs-bench/20261205-192914/boss"
for m in ["resnet-s", "transformer-s"]:
    ids = json.load(open(f"{D}/{m}/ids.json")); yv = np.array(ids["val_labels"])
    P = {k: np.load(f"{D}/{m}/val_probs_{k}.npy") for k in ("centre", "full", "sliding")}
    acc = lambda p: (p.argmax(1) == yv).mean()
    print(m, {k: round(acc(p), 4) for k, p in P.items()}, "full+sliding", round(acc(np.log(P["full"]+1e-9)+np.log(P["sliding"]+1e-9)), 4))
