"""The course's HW4 sample, as its notebook runs it: the baseline kit is measured against.

Its model (`CourseClassifier`), its data pipeline (one torch.load per item, random crop, pad
with -20), its loop (AdamW 1e-3, 1,000 warm-up steps into a cosine over 70,000 steps, best
checkpoint on a 10% validation split every 2,000 steps) and its inference (each whole test
utterance alone). `train_for(minutes)` trains it for a wall-clock allowance, so kit can be
compared with it at equal time (`kit bench --accuracy`); `kit bench` times kit's models fed and
predicted the sample's way (`course_loader`, `course_predict`).
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from kit.fsio import write_csv
from kit.layout import Layout, read_layout

# The notebook's settings.
SEGMENT_LEN, BATCH_SIZE, LR, WARMUP, TOTAL_STEPS, VALID_STEPS, VALID_RATIO = 128, 32, 1e-3, 1000, 70000, 2000, 0.1


def course_classifier(n_classes: int, n_mels: int = 40, d_model: int = 80, dropout: float = 0.1):
    """The sample's Classifier: Linear prenet, one TransformerEncoderLayer (2 heads, FFN 256),
    mean over all frames (padding included, as in the notebook), Linear-ReLU-Linear."""
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


# ---------------------------------------------------------------- its data pipeline
def course_dataset(data_dir: str | Path, segment_len: int = SEGMENT_LEN):
    """The sample's Dataset over the training speakers: one torch.load per item, a random crop of
    `segment_len` frames (a shorter utterance whole), labels from mapping.json. Has `.layout`."""
    data_dir = Path(data_dir)
    layout = read_layout(data_dir)
    items = [(str(data_dir / u.path), k) for u, k in zip(layout.train, layout.train_labels, strict=True)]

    class CourseDataset(Dataset):
        layout: Layout

        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            path, speaker = items[i]
            mel = torch.load(path, weights_only=True)
            if len(mel) > segment_len:
                start = random.randint(0, len(mel) - segment_len)
                mel = mel[start:start + segment_len]
            return torch.FloatTensor(mel), speaker

    data = CourseDataset()
    data.layout = layout
    return data


def course_collate(batch):
    """The sample's collate: pad with -20 to the longest item. Returns x (B, T, D), lengths (B,)
    (kit's models take them; the sample's classifier does not) and speakers (B,)."""
    mels, speakers = zip(*batch, strict=True)
    lengths = torch.tensor([len(m) for m in mels])
    return pad_sequence(mels, batch_first=True, padding_value=-20), lengths, torch.tensor(speakers).long()


def course_loader(data_dir, batch_size: int = BATCH_SIZE, segment_len: int = SEGMENT_LEN, workers: int = 0):
    """Shuffled batches of random crops over all training utterances, as the sample feeds them."""
    return DataLoader(course_dataset(data_dir, segment_len), batch_size=batch_size, shuffle=True,
                      num_workers=workers, collate_fn=course_collate, drop_last=True,
                      persistent_workers=workers > 0)


def course_predict(model, data_dir, paths: list[str], with_lengths: bool = True) -> list[int]:
    """The sample's inference: a DataLoader of batch size 1 that torch.loads each file, one whole
    utterance per forward pass under no_grad; the predicted class of each. with_lengths: call
    model(mel, lengths) as kit's models want, else model(mel) as the sample's classifier."""
    files = [str(Path(data_dir) / p) for p in paths]
    # The list serves as a map-style dataset (DataLoader only indexes it and takes its len); the stub wants a Dataset.
    loader: DataLoader = DataLoader(files, batch_size=1, shuffle=False,  # type: ignore[arg-type]
                                    collate_fn=lambda b: torch.load(b[0], weights_only=True)[None])   # (1, L, D)
    preds = []
    device = next(model.parameters()).device                # the sample moves each batch to its device
    with torch.no_grad():
        for mel in loader:
            mel = mel.to(device)
            logits = model(mel, torch.tensor([mel.shape[1]], device=device)) if with_lengths else model(mel)
            preds.append(int(logits.argmax(1)))
    return preds


# ---------------------------------------------------------------- its training loop
def _loaders(data, seed: int, workers: int):
    """The notebook's 90/10 random split of the training utterances into train and valid loaders."""
    n_train = int((1 - VALID_RATIO) * len(data))
    train, valid = torch.utils.data.random_split(data, [n_train, len(data) - n_train],
                                                 generator=torch.Generator().manual_seed(seed))
    kw: dict[str, Any] = dict(batch_size=BATCH_SIZE, num_workers=workers, collate_fn=course_collate,
                              persistent_workers=workers > 0)
    return DataLoader(train, shuffle=True, drop_last=True, **kw), DataLoader(valid, **kw)


def _lr_at(step: int) -> float:
    """get_cosine_schedule_with_warmup as the notebook defines it."""
    if step < WARMUP:
        return LR * step / max(1, WARMUP)
    progress = (step - WARMUP) / max(1, TOTAL_STEPS - WARMUP)
    return LR * max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * 0.5 * progress)))


def _valid_acc(model, loader, device) -> float:
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, _, y in loader:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            count += len(y)
    model.train()
    return correct / max(count, 1)


def train_for(data_dir: str | Path, minutes: float, seed: int = 0, threads: int = 2, workers: int | None = None,
              log=None) -> dict:
    """Train the course sample for a wall-clock allowance, as its notebook would (its schedule is
    set for 70,000 steps, so a short run stops early in it), on the GPU when there is one, as the
    notebook does, with its 8 loader workers there (workers=None; on a CPU 1, leaving the cores to
    training). Returns the best model by validation accuracy (checked every 2,000 steps and when time
    is up) and what happened."""
    data_dir = Path(data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 1
    torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    data = course_dataset(data_dir)
    layout = data.layout
    model = course_classifier(len(layout.speakers), layout.n_mels).to(device)
    train_loader, valid_loader = _loaders(data, seed, workers)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    began, step, best_acc, best_state = time.time(), 0, -1.0, None
    deadline = began + minutes * 60
    model.train()
    done = False
    while not done:
        for x, _, y in train_loader:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step)
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
            opt.zero_grad()
            step += 1
            time_up = time.time() >= deadline
            if step % VALID_STEPS == 0 or time_up or step >= TOTAL_STEPS:
                acc = _valid_acc(model, valid_loader, device)
                if log:
                    log(f"course sample: step {step}, valid acc {acc:.4f}, {(time.time() - began) / 60:.1f} min")
                if acc > best_acc:
                    best_acc, best_state = acc, copy.deepcopy(model.state_dict())
            if time_up or step >= TOTAL_STEPS:
                done = True
                break
    model.load_state_dict(best_state)
    return {"model": model.eval(), "steps": step, "valid_acc": best_acc,
            "seconds": time.time() - began, "layout": layout}


def predict_test(model, layout) -> list[str]:
    """The notebook's inference: each whole test utterance alone; speaker id strings."""
    preds = course_predict(model, layout.data_dir, [u.path for u in layout.test], with_lengths=False)
    return [layout.speakers[k] for k in preds]


def write_submission(model, layout, path: str | Path) -> Path:
    """The sample's CSV (Id = test feature_path, Category = speaker id)."""
    write_csv(Path(path), pd.DataFrame({"Id": [u.path for u in layout.test], "Category": predict_test(model, layout)}))
    return Path(path)

