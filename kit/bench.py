"""`kit bench`: kit's fast paths timed against the course sample's way of doing the same work.

Every row is a ratio measured in the same run (same machine, same data, same model), so the
numbers say what kit buys on the user's own hardware.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kit.errors import KitError
from kit.fsio import write_json, write_text


# ---------------------------------------------------------------- the course sample's pipeline
def course_dataset(data_dir: str | Path, segment_len: int = 128):
    """The HW4 sample's Dataset: one torch.load per item, a random crop, labels from mapping."""
    import random

    import torch
    from torch.utils.data import Dataset

    from kit.data import read_layout

    layout = read_layout(data_dir)
    s2i = layout.speaker2id
    items = [(str(Path(data_dir) / u.path), s2i[u.speaker]) for u in layout.train]

    class CourseDataset(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            path, speaker = items[i]
            mel = torch.load(path, weights_only=True)
            if len(mel) > segment_len:
                start = random.randint(0, len(mel) - segment_len)
                mel = torch.FloatTensor(mel[start:start + segment_len])
            else:
                mel = torch.FloatTensor(mel)
            return mel, speaker

    return CourseDataset()


def course_collate(batch):
    """The sample's collate: pad with -20 to the longest item in the batch."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    mels, speakers = zip(*batch)
    lengths = torch.tensor([len(m) for m in mels])
    return pad_sequence(mels, batch_first=True, padding_value=-20), lengths, torch.tensor(speakers).long()


def course_loader(data_dir, batch_size: int, segment_len: int, workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(course_dataset(data_dir, segment_len), batch_size=batch_size, shuffle=True,
                      num_workers=workers, collate_fn=course_collate, drop_last=True,
                      persistent_workers=workers > 0)


def _cycle(loader):
    while True:
        yield from loader


# ---------------------------------------------------------------- timing helpers
def _timed(fn, repeats: int = 1) -> float:
    """Best of `repeats` wall-clock runs of fn() in seconds (the least disturbed one)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _row(name: str, unit: str, baseline: float, kit: float, target: float | None, higher_is_better=True,
         note: str = "") -> dict:
    ratio = (kit / baseline if higher_is_better else baseline / kit) if baseline and kit else float("nan")
    return {"name": name, "unit": unit, "baseline": baseline, "kit": kit, "ratio": ratio, "target": target,
            "met": (ratio >= target) if target else None, "note": note}


def _fixed_budget(cfg, steps: int, eval_every: int | None = None):
    """Make cfg a plain run of exactly `steps` steps: no epochs, early stop or averaging."""
    cfg.train.max_steps, cfg.train.max_epochs, cfg.train.eval_every = steps, 0, eval_every or steps
    cfg.train.patience, cfg.train.average_last = 0, 0
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, steps)
    return cfg


# ---------------------------------------------------------------- 1. data feeding
def bench_feeding(data_dir, store, batches: int = 100, batch_size: int = 32, segment_len: int = 128,
                  workers: int = 0) -> dict:
    """Batches/s of random crops: FeatureStore.crop_batch vs the per-file Dataset + DataLoader."""
    loader = _cycle(course_loader(data_dir, batch_size, segment_len, workers))
    next(loader)                                            # start workers outside the clock

    def baseline():
        for _ in range(batches):
            next(loader)

    rng = np.random.default_rng(0)
    train = store.train_index

    def fast():
        for _ in range(batches):
            store.crop_batch(train[rng.integers(0, len(train), batch_size)], segment_len, rng)

    t_base, t_kit = _timed(baseline), _timed(fast, 3)
    return _row("data feeding (batches/s, 32 x 128-frame crops)", "batches/s", batches / t_base,
                batches / t_kit, 20.0, note=f"workers={workers}")


# ---------------------------------------------------------------- 2. training throughput
def strong_config(data_dir, batch_size: int, recipe: str | Path = "recipes/strong.toml"):
    """The strong tier's Conformer as users train it on this device: the full budget's shape on a
    GPU, the quick budget's (64 wide, 2 layers) on a CPU. Default thread count for both loops."""
    import torch

    from kit.recipe import load_recipe, member_config

    r = load_recipe(recipe)
    cfg = member_config(r, r.members[0][0], "full" if torch.cuda.is_available() else "quick", data_dir)
    cfg.train.batch_size = batch_size
    cfg.train.cpu_threads = 0
    return cfg


def bench_training(data_dir, store, cfg, steps: int, workers: int = 0) -> dict:
    """Utterances/s: kit's train() vs a course-style loop on the same model and batch size."""
    import torch
    import torch.nn.functional as F

    from kit.models import build_model
    from kit.train import train

    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    bs, seg = cfg.train.batch_size, cfg.data.segment_len
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def course_loop():
        # The sample's loop: per-file DataLoader, fp32, plain AdamW, no flush-denormal guard.
        torch.manual_seed(0)
        model = build_model(cfg.model).to(device)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
        loader = _cycle(course_loader(data_dir, bs, seg, workers))
        for _ in range(steps):
            x, lengths, y = next(loader)
            x, lengths, y = x.to(device), lengths.to(device), y.to(device)
            loss = F.cross_entropy(model(x, lengths, y), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()

    saved_denormal = torch.set_flush_denormal(False)
    t_base = _timed(course_loop)
    torch.set_flush_denormal(saved_denormal)

    with tempfile.TemporaryDirectory() as tmp:
        _fixed_budget(cfg, steps)
        summary = train(cfg, Path(tmp) / "run", progress=False, store=store)
    t_kit = summary["train_seconds"]
    return _row(f"training ({cfg.model.encoder}, d_model {cfg.model.d_model}, {cfg.model.n_layers} layers, "
                f"batch {bs}, {seg} frames)", "utterances/s", steps * bs / t_base, steps * bs / t_kit,
                5.0 if device.type == "cuda" else 1.5,
                note=f"{steps} steps; kit precision {summary.get('mixed_precision')}")


def _zoo_child(data_dir: str, steps: int, batch_size: int, seed: int) -> None:
    """Run in a subprocess: one zoo member as `kit recipe run` trains it on a CPU (1 thread)."""
    from kit.data import FeatureStore
    from kit.train import train

    store = FeatureStore.open(data_dir, "float16", progress=False)
    cfg = strong_config(data_dir, batch_size)
    cfg.train.cpu_threads, cfg.train.seed = 1, seed
    _fixed_budget(cfg, steps)
    with tempfile.TemporaryDirectory() as tmp:
        s = train(cfg, Path(tmp) / "run", progress=False, store=store)
    print(json.dumps({"steps": s["train_steps"], "window": s["loop_window"]}))


def bench_zoo(data_dir, baseline_rate: float, steps: int, batch_size: int, members: int) -> dict:
    """Utterances/s training a zoo on a CPU: kit trains `members` at once, one thread each (as
    `kit recipe run` does); the course loop trains them one after another (its rate is per model).
    Measured from the first member's first step to the last member's last step."""
    code = "from kit.bench import _zoo_child; _zoo_child({!r}, {}, {}, {})"
    procs = [subprocess.Popen([sys.executable, "-c", code.format(str(data_dir), steps, batch_size, seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(members)]
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise KitError(f"zoo benchmark member failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    span = max(r["window"][1] for r in results) - min(r["window"][0] for r in results)
    rate = sum(r["steps"] for r in results) * batch_size / span
    return _row(f"zoo training ({members} members at once, 1 thread each, vs one after another)",
                "utterances/s", baseline_rate, rate, 1.5, note=f"{steps} steps per member")


def bench_long_run(data_dir, store, cfg, steps: int, window: int) -> dict:
    """Steps/s in the first and last `window` steps of a long run: the course loop (no
    flush-denormal guard) vs kit's train(). A slowdown late in a run (CPU denormals) shows as a
    last/first speed ratio well below 1."""
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from kit.models import build_model
    from kit.train import train

    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    bs, seg = cfg.train.batch_size, cfg.data.segment_len
    saved = torch.set_flush_denormal(False)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loader = _cycle(course_loader(data_dir, bs, seg, 0))
    marks = [time.perf_counter()]
    for step in range(1, steps + 1):
        x, lengths, y = next(loader)
        F.cross_entropy(model(x, lengths, y), y).backward()
        opt.step()
        opt.zero_grad()
        if step % window == 0:
            marks.append(time.perf_counter())
    torch.set_flush_denormal(saved)
    course = [window / (b - a) for a, b in zip(marks, marks[1:])]

    with tempfile.TemporaryDirectory() as tmp:
        _fixed_budget(cfg, steps, eval_every=window)
        train(cfg, Path(tmp) / "run", progress=False, store=store)
        spent = pd.read_csv(Path(tmp) / "run" / "metrics.csv")["step_seconds"].to_numpy()
    kit = [float(window / d) for d in np.diff(np.concatenate([[0.0], spent]))]
    row = _row(f"long run ({steps} steps): last/first {window}-step window speed", "x", course[-1] / course[0],
               kit[-1] / kit[0], None,
               note=f"steps/s per window, course {[round(c, 1) for c in course]}, kit {[round(k, 1) for k in kit]}")
    row["ratio"] = row["kit"] / row["baseline"]
    return row


# ---------------------------------------------------------------- 3. prediction
def course_predict(model, data_dir, index_paths: list[str]):
    """The course sample's inference: a DataLoader of batch size 1 that torch.loads each test
    file, one whole utterance per forward pass under no_grad."""
    import torch
    from torch.utils.data import DataLoader

    files = [str(Path(data_dir) / p) for p in index_paths]
    loader = DataLoader(files, batch_size=1, shuffle=False,
                        collate_fn=lambda b: torch.load(b[0], weights_only=True)[None])   # (1, L, D)
    preds = []
    with torch.no_grad():
        for mel in loader:
            lengths = torch.tensor([mel.shape[1]])
            preds.append(int(model(mel, lengths).argmax(1)))
    return preds


def bench_prediction(data_dir, store, cfg, limit: int | None = None) -> list[dict]:
    """Utterances/s over the test set: batched sliding windows (the run's window/hop, and
    non-overlapping windows) vs the course's one utterance at a time."""
    import torch

    from kit.infer import predict_index
    from kit.models import build_model

    torch.manual_seed(0)
    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    model = build_model(cfg.model).eval()
    index = store.test_index[:limit] if limit else store.test_index
    paths = [store.paths[i] for i in index]
    inf = cfg.infer
    t_base = _timed(lambda: course_predict(model, data_dir, paths))
    rows = []
    for hop in (inf.hop, inf.window):
        t_kit = _timed(lambda: predict_index(model, store, index, mode="sliding", window=inf.window, hop=hop,
                                             batch_size=inf.batch_size, n_classes=cfg.model.n_classes), 2)
        rows.append(_row(f"prediction ({len(index)} test utterances, window {inf.window}/hop {hop})",
                         "utterances/s", len(index) / t_base, len(index) / t_kit, 10.0,
                         note="baseline: DataLoader batch 1, torch.load per file, whole utterance"))
    return rows


# ---------------------------------------------------------------- 4. memory
def _train_child(data_dir: str, steps: int, batch_size: int) -> None:
    """Run in a subprocess: train the strong model briefly and report peak RSS as json."""
    import torch

    from kit.data import FeatureStore

    store = FeatureStore.open(data_dir, "float16", progress=False)
    cfg = strong_config(data_dir, batch_size)
    _fixed_budget(cfg, steps)
    from kit.models import build_model, count_params
    from kit.train import train

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False, store=store)
    model_bytes = count_params(build_model(cfg.model)) * 4
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_rss": peak, "store_bytes": store.nbytes, "model_bytes": model_bytes,
                      "torch": torch.__version__}))


def bench_memory(data_dir, steps: int, batch_size: int) -> dict:
    """Peak RSS of a training process vs the float16 store plus the model (fp32 weights)."""
    code = (f"from kit.bench import _train_child; _train_child({str(data_dir)!r}, {steps}, {batch_size})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise KitError(f"memory benchmark failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    budget = r["store_bytes"] + r["model_bytes"]
    row = _row("memory (peak RSS training, float16 store)", "MiB", 1.5 * budget / 2**20, r["peak_rss"] / 2**20,
               1.0, higher_is_better=False,
               note=f"store {r['store_bytes'] / 2**20:.0f} MiB + model {r['model_bytes'] / 2**20:.1f} MiB; "
                    "ratio = 1.5x(store+model) / peak RSS, >= 1 meets the target")
    row["baseline_label"] = "1.5 x (store + model)"
    if r["store_bytes"] < 2**30:     # the torch runtime alone is ~0.9 GiB RSS: judge on --preset full
        row["met"] = None
        row["note"] += "; target judged on --preset full only (torch's own RSS dominates small stores)"
    return row


# ---------------------------------------------------------------- 5. scaling
def bench_scaling(data_dirs: dict, cfg_for, steps: int, predict_limit: int) -> list[dict]:
    """Seconds per 1,000 training steps and ms per predicted utterance at each data size."""
    import torch

    from kit.data import FeatureStore
    from kit.infer import predict_index
    from kit.models import build_model
    from kit.train import train

    rows = []
    for size, data_dir in data_dirs.items():
        store = FeatureStore.open(data_dir, "float16", progress=False)
        cfg = cfg_for(data_dir)
        cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
        _fixed_budget(cfg, steps)
        with tempfile.TemporaryDirectory() as tmp:
            s = train(cfg, Path(tmp) / "run", progress=False, store=store)
        torch.manual_seed(0)
        model = build_model(cfg.model).eval()
        index = store.test_index[:predict_limit]
        t = _timed(lambda: predict_index(model, store, index, window=cfg.infer.window, hop=cfg.infer.hop,
                                         batch_size=cfg.infer.batch_size, n_classes=cfg.model.n_classes))
        rows.append({"size": size, "speakers": len(store.speakers), "train_utterances": int(store.n_train),
                     "store_mib": store.nbytes / 2**20,
                     "seconds_per_1000_steps": s["train_seconds"] / steps * 1000,
                     "ms_per_predicted_utterance": 1000 * t / max(len(index), 1)})
    return rows


# ---------------------------------------------------------------- the whole run
def machine_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def ensure_synth(preset: str, root: Path, log) -> Path:
    from kit.synth import generate

    data_dir = root / f"bench-{preset}"
    if not (data_dir / "metadata.json").is_file():
        log(f"generating the synthetic {preset} competition in {data_dir}")
        generate(str(data_dir), preset, seed=0)
    return data_dir


def run_bench(preset: str = "demo", data: str | None = None, out: str | Path = ".", quick: bool = False,
              train_steps: int | None = None, workers: int = 0, cache: str | Path = "data",
              long_steps: int = 0, log=lambda m: None) -> dict:
    """All benchmark rows on one data dir (synthetic `preset` unless `data` is given)."""
    import torch

    from kit.data import FeatureStore

    cache = Path(cache)
    data_dir = Path(data) if data else ensure_synth(preset, cache, log)
    log(f"opening the store of {data_dir}")
    store = FeatureStore.open(data_dir, "float16", progress=False)
    on_gpu = torch.cuda.is_available()
    steps = train_steps or (20 if quick else (300 if on_gpu else 60))
    batch = 64 if on_gpu else 32
    result = {"machine": machine_description(), "data": str(data_dir), "preset": None if data else preset,
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": []}

    log("1/5 data feeding")
    result["rows"].append(bench_feeding(data_dir, store, batches=30 if quick else 100, workers=workers))
    log("2/5 training throughput")
    cfg = strong_config(data_dir, batch)
    result["rows"].append(bench_training(data_dir, store, cfg, steps, workers))
    if not on_gpu and (os.cpu_count() or 1) > 1:
        log("2b/5 zoo training throughput")
        result["rows"].append(bench_zoo(data_dir, result["rows"][-1]["baseline"], 2 * steps, batch,
                                        members=min(os.cpu_count(), 4)))
    if long_steps > 0:
        log(f"2c/5 long run: {long_steps} steps of each loop (catches a late slowdown)")
        result["rows"].append(bench_long_run(data_dir, store, strong_config(data_dir, batch), long_steps,
                                             max(long_steps // 10, 1)))
    log("3/5 prediction")
    result["rows"].extend(bench_prediction(data_dir, store, strong_config(data_dir, batch),
                                           limit=64 if quick else None))
    log("4/5 memory")
    result["rows"].append(bench_memory(data_dir, steps=10 if quick else 30, batch_size=batch))
    log("5/5 scaling")
    sizes = {"tiny": ensure_synth("tiny", cache, log), "demo": data_dir if preset == "demo" and not data
             else ensure_synth("demo", cache, log)}
    if preset == "full" or data:
        sizes["full" if preset == "full" else "yours"] = data_dir
    result["scaling"] = bench_scaling(sizes, lambda d: strong_config(d, batch), steps=10 if quick else 30,
                                      predict_limit=64 if quick else 200)
    out = Path(out)
    write_json(out / "bench.json", result)
    write_text(out / "bench.md", to_markdown(result))
    return result


def to_markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}  ", f"Data: {result['data']}", "",
             "| benchmark | baseline (course sample) | kit | ratio | target | met |",
             "|---|---:|---:|---:|---:|:-:|"]
    for r in result["rows"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"| {r['name']} | {r['baseline']:.1f} | {r['kit']:.1f} {r['unit']} | "
                     f"{r['ratio']:.2f}x | {r['target'] or ''}x | {met} |")
    notes = [f"- {r['name']}: {r['note']}" for r in result["rows"] if r.get("note")]
    if notes:
        lines += [""] + notes
    if result.get("scaling"):
        lines += ["", "| size | speakers | train utts | store MiB | s / 1,000 steps | ms / predicted utt |",
                  "|---|---:|---:|---:|---:|---:|"]
        for s in result["scaling"]:
            lines.append(f"| {s['size']} | {s['speakers']} | {s['train_utterances']} | {s['store_mib']:.1f} | "
                         f"{s['seconds_per_1000_steps']:.1f} | {s['ms_per_predicted_utterance']:.2f} |")
    return "\n".join(lines) + "\n"
