"""The course's HW4 sample, as its notebook runs it: the baseline kit is measured against.

Its model (`CourseClassifier`), its data pipeline (one torch.load per item, random crop, pad
with -20), its loop (AdamW 1e-3, 1,000 warm-up steps into a cosine over 70,000 steps, best
checkpoint on a 10% validation split every 2,000 steps) and its inference (each whole test
utterance alone). `train_for(minutes)` trains it for a wall-clock allowance, so kit can be
compared with it at equal time.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

# The notebook's settings.
SEGMENT_LEN, BATCH_SIZE, LR, WARMUP, TOTAL_STEPS, VALID_STEPS, VALID_RATIO = 128, 32, 1e-3, 1000, 70000, 2000, 0.1


def course_classifier(n_classes: int, n_mels: int = 40, d_model: int = 80, dropout: float = 0.1):
    """The sample's Classifier: Linear prenet, one TransformerEncoderLayer (2 heads, FFN 256),
    mean over all frames (padding included, as in the notebook), Linear-ReLU-Linear."""
    import torch
    from torch import nn

    class CourseClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.prenet = nn.Linear(n_mels, d_model)
            self.encoder_layer = nn.TransformerEncoderLayer(d_model=d_model, dim_feedforward=256, nhead=2,
                                                            dropout=dropout)
            self.pred_layer = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, n_classes))

        def forward(self, mels: torch.Tensor) -> torch.Tensor:          # (B, T, n_mels) -> (B, C)
            out = self.prenet(mels).permute(1, 0, 2)                      # (T, B, D)
            out = self.encoder_layer(out).transpose(0, 1)                 # (B, T, D)
            return self.pred_layer(out.mean(dim=1))

    return CourseClassifier()


def _items(data_dir: Path):
    from kit.data import read_layout

    layout = read_layout(data_dir)
    s2i = layout.speaker2id
    return [(str(data_dir / u.path), s2i[u.speaker]) for u in layout.train], layout


def _collate(batch):
    import torch
    from torch.nn.utils.rnn import pad_sequence

    mels, speakers = zip(*batch)
    return pad_sequence(mels, batch_first=True, padding_value=-20), torch.tensor(speakers).long()


def _loaders(items: list, seed: int, workers: int):
    import torch
    from torch.utils.data import DataLoader, Dataset

    class CourseDataset(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            path, speaker = items[i]
            mel = torch.load(path, weights_only=True)
            if len(mel) > SEGMENT_LEN:
                start = random.randint(0, len(mel) - SEGMENT_LEN)
                mel = mel[start:start + SEGMENT_LEN]
            return torch.FloatTensor(mel), speaker

    data = CourseDataset()
    n_train = int((1 - VALID_RATIO) * len(data))
    train, valid = torch.utils.data.random_split(data, [n_train, len(data) - n_train],
                                                 generator=torch.Generator().manual_seed(seed))
    kw = dict(batch_size=BATCH_SIZE, num_workers=workers, collate_fn=_collate, persistent_workers=workers > 0)
    return DataLoader(train, shuffle=True, drop_last=True, **kw), DataLoader(valid, **kw)


def _lr_at(step: int) -> float:
    """get_cosine_schedule_with_warmup as the notebook defines it."""
    if step < WARMUP:
        return LR * step / max(1, WARMUP)
    progress = (step - WARMUP) / max(1, TOTAL_STEPS - WARMUP)
    return LR * max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * 0.5 * progress)))


def _valid_acc(model, loader) -> float:
    import torch

    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            count += len(y)
    model.train()
    return correct / max(count, 1)


def train_for(data_dir: str | Path, minutes: float, seed: int = 0, threads: int = 2, workers: int = 1,
              log=None) -> dict:
    """Train the course sample for a wall-clock allowance, as its notebook would (its schedule is
    set for 70,000 steps, so a short run stops early in it). Returns the best model by validation
    accuracy (checked every 2,000 steps and when time is up) and what happened."""
    import copy

    import torch
    import torch.nn.functional as F

    data_dir = Path(data_dir)
    torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    items, layout = _items(data_dir)
    model = course_classifier(len(layout.speakers), layout.n_mels)
    train_loader, valid_loader = _loaders(items, seed, workers)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    began, step, best_acc, best_state = time.time(), 0, -1.0, None
    deadline = began + minutes * 60
    model.train()
    done = False
    while not done:
        for x, y in train_loader:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            step += 1
            time_up = time.time() >= deadline
            if step % VALID_STEPS == 0 or time_up or step >= TOTAL_STEPS:
                acc = _valid_acc(model, valid_loader)
                if log:
                    log(f"course sample: step {step}, valid acc {acc:.4f}, {(time.time() - began) / 60:.1f} min")
                if acc > best_acc:
                    best_acc, best_state = acc, copy.deepcopy(model.state_dict())
            if time_up or step >= TOTAL_STEPS:
                done = True
                break
    model.load_state_dict(best_state)
    return {"model": model.eval(), "steps": step, "valid_acc": best_acc, "seconds": time.time() - began,
            "layout": layout}


def predict_test(model, layout) -> list[str]:
    """The notebook's inference: each whole test utterance alone; speaker id strings."""
    import torch

    id2speaker = layout.speakers
    out = []
    with torch.no_grad():
        for u in layout.test:
            mel = torch.load(Path(layout.data_dir) / u.path, weights_only=True)[None]    # (1, L, D)
            out.append(id2speaker[int(model(mel).argmax(1))])
    return out


def write_submission(model, layout, path: str | Path) -> Path:
    """The sample's CSV (Id = test feature_path, Category = speaker id)."""
    import pandas as pd

    from kit.fsio import write_csv

    write_csv(Path(path), pd.DataFrame({"Id": [u.path for u in layout.test], "Category": predict_test(model, layout)}))
    return Path(path)

