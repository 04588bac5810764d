"""`kit recipe run RECIPE --budget full --rehearse`: the whole job at its real shapes, briefly, here.

Every member of the budget is built at its real size and trained at its real batch and crop on a
competition of the real size (the `full-rehearsal` preset: 600 speakers, 56,666 training
utterances of real lengths; 100 test utterances instead of 4,000), for a few steps: stopped half way
as a session limit stops it, resumed, evaluated twice, its last weights averaged. Then the recipe
goes on as it would on Kaggle: prediction at the real lengths (whole utterances up to 1,500 frames),
the calibrated vote, the report, a pseudo-label round with its fine-tunes, the distilled student and
the submission to the local stand-in. Each stage's wall time and peak memory are measured and
checked against a Kaggle GPU session (16 GB GPUs, 29 GiB of RAM), and the budget's projected GPU
hours (kit.cost) against a Kaggle week.

What is cut, and why: the steps (2 by default: a real-shape step takes 9-25 s on a 2-core CPU),
validation (60 utterances, one from each of 60 speakers, the longest it has; the real split holds
5,667) and the test set (100): at the real widths a member predicts a few utterances a second here
(whole, in windows and centre crops for the `auto` mode's choice), so all 9,667 would take the five
members hours. The cost table projects the full training and prediction instead.
"""
from __future__ import annotations

import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch

from kit.config import _toml_value, load_toml
from kit.cost import fits_a_week, recipe_costs
from kit.data import FeatureStore, Split, save_split
from kit.errors import KitError
from kit.fsio import write_text
from kit.layout import is_synthetic
from kit.recipe import load_recipe, member_config, resolve_recipe
from kit.synth import generate
from kit.train import train
from kit.zoo import run_recipe

PRESET = "full-rehearsal"
STEPS = 2                       # training steps per member (stopped at half, resumed); ~10-25 s each here
VAL_UTTERANCES = 60
VAL_FRACTION = 0.0021           # a value of its own, so the rehearsal's split file is never the real one's
GPU_MEMORY_GIB = 15.0           # a T4's usable memory (a P100 has 16)
HOST_MEMORY_GIB = 29.0          # a Kaggle GPU session's RAM
STAGE_WORDS = ("training ", "predicting ", "ensembling ", "pseudo-labels", "round ", "student", "submitting ")


# ---------------------------------------------------------------- the rehearsal recipe
def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _flat(table: dict, prefix: str = ""):
    for k, v in table.items():
        key = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict):
            yield from _flat(v, key)
        else:
            yield key, v


def recipe_text(raw: dict) -> str:
    """A parsed recipe written back as TOML (tables as dotted keys: the same recipe once read)."""
    lines = [f"{_key(k)} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, (dict, list))]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += ["", f"[{_key(k)}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in _flat(v)]
    for member in raw.get("members", []):
        lines += ["", "[[members]]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in _flat(member)]
    return "\n".join(lines) + "\n"


def _merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict):
            _merge(into.setdefault(k, {}), v)
        else:
            into[k] = v


def rehearsal_overrides(steps: int) -> dict:
    """What changes in every member: the steps and what hangs on them; never a shape."""
    half = max(1, steps // 2)
    return {"train": {"max_steps": steps, "max_epochs": 0, "eval_every": half, "warmup_steps": max(1, steps // 4),
                      "average_last": 2, "minutes": 0.0},
            "model": {"margin_warmup_steps": half},
            "data": {"val_fraction": VAL_FRACTION}}


def write_rehearsal_recipe(recipe_path: Path, budget: str, steps: int, folder: Path, submit: bool = True) -> Path:
    """RECIPE-rehearsal.toml in folder: the recipe, its members at `steps` steps in `budget`, with
    both stages after the vote on (a pseudo-label round on the vote's surest half of the test set:
    a few steps leave no label precise enough for the recipe's own threshold)."""
    raw = load_toml(recipe_path)
    raw["name"] = f"{raw.get('name', recipe_path.stem)}-rehearsal"
    extra = rehearsal_overrides(steps)
    budgets = raw.setdefault("budget", {})
    budgets.setdefault(budget, {}).pop("minutes", None)
    _merge(budgets[budget], extra)
    for member in raw.get("members", []):
        own = member.get("budget", {}).get(budget)
        if own:                                 # a member's own budget table wins over [budget.*]
            _merge(own, extra)
    after = raw.setdefault("after", {})
    pseudo = after.get("pseudo") if isinstance(after.get("pseudo"), dict) else {}
    pseudo = {k: v for k, v in pseudo.items() if k not in ("precision", "top_fraction")}
    after.update(predict=True, submit=submit, ensemble=after.get("ensemble", "auto"),
                 pseudo={**pseudo, "enabled": True, "top_fraction": 0.5},
                 distill={**(after.get("distill") if isinstance(after.get("distill"), dict) else {}),
                          "enabled": True})
    path = folder / f"{raw['name']}.toml"
    write_text(path, "# written by kit recipe run --rehearse from " + str(recipe_path) + "\n" + recipe_text(raw))
    return path


def limit_validation(store, n: int = VAL_UTTERANCES, seed: int = 0) -> None:
    """The rehearsal's split (VAL_FRACTION's file beside the store): one validation utterance from
    each of n speakers, the longest of each, so prediction meets the real lengths."""
    labels = store.labels[:store.n_train]
    rng = np.random.default_rng(seed)
    speakers = rng.choice(np.unique(labels), size=min(n, len(np.unique(labels))), replace=False)
    val = np.sort([int(max(np.flatnonzero(labels == s), key=lambda i: store.lengths[i])) for s in speakers])
    train = np.setdiff1d(np.arange(store.n_train), val)
    save_split(Split(train, val, seed, VAL_FRACTION), store.root / f"split-{seed}-{VAL_FRACTION:g}.json", store)


# ---------------------------------------------------------------- measuring stages
@dataclass
class Stage:
    name: str
    began: float
    seconds: float = 0.0
    peak_bytes: int = 0         # private memory (RSS less shared file pages) of kit and its children
    gpu_peak_bytes: int = 0


@dataclass
class StageMeter:
    """Wall time and peak memory of each stage; a new stage begins at each recipe log line that
    names one (STAGE_WORDS) or at `begin`."""
    every: float = 0.2
    stages: list = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StageMeter:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._close()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def begin(self, name: str) -> None:
        self._close()
        self.stages.append(Stage(name, time.time()))
        self._reset_gpu()

    def log_line(self, message: str) -> None:
        if message.startswith(STAGE_WORDS):
            name = message.split(" -> ")[0][:48]
            self.begin(name + (" (resuming)" if message.endswith("(resuming)") else ""))

    def _close(self) -> None:
        if self.stages and not self.stages[-1].seconds:
            stage = self.stages[-1]
            stage.seconds = time.time() - stage.began
            stage.peak_bytes = max(stage.peak_bytes, private_bytes())
            stage.gpu_peak_bytes = gpu_peak()

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            if self.stages:
                stage = self.stages[-1]
                stage.peak_bytes = max(stage.peak_bytes, private_bytes())

    @staticmethod
    def _reset_gpu() -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def private_bytes() -> int:
    """Resident memory of this process and its children, less the file pages they share (the packed
    store is memory-mapped: its pages are the page cache's, not the process's)."""
    total = 0
    me = psutil.Process()
    for p in [me] + me.children(recursive=True):
        try:
            info = p.memory_info()
        except psutil.Error:
            continue
        total += max(info.rss - getattr(info, "shared", 0), 0)
    return total


def gpu_peak() -> int:
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0


# ---------------------------------------------------------------- the rehearsal
def ensure_rehearsal_data(data: str | None, log) -> Path:
    folder = Path(data or f"data/{PRESET}")
    if not (folder / "metadata.json").is_file():
        if data:
            raise KitError(f"{folder}: no metadata.json (give a data dir, or leave --data out to rehearse on the "
                           f"{PRESET} preset)")
        log(f"generating the {PRESET} competition in {folder} (600 speakers, 56,666 training utterances; "
            "once, about 10 minutes on 2 cores)")
        generate(str(folder), PRESET, seed=0)
    return folder


def memory_problems(stages: list[Stage], on_gpu: bool) -> list[str]:
    gib, problems = 2 ** 30, []
    for s in stages:
        if on_gpu and s.gpu_peak_bytes > GPU_MEMORY_GIB * gib:
            problems.append(f"{s.name}: {s.gpu_peak_bytes / gib:.1f} GiB of GPU memory, more than a Kaggle "
                            f"T4's {GPU_MEMORY_GIB:.0f}")
        if s.peak_bytes > HOST_MEMORY_GIB * gib:
            problems.append(f"{s.name}: {s.peak_bytes / gib:.1f} GiB of memory, more than a Kaggle session's "
                            f"{HOST_MEMORY_GIB:.0f}")
        if not on_gpu and s.name.startswith("training") and s.peak_bytes > GPU_MEMORY_GIB * gib:
            problems.append(f"{s.name}: {s.peak_bytes / gib:.1f} GiB in float32 on this CPU; a T4 has "
                            f"{GPU_MEMORY_GIB:.0f} GiB (mixed precision needs about half)")
    return problems


def _first_halves(recipe, data_dir: Path, budget: str, runs: Path, steps: int, meter: StageMeter,
                  progress: bool, log) -> None:
    """Each member to half its steps, stopped as a session's time limit stops it (last.pt kept)."""
    names = recipe.members_for(budget)
    meter.begin("opening the packed store")
    store = FeatureStore.open(data_dir, member_config(recipe, names[0], budget).data.store_dtype, progress=progress)
    limit_validation(store)
    for name in names:
        meter.begin(f"training {name} to step {max(1, steps // 2)}, then stopped")
        log(f"rehearsal: training {name} at its real shapes to step {max(1, steps // 2)}, then stopping it")
        train(member_config(recipe, name, budget, str(data_dir)), runs / recipe.name / name, progress=progress,
              store=store, stop_after=max(1, steps // 2), budget=budget)


def rehearse(recipe_file: str, data: str | None, budget: str, runs: str, steps: int = STEPS,
             progress: bool = True, log=None) -> dict:
    """The whole job at real shapes (see the module's doc). Returns {stages, result, costs, problems};
    raises KitError naming the stage where something fails."""
    log = log or (lambda message: None)
    if steps < 2:
        raise KitError(f"--steps {steps}: at least 2 (a member is stopped half way and resumed)")
    recipe_path = resolve_recipe(recipe_file)
    data_dir = ensure_rehearsal_data(data, log)
    root = Path(runs)
    synthetic = is_synthetic(data_dir)
    if not synthetic:
        log(f"rehearsal: {data_dir} is not a synthetic competition, so nothing is submitted (a rehearsal never "
            "spends one of your Kaggle submissions)")
    path = write_rehearsal_recipe(recipe_path, budget, steps, root, submit=synthetic)
    recipe = load_recipe(path)
    if (root / recipe.name).exists():
        log(f"rehearsal: removing the last rehearsal's run dirs {root / recipe.name}")
        shutil.rmtree(root / recipe.name)
    meter = StageMeter()

    def staged_log(message: str) -> None:
        meter.log_line(message)
        log(message)

    began = time.time()
    with meter:
        try:
            _first_halves(recipe, data_dir, budget, root, steps, meter, progress, log)
            result = run_recipe(path, data=str(data_dir), budget=budget, runs=str(root), workers=1,
                                progress=progress, log=staged_log)
        except Exception as e:
            where = meter.stages[-1].name if meter.stages else "starting"
            raise KitError(f"rehearsal failed while {where}: {type(e).__name__}: {e}") from e
    costs = recipe_costs(load_recipe(recipe_path), budget)
    problems = memory_problems(meter.stages, torch.cuda.is_available())
    if not fits_a_week(costs):
        problems.append(f"the {budget} budget fits no Kaggle GPU week (kit recipe cost)")
    return {"stages": meter.stages, "result": result, "costs": costs, "problems": problems,
            "minutes": (time.time() - began) / 60, "recipe": str(recipe_path), "data": str(data_dir)}


def stage_table(stages: list[Stage]) -> str:
    gpu = any(s.gpu_peak_bytes for s in stages)
    lines = [f"{'stage':<62} {'seconds':>8} {'peak MiB':>9}" + (f" {'GPU MiB':>8}" if gpu else "")]
    for s in stages:
        lines.append(f"{s.name:<62} {s.seconds:>8.1f} {s.peak_bytes / 2 ** 20:>9,.0f}"
                     + (f" {s.gpu_peak_bytes / 2 ** 20:>8,.0f}" if gpu else ""))
    return "\n".join(lines)
