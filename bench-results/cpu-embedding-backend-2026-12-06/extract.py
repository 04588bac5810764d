import sys, time, json, numpy as np, torch
from pathlib import Path
from kit.data import FeatureStore
from kit.split import load_split
from kit.train.results import load_model
from kit.infer import full_windows
from kit.windows import length_batches
torch.set_num_threads(2)
run = Path(sys.argv[1]); which = sys.argv[2] if len(sys.argv) > 2 else "last"
model, cfg = load_model(run, which); model.eval()
store = FeatureStore.open(cfg.data.data_dir, dtype=cfg.data.store_dtype, progress=False)
split = load_split(run / "split.json", store)
out = {}
for part, index in [("val", split.val), ("test", store.test_index), ("train", split.train)]:
    t = time.perf_counter()
    index = np.asarray(index, dtype=np.int64)
    lengths = store.lengths[index]
    utt, start, valid = full_windows(lengths)
    embs = np.zeros((len(index), model.pooling.out_dim), np.float32)
    with torch.inference_mode():
        for b in length_batches(valid, 256 * 400, 256 * 400, 256):
            x, l = store.gather_windows(index[utt[b]], start[b], valid[b])
            embs[utt[b]] = model.embed(x, l).float().numpy()
    out[part] = embs
    out[part + "_labels"] = store.labels[index] if part != "test" else np.zeros(len(index), np.int64) - 1
    print(part, len(index), embs.shape, f"{time.perf_counter()-t:.1f}s", flush=True)
np.savez(f"/tmp/emb/{run.name}.npz", **out)
