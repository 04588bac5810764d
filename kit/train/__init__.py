"""Training one model into a run dir: random crops from the FeatureStore -> model -> AdamW, one
plain loop through accelerate (CPU, one GPU or DDP), with validation, checkpoints, resume and logs.

  kit.train.loop     train(): the loop as named steps (Trainer)
  kit.train.devices  precision, the Accelerator, the step total and plan, the memory a step needs
  kit.train.clock    the session's wall-clock bookkeeping; StepTimer for benchmarks
  kit.train.state    TrainState: everything resume needs, as state_dict()/load_state_dict()
  kit.train.checkpoints CheckpointSaver: the run dir's last.pt, best.pt and avg.pt
  kit.train.targets  what a batch is trained towards: labels, pseudo-labels, a teacher's soft targets
  kit.train.results  evaluation (centre crops: val_acc_crop), metrics, curves, loading a finished run
"""
from kit.compat import cpu_has_bf16
from kit.train.checkpoints import CheckpointSaver
from kit.train.clock import StepTimer
from kit.train.devices import end_distributed, resolve_precision, step_bytes, total_steps
from kit.train.loop import TrainingDiverged, train
from kit.train.results import METRIC_COLUMNS, evaluate, load_config, load_model, plot_curves
from kit.train.state import TrainState, average_state_dicts, weights_digest

__all__ = ["train", "StepTimer", "TrainingDiverged", "step_bytes", "TrainState", "evaluate",
           "load_config", "load_model", "plot_curves", "average_state_dicts", "weights_digest",
           "resolve_precision", "cpu_has_bf16", "total_steps", "end_distributed", "METRIC_COLUMNS", "CheckpointSaver"]
