import json, csv, numpy as np
D = "/tmp/tmp.MYM67a8XpI/kit/runs-bench/20261205-192914/boss"
ids = json.load(open(f"{D}/resnet-s/ids.json"))
speakers = json.load(open("/work/main/data/bench-tts-close/mapping.json"))["speaker2id"]
key = {r["Id"]: (r["Category"], r["Usage"]) for r in csv.DictReader(open("/work/main/data/bench-tts-close_answers.csv"))}
yt = np.array([speakers[key[i][0]] for i in ids["test"]]); pub = np.array([key[i][1] == "Public" for i in ids["test"]])
yv = np.array(ids["val_labels"])
E = {m: np.load(f"/tmp/emb/{m}.npz") for m in ["resnet-s", "transformer-s"]}
P = {m: (np.load(f"{D}/{m}/val_probs.npy"), np.load(f"{D}/{m}/test_probs.npy")) for m in E}
def acc(p, y): return (p.argmax(1) == y).mean()
def rep(name, pv, pt): print(f"{name:45s} val {acc(pv,yv):.4f} pub {acc(pt[pub],yt[pub]):.4f} priv {acc(pt[~pub],yt[~pub]):.4f}")
# base: log-mean vote
def vote(split): return np.exp(sum(np.log(P[m][split] + 1e-9) for m in P) / 2)
pv, pt = vote(0), vote(1)
rep("geo-mean vote", pv, pt)
for m in P: rep(m, *P[m])
def norm(x, mu): x = x - mu; return x / np.linalg.norm(x, axis=1, keepdims=True)
def smooth(p, z, k, a, tau, iters=1):
    S = z @ z.T; np.fill_diagonal(S, -np.inf)
    idx = np.argsort(-S, 1)[:, :k]; s = np.take_along_axis(S, idx, 1)
    w = np.exp((s - s.max(1, keepdims=True)) / tau); w /= w.sum(1, keepdims=True)
    q = p.copy()
    for _ in range(iters):
        q = (1 - a) * p + a * np.einsum("ik,ikc->ic", w, q[idx])
    return q
feats = {}
mu = E["resnet-s"]["train"].mean(0)
feats["emb-resnet"] = (norm(E["resnet-s"]["val"], mu), norm(E["resnet-s"]["test"], mu))
def post(p): l = np.log(p + 1e-6); l = l - l.mean(1, keepdims=True); return l / np.linalg.norm(l, axis=1, keepdims=True)
feats["logpost"] = (post(pv), post(pt))
feats["sqrtpost"] = (np.sqrt(pv) / np.linalg.norm(np.sqrt(pv), axis=1, keepdims=True), np.sqrt(pt) / np.linalg.norm(np.sqrt(pt), axis=1, keepdims=True))
for f, (zv, zt) in feats.items():
    for k in (3, 5, 10):
        for a in (0.3, 0.5, 0.7):
            for it in (1, 3):
                rep(f"{f} k{k} a{a} it{it}", smooth(pv, zv, k, a, 0.05, it), smooth(pt, zt, k, a, 0.05, it))
