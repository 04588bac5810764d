"""kit bench: the course-sample baselines do the same work as kit's paths, and rows are ratios."""
from pathlib import Path

import numpy as np
import pytest
import torch

from kit.bench import (
    bench_feeding,
    bench_prediction,
    course_collate,
    course_dataset,
    course_model,
    course_predict,
    strong_config,
    to_markdown,
)
from kit.data import FeatureStore
from kit.infer import predict_index
from kit.models import build_model

STRONG = Path(__file__).resolve().parents[1] / "recipes" / "strong.toml"


def test_course_dataset_crops_and_pads_like_the_sample(tiny_data):
    ds = course_dataset(tiny_data, segment_len=64)
    x, lengths, y = course_collate([ds[i] for i in range(len(ds))])
    assert x.shape[0] == len(ds) and x.shape[2] == 40
    assert int(lengths.max()) <= 64 and x.shape[1] == int(lengths.max())
    short = int(lengths.argmin())
    if int(lengths[short]) < x.shape[1]:
        assert torch.all(x[short, int(lengths[short]):] == -20)
    assert y.min() >= 0 and y.max() < 8                # tiny has 8 speakers


def test_feeding_row_is_a_ratio_of_batches_per_second(tiny_data):
    store = FeatureStore.open(tiny_data, "float16", progress=False)
    row = bench_feeding(tiny_data, store, batches=5, batch_size=4, segment_len=32)
    assert row["baseline"] > 0 and row["kit"] > 0
    assert np.isclose(row["ratio"], row["kit"] / row["baseline"])
    assert row["met"] == (row["ratio"] >= 20.0)


def test_course_prediction_matches_kit_full_length_prediction(tiny_data):
    """The baseline and kit's batched full-length path predict the same classes."""
    store = FeatureStore.open(tiny_data, "float32", progress=False)
    cfg = strong_config(tiny_data, 8, recipe=STRONG)
    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    index = store.test_index
    course = course_predict(course_model(cfg.model, like=model), tiny_data, [store.paths[i] for i in index])
    kit = predict_index(model, store, index, mode="full", n_classes=cfg.model.n_classes).argmax(1)
    assert course == kit.tolist()


@pytest.mark.slow
def test_prediction_rows_and_markdown(tiny_data):
    store = FeatureStore.open(tiny_data, "float16", progress=False)
    rows = bench_prediction(tiny_data, store, strong_config(tiny_data, 8, recipe=STRONG), limit=6)
    assert len(rows) == 3 and all(r["unit"] == "utterances/s" and r["ratio"] > 0 for r in rows)
    ceiling = rows[2]
    assert ceiling["name"].startswith("prediction ceiling") and ceiling["met"] is None
    assert ceiling["ratio"] > rows[1]["ratio"]             # nothing runs faster than the matmul peak
    text = to_markdown({"machine": "test", "data": str(tiny_data), "rows": rows, "scaling": []})
    assert text.count("| prediction") == 3


def test_forward_flops_fit_matches_a_counted_pass(tiny_data):
    """The a + bL + cL^2 fit predicts the counted FLOPs of a length it was not fitted on."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from kit.bench import forward_flops

    cfg = strong_config(tiny_data, 8, recipe=STRONG)
    cfg.model.n_mels, cfg.model.n_classes = 40, 8
    model = build_model(cfg.model).eval()
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.inference_mode():
        model(torch.zeros(1, 400, 40), torch.tensor([400]))
    assert np.isclose(forward_flops(model, 40)(400), counter.get_total_flops(), rtol=1e-6)


@pytest.mark.slow
def test_training_rows_switch_fast_paths_on_one_at_a_time(tiny_data):
    from kit.bench import bench_training, fast_path_stages

    stages = fast_path_stages("cpu", bf16=True, compile_too=False)
    assert [s["train.fast_dropout"] for _, s in stages] == [False, True, True, True]
    assert stages[-1][1]["train.mixed_precision"] == "bf16" and stages[0][1]["train.mixed_precision"] == "no"
    gpu = fast_path_stages("cuda", bf16=True, compile_too=True)
    assert [label.split()[1] for label, _ in gpu[1:]] == ["packed", "kit's", "fused", "bf16", "torch.compile", "4x"]

    store = FeatureStore.open(tiny_data, "float16", progress=False)
    cfg = strong_config(tiny_data, 4, recipe=STRONG)
    cfg.data.segment_len, cfg.model.d_model, cfg.model.ffn_dim = 32, 16, 32
    rows = bench_training(tiny_data, store, cfg, steps=6)
    assert rows[0]["name"].startswith("training: course-style loop") and rows[0]["ratio"] == 1.0
    assert all(r["baseline"] == rows[0]["baseline"] and r["kit"] > 0 for r in rows)
    targets = [r for r in rows if r["target"]]
    assert len(targets) == 1 and targets[0]["name"].endswith("= kit's defaults")   # one verdict, on the defaults


def test_long_run_reports_per_window_speeds_of_both_loops(tiny_data):
    from kit.bench import bench_long_run

    store = FeatureStore.open(tiny_data, "float16", progress=False)
    cfg = strong_config(tiny_data, 4, recipe=STRONG)
    cfg.data.segment_len, cfg.model.d_model, cfg.model.ffn_dim = 32, 16, 32
    row = bench_long_run(tiny_data, store, cfg, steps=12, window=4)
    assert row["baseline"] > 0 and row["kit"] > 0 and np.isclose(row["ratio"], row["kit"] / row["baseline"])
    assert row["note"].count("[") == 2 and row["met"] is None        # three windows per loop, no verdict
