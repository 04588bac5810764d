"""Offline: do test-time views (whole utterance, sliding windows of several sizes) add to the vote?
Per competition: the voted members' val/test probabilities in each view, then best member vs vote,
with and without averaging views. Test scored with the answer key only to report."""
import json, sys
from pathlib import Path
import numpy as np
from kit.data import FeatureStore
from kit.ensemble.calibration import calibrate, fit_temperature, log_probs
from kit.infer import _load_model, predict_index
from kit.records import PredictionIds
from kit.split import load_split
from kit.submission import read_answer_key

VIEWS = {"full": ("full", 0, 0), "s128": ("sliding", 128, 64), "s200": ("sliding", 200, 100),
         "s400": ("sliding", 400, 200), "s96": ("sliding", 96, 48)}

def probs_for(run_dir, store, split):
    model, cfg, _ = _load_model(run_dir, "last", "cpu")
    out = {}
    for v, (mode, w, h) in VIEWS.items():
        kw = dict(mode=mode, window=w or 256, hop=h or 128, average="probs", batch_size=64,
                  n_classes=cfg.model.n_classes)
        out[v] = (predict_index(model, store, split.val, **kw), predict_index(model, store, store.test_index, **kw))
    return out

def main(runs, key_csv):
    root = Path(runs) / "boss"
    members = [d for d in sorted(root.iterdir()) if (d / "ids.json").is_file() and d.name != "student"]
    cfg_store = None
    key = read_answer_key(key_csv)
    res = {}
    for d in members:
        ids = PredictionIds.load(d)
        if cfg_store is None:
            store = FeatureStore.open(ids.data_dir, dtype="float16", progress=False)
            split = load_split(d / "split.json", store)
            yv = store.labels[split.val]
            test_ids = ids.test
            usage = np.array([key[i][1] for i in test_ids]); truth = [key[i][0] for i in test_ids]
            spk = {s: k for k, s in enumerate(store.speakers)}
            yt = np.array([spk[t] for t in truth])
            cfg_store = True
        auto = json.loads((d / "ids.json").read_text()).get("settings", {}).get("mode")
        p = probs_for(d, store, split)
        cal = {}
        for v, (pv, pt) in p.items():
            lv, lt = log_probs(pv), log_probs(pt)
            T = fit_temperature(lv, yv)
            cal[v] = (calibrate(lv, T), calibrate(lt, T))
            print(d.name, v, "calibrated val NLL", round(float(-cal[v][0][np.arange(len(yv)), yv].mean()), 4), flush=True)
        res[d.name] = (cal, auto)
    def score(lv, lt):
        a = lambda l, y: float((l.argmax(1) == y).mean())
        pub = float((lt.argmax(1) == yt)[usage == "Public"].mean()); pri = float((lt.argmax(1) == yt)[usage == "Private"].mean())
        return a(lv, yv), pub, pri
    def combo(names, views):
        lv = np.mean([res[n][0][v][0] for n in names for v in views], 0)
        lt = np.mean([res[n][0][v][1] for n in names for v in views], 0)
        return score(lv, lt)
    names = list(res)
    rows = []
    for n in names:
        for v in VIEWS:
            rows.append((f"{n} {v}", *combo([n], [v])))
        rows.append((f"{n} full+s128", *combo([n], ["full", "s128"])))
        rows.append((f"{n} full+s128+s200", *combo([n], ["full", "s128", "s200"])))
        rows.append((f"{n} all", *combo([n], list(VIEWS))))
    for vs in (["full"], ["s128"], ["s400"], ["full", "s128"], ["full", "s128", "s200"], list(VIEWS)):
        rows.append((f"vote {'+'.join(vs)}", *combo(names, vs)))
    print(runs, "members:", names, "recorded modes:", {n: res[n][1] for n in names})
    for r in rows:
        print(f"{r[0]:32s} val {r[1]:.4f}  test {r[2]:.4f} / {r[3]:.4f}  mean {(r[2]+r[3])/2:.4f}")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
