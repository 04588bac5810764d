"""`kit bench`: kit's fast paths timed against the course sample's way of doing the same work.

Every row is a ratio measured in the same run (same machine, same data, same model), so the
numbers say what kit buys on the user's own hardware. common: rows, timers and the timed model;
training and prediction: the scenarios; run: the whole run; child: the scenarios' subprocesses.
The course sample's own pipeline is kit.course.
"""
from kit.bench.common import course_model, fixed_budget, row, strong_config, time_once, time_warm
from kit.bench.prediction import bench_prediction, forward_flops, matmul_peak
from kit.bench.run import bench_scaling, ensure_synth, machine_description, run_bench, to_markdown
from kit.bench.training import (
    bench_feeding,
    bench_long_run,
    bench_memory,
    bench_training,
    bench_zoo,
    course_train,
    fast_path_stages,
)
from kit.course import course_collate, course_dataset, course_loader, course_predict

__all__ = ["bench_feeding", "bench_long_run", "bench_memory", "bench_prediction", "bench_scaling", "bench_training",
           "bench_zoo", "course_collate", "course_dataset", "course_loader", "course_model", "course_predict",
           "course_train", "ensure_synth", "fast_path_stages", "fixed_budget", "forward_flops",
           "machine_description", "matmul_peak", "row", "run_bench", "strong_config", "time_once", "time_warm",
           "to_markdown"]
