"""The whole `kit bench` run on one data dir: every row in order, the scaling table (seconds per
1,000 steps and per predicted utterance at each data size), then bench.json and bench.md.
"""
from __future__ import annotations

import functools
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kit.bench.common import fixed_budget, strong_config, time_once
from kit.bench.prediction import bench_prediction
from kit.bench.training import bench_feeding, bench_long_run, bench_memory, bench_training, bench_zoo
from kit.data import FeatureStore
from kit.fsio import write_json, write_text
from kit.infer import predict_index
from kit.models import build_model
from kit.synth import generate
from kit.train import StepTimer, train


def bench_scaling(data_dirs: dict, cfg_for, steps: int, predict_limit: int) -> list[dict]:
    """Seconds per 1,000 training steps and ms per predicted utterance at each data size."""
    rows = []
    for size, data_dir in data_dirs.items():
        store = FeatureStore.open(data_dir, "float16", progress=False)
        cfg = cfg_for(data_dir)
        cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
        fixed_budget(cfg, steps)
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run", progress=False, store=store, callbacks=[timer])
        torch.manual_seed(0)
        model = build_model(cfg.model).eval()
        index = store.test_index[:predict_limit]
        t = time_once(functools.partial(predict_index, model, store, index, window=cfg.infer.window,
                                        hop=cfg.infer.hop, batch_size=cfg.infer.batch_size,
                                        n_classes=cfg.model.n_classes))
        rows.append({"size": size, "speakers": len(store.speakers), "train_utterances": int(store.n_train),
                     "store_mib": store.nbytes / 2**20,
                     "seconds_per_1000_steps": timer.seconds / steps * 1000,
                     "ms_per_predicted_utterance": 1000 * t / max(len(index), 1)})
    return rows


# ---------------------------------------------------------------- the whole run
def machine_description() -> str:
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
    data_dir = root / f"bench-{preset}"
    if not (data_dir / "metadata.json").is_file():
        log(f"generating the synthetic {preset} competition in {data_dir}")
        generate(str(data_dir), preset, seed=0)
    return data_dir


def run_bench(preset: str = "demo", data: str | None = None, out: str | Path = ".", quick: bool = False,
              train_steps: int | None = None, workers: int = 0, cache: str | Path = "data",
              long_steps: int = 0, compile_too: bool | None = None, log=lambda m: None) -> dict:
    """All benchmark rows on one data dir (synthetic `preset` unless `data` is given)."""
    cache = Path(cache)
    data_dir = Path(data) if data else ensure_synth(preset, cache, log)
    log(f"opening the store of {data_dir}")
    store = FeatureStore.open(data_dir, "float16", progress=False)
    on_gpu = torch.cuda.is_available()
    steps = train_steps or (20 if quick else (300 if on_gpu else 80))
    batch = 64 if on_gpu else 32
    result: dict[str, Any] = {"machine": machine_description(), "data": str(data_dir),
                              "preset": None if data else preset, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "rows": []}

    log("1/5 data feeding")
    result["rows"].append(bench_feeding(data_dir, store, batches=30 if quick else 100, workers=workers))
    log("2/5 training throughput")
    cfg = strong_config(data_dir, batch)
    training = bench_training(data_dir, store, cfg, steps, workers, compile_too)
    result["rows"].extend(training)
    if not on_gpu and (os.cpu_count() or 1) > 1:
        log("2b/5 zoo training throughput")
        result["rows"].append(bench_zoo(data_dir, training[0]["baseline"], 2 * steps, batch,
                                        members=min(os.cpu_count() or 1, 4)))
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
                     f"{r['ratio']:.2f}x | {str(r['target']) + 'x' if r['target'] else ''} | {met} |")
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
