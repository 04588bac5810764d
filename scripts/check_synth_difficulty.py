"""Is the synthetic competition a real speaker-ID problem? Baselines on a generated data dir.

Logistic regression on each utterance's mean log-mel must stay well below 90% (the channel
hides the speaker in the long-term spectrum); mean+std and a frame MLP should do better.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def utterance_stats(store) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance mean and std of the log-mel frames: (N, D) each."""
    n = store.n_train
    mean = np.zeros((n, store.n_mels), np.float32)
    std = np.zeros_like(mean)
    for i in range(n):
        x = np.asarray(store.utterance(i), dtype=np.float32)     # (L, D)
        mean[i], std[i] = x.mean(0), x.std(0)
    return mean, std


def logistic_accuracy(x: np.ndarray, y: np.ndarray, split) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x[split.train])
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(scaler.transform(x[split.train]), y[split.train])
    return float((clf.predict(scaler.transform(x[split.val])) == y[split.val]).mean())


def frame_mlp_accuracy(store, split, steps: int, segment_len: int = 200, seed: int = 0) -> float:
    """A small conv+mean-pool model on random crops: a 'much better than chance' check."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    d, k = store.n_mels, len(store.speakers)
    model = nn.Sequential(nn.Conv1d(d, 256, 5, padding=2), nn.ReLU(), nn.BatchNorm1d(256),
                          nn.Conv1d(256, 256, 3, padding=1), nn.ReLU(), nn.BatchNorm1d(256))
    head = nn.Linear(512, k)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), 2e-3)

    def embed(x):                                            # (B, T, D) -> (B, 512)
        h = model(x.transpose(1, 2))                         # (B, C, T)
        return torch.cat([h.mean(2), h.std(2)], 1)

    labels = torch.from_numpy(store.labels)
    for _ in range(steps):
        idx = rng.choice(split.train, 64)
        x, _ = store.crop_batch(idx, segment_len, rng)
        loss = nn.functional.cross_entropy(head(embed(x)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in split.val:
            x = torch.from_numpy(np.array(store.utterance(i), np.float32))[None]   # (1, L, D)
            correct += int(head(embed(x)).argmax(1).item() == store.labels[i])
    return correct / len(split.val)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--mlp-steps", type=int, default=0, help="also train a small frame model")
    p.add_argument("--dtype", default="float32", choices=["float16", "float32"], help="store dtype")
    args = p.parse_args(argv)

    from kit.data import FeatureStore, make_split

    store = FeatureStore.open(args.data_dir, dtype=args.dtype, progress=False)
    y = store.labels[:store.n_train]
    split = make_split(y, 0.1, seed=0)
    t = time.time()
    mean, std = utterance_stats(store)
    k = len(store.speakers)
    print(f"{args.data_dir}: {k} speakers, {len(split.train)} train / {len(split.val)} val, chance {1 / k:.1%}")
    print(f"LR on mean log-mel      {logistic_accuracy(mean, y, split):.1%}")
    print(f"LR on mean+std log-mel  {logistic_accuracy(np.hstack([mean, std]), y, split):.1%}")
    if args.mlp_steps:
        print(f"frame conv model ({args.mlp_steps} steps)  {frame_mlp_accuracy(store, split, args.mlp_steps):.1%}")
    print(f"({time.time() - t:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
