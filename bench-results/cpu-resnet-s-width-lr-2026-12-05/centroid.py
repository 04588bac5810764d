"""Closed-set ID two ways from one member: its head, and cosine to class-mean train embeddings."""
import json, sys, time
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
from kit.data import FeatureStore
from kit.split import load_split
from kit.train.results import load_model
from kit.windows import length_batches
from kit.infer import full_windows
run = sys.argv[1]
model, cfg = load_model(run, "last"); model.eval()
store = FeatureStore.open(cfg.data.data_dir, cfg.data.store_dtype, progress=False)
split = load_split(f"{run}/split.json", store)

def embed(index):
    index = np.asarray(index, dtype=np.int64)
    utt, start, valid = full_windows(store.lengths[index])
    sums = np.zeros((len(index), 0)); out = None
    cnt = np.bincount(utt, minlength=len(index)).astype(np.float64)
    with torch.inference_mode():
        for b in length_batches(valid, 256 * 256, 16 * 256 * 256, 256):
            x, l = store.gather_windows(index[utt[b]], start[b], valid[b])
            e = model.embed(x, l).float().double().numpy()
            if out is None: out = np.zeros((len(index), e.shape[1]))
            np.add.at(out, utt[b], e)
    return out / cnt[:, None]

t = time.time()
tr, va = split.train, split.val
Etr, Eva = embed(tr), embed(va)
print(f"embedded {len(tr)}+{len(va)} in {time.time()-t:.0f}s")
ytr, yva = store.labels[tr], store.labels[va]
C = cfg.model.n_classes
with torch.inference_mode():
    ch = model.head(torch.from_numpy(Eva).float()).double().numpy()
    ch = ch - ch.max(1, keepdims=True); ch = ch - np.log(np.exp(ch).sum(1, keepdims=True))
def nrm(a): return a / np.linalg.norm(a, axis=1, keepdims=True)
cent = np.zeros((C, Etr.shape[1])); np.add.at(cent, ytr, nrm(Etr)); cent = nrm(cent)
cc = nrm(Eva) @ cent.T
acc = lambda s: (s.argmax(1) == yva).mean()
print("head", acc(ch), "centroid", acc(cc))
for T in (0.02, 0.05, 0.1):
    lc = cc / T; lc = lc - lc.max(1, keepdims=True); lc = lc - np.log(np.exp(lc).sum(1, keepdims=True))
    nll = lambda l: -l[np.arange(len(yva)), yva].mean()
    print("T", T, "nll head", nll(ch), "cent", nll(lc), "mix acc", acc(ch + lc), acc(0.5*ch+lc), acc(ch+0.5*lc))
# standardised embeddings (mean-sub) centroid
mu = Etr.mean(0); cent2 = np.zeros_like(cent); np.add.at(cent2, ytr, nrm(Etr - mu)); cent2 = nrm(cent2)
print("centroid mean-sub", acc(nrm(Eva - mu) @ cent2.T))
# centroid from train+val? (leave-one-out impossible here) ; also prototype = head weight + centroid
np.savez("/tmp/emb.npz", Etr=Etr, Eva=Eva, ytr=ytr, yva=yva, ch=ch)
