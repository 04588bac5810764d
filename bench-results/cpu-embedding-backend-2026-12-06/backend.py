import json, csv, numpy as np, warnings
from sklearn.linear_model import LogisticRegression
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
warnings.filterwarnings("ignore")
D = "/tmp/tmp.MYM67a8XpI/kit/runs-bench/20261205-192914/boss"
ids = json.load(open(f"{D}/resnet-s/ids.json"))
speakers = json.load(open("/work/main/data/bench-tts-close/mapping.json"))["speaker2id"]
key = {r["Id"]: (r["Category"], r["Usage"]) for r in csv.DictReader(open("/work/main/data/bench-tts-close_answers.csv"))}
yt = np.array([speakers[key[i][0]] for i in ids["test"]]); pub = np.array([key[i][1] == "Public" for i in ids["test"]])
E = {m: np.load(f"/tmp/emb/{m}.npz") for m in ["resnet-s", "transformer-s"]}
yv = E["resnet-s"]["val_labels"]; ytr = E["resnet-s"]["train_labels"]
assert (yv == np.array(ids["val_labels"])).all()
def acc(p, y): return (p.argmax(1) == y).mean()
def report(name, pv, pt):
    print(f"{name:40s} val {acc(pv, yv):.4f}  test pub {acc(pt[pub], yt[pub]):.4f} priv {acc(pt[~pub], yt[~pub]):.4f}")
for m in E:
    report(f"{m} head (sliding, as voted)", np.load(f"{D}/{m}/val_probs.npy"), np.load(f"{D}/{m}/test_probs.npy"))
def norm(x, mu): x = x - mu; return x / np.linalg.norm(x, axis=1, keepdims=True)
def feats(ms):
    tr = np.hstack([E[m]["train"] for m in ms]); mu = tr.mean(0)
    return [norm(np.hstack([E[m][p] for m in ms]), mu) for p in ("train", "val", "test")]
for ms in (["resnet-s"], ["transformer-s"], ["resnet-s", "transformer-s"]):
    tr, va, te = feats(ms)
    C = np.stack([tr[ytr == k].mean(0) for k in range(200)]); C /= np.linalg.norm(C, axis=1, keepdims=True)
    report(f"{'+'.join(ms)} cosine centroid", va @ C.T, te @ C.T)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.1).fit(tr, ytr)
    report(f"{'+'.join(ms)} LDA shrink .1", lda.predict_proba(va), lda.predict_proba(te))
    for c in (1.0, 10.0):
        lr = LogisticRegression(C=c, max_iter=300).fit(tr, ytr)
        report(f"{'+'.join(ms)} LR C={c}", lr.predict_proba(va), lr.predict_proba(te))
