"""`kit recipe run --rehearse` (kit.rehearse): the whole job at the members' real shapes, briefly,
on tiny data here (the real-size run is `make rehearse-full`, not a test)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from kit.config import load_toml
from kit.recipe import load_recipe, member_config
from kit.rehearse import (
    VAL_FRACTION,
    Stage,
    StageMeter,
    memory_problems,
    recipe_text,
    rehearsal_overrides,
    write_rehearsal_recipe,
)

from conftest import kit_cli, one_error

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.toml"))
FULL = {"full": {"train.max_steps": 100000, "train.eval_every": 2000, "train.average_last": 5,
                 "model.margin_warmup_steps": 20000}}
AFTER = {"predict": True, "ensemble": "auto", "submit": True}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_a_recipe_written_back_reads_the_same(path):
    raw = load_toml(path)
    again = Path(path).with_name("again.toml")
    try:
        again.write_text(recipe_text(raw))
        assert load_toml(again) == raw
    finally:
        again.unlink(missing_ok=True)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_the_rehearsal_keeps_every_shape_and_changes_only_the_steps(path, tmp_path):
    real = load_recipe(path)
    rehearsal = load_recipe(write_rehearsal_recipe(path, "full", 6, tmp_path))
    assert rehearsal.name == f"{real.name}-rehearsal"
    assert rehearsal.members_for("full") == real.members_for("full")
    for name in real.members_for("full"):
        a, b = member_config(real, name, "full"), member_config(rehearsal, name, "full")
        assert (b.model.margin_warmup_steps, b.train.max_steps, b.train.eval_every) == (3, 6, 3)
        b.model.margin_warmup_steps = a.model.margin_warmup_steps
        assert b.model == a.model                                   # every width, depth, head
        assert (b.train.batch_size, b.data.segment_len, b.infer) == (a.train.batch_size, a.data.segment_len, a.infer)
    assert rehearsal.after["pseudo"]["enabled"] and rehearsal.after["distill"]["enabled"]
    assert rehearsal.after["pseudo"]["precision"] is None and rehearsal.after["pseudo"]["top_fraction"] == 0.5


@pytest.mark.slow
def test_rehearsal_runs_every_stage_stopped_and_resumed(tiny_data, tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)            # the rehearsal's split file goes beside the packed store
    recipe = tiny_recipe("a", {"name": "b", "model.pooling": "sap"}, budget=FULL, after=AFTER)
    code, out, err = kit_cli(capsys, "recipe", "run", recipe, "--rehearse", "--data", data, "--steps", 4,
                             "--no-progress")
    assert code == 0, err
    assert "rehearsal passed" in err
    root = tmp_path / "runs" / "tiny-rehearsal"
    for member in ("a", "b"):
        summary = json.loads((root / member / "summary.json").read_text())
        assert summary["step"] == 4 and summary["stopped_reason"] == "budget", summary
        with open(root / member / "metrics.csv") as f:
            assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]          # evaluated before and after
        assert (root / member / "avg.pt").is_file()                               # the last two averaged
        assert f"training {member} to step 2, then stopped" in out
        assert f"training {member} (resuming)" in out and f"predicting {member}" in out
    for stage in ("ensembling 2 member(s)", "pseudo-labels, round 1", "student", "submitting"):
        assert stage in out, stage
    assert (root / "student" / "summary.json").is_file()
    with open(tmp_path / "submissions" / "ledger.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["status"]) for r in rows][-1] == ("submissions/tiny-rehearsal.csv", "COMPLETE")
    split = next((data / ".kit-cache").glob(f"store-*/split-0-{VAL_FRACTION:g}.json"))
    assert len(json.loads(split.read_text())["val"]) == 8                     # one per speaker, at most 60
    assert "| a |" in out and "Kaggle" in out                                 # the cost table


def test_a_stage_that_fails_is_named(tiny_data, tiny_recipe, tmp_path, monkeypatch, capsys):
    import kit.zoo

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)

    def broken(run_dir, *args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(kit.zoo, "predict_run", broken)        # where the recipe calls it
    recipe = tiny_recipe("a", budget=FULL, after=AFTER)
    code, _, err = kit_cli(capsys, "recipe", "run", recipe, "--rehearse", "--data", data, "--steps", 2,
                           "--no-progress")
    line = [x for x in err.splitlines() if x.startswith("kit: error")]
    assert code == 2 and line, err
    assert "rehearsal failed while predicting a" in line[0] and "RuntimeError: shape mismatch" in line[0]


def test_rehearsal_refuses_what_it_cannot_rehearse(tiny_recipe, capsys):
    recipe = tiny_recipe("a", budget=FULL)
    code, _, err = kit_cli(capsys, "recipe", "run", recipe, "--rehearse", "--only", "a")
    one_error(code, err, "--rehearse runs every member here")
    code, _, err = kit_cli(capsys, "recipe", "run", recipe, "--rehearse", "--steps", 1)
    one_error(code, err, "--steps 1: at least 2")
    code, _, err = kit_cli(capsys, "recipe", "run", recipe, "--steps", 3)
    one_error(code, err, "--steps goes with --rehearse")


def test_memory_beyond_a_kaggle_session_is_a_problem():
    gib = 2 ** 30
    stages = [Stage("training a to step 3, then stopped", 0.0, 1.0, 20 * gib),
              Stage("predicting a", 0.0, 1.0, 2 * gib), Stage("ensembling", 0.0, 1.0, 40 * gib),
              Stage("training b", 0.0, 1.0, 1 * gib, gpu_peak_bytes=16 * gib)]
    cpu = memory_problems(stages, on_gpu=False)
    assert len(cpu) == 2 and "training a" in cpu[0] and "a T4 has 15 GiB" in cpu[0]
    assert "ensembling: 40.0 GiB" in cpu[1] and "Kaggle session's 29" in cpu[1]
    gpu = memory_problems(stages, on_gpu=True)
    assert any("training b: 16.0 GiB of GPU memory" in p for p in gpu)
    assert not any("training a" in p for p in gpu)          # on a GPU the GPU's own figure decides


def test_the_meter_times_each_stage_and_samples_its_memory():
    import time

    with StageMeter(every=0.01) as meter:
        meter.log_line("time budget: not a stage")
        meter.log_line("training a -> runs/x/a")
        held = bytearray(64 * 2 ** 20)                     # 64 MiB touched inside the stage
        held[::4096] = b"x" * len(held[::4096])
        time.sleep(0.1)
        meter.log_line("predicting a")
        del held
    assert [s.name for s in meter.stages] == ["training a", "predicting a"]
    training = meter.stages[0]
    assert training.seconds >= 0.1 and training.peak_bytes >= 64 * 2 ** 20


def test_overrides_never_touch_a_shape():
    extra = rehearsal_overrides(8)
    assert set(extra) == {"train", "model", "data"}
    assert set(extra["model"]) == {"margin_warmup_steps"} and set(extra["data"]) == {"val_fraction"}
    assert not {"batch_size", "lr"} & set(extra["train"])


@pytest.mark.slow
def test_a_rehearsal_on_real_data_never_submits(tiny_data, tiny_recipe, tmp_path, monkeypatch, capsys):
    from kit.synth import MARKER

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / MARKER).unlink()                    # no longer synthetic: as if it were the real competition
    recipe = tiny_recipe("a", budget=FULL, after=AFTER)
    code, out, err = kit_cli(capsys, "recipe", "run", recipe, "--rehearse", "--data", data, "--steps", 2,
                             "--no-progress")
    assert code == 0, err
    assert "nothing is submitted" in err and "submitting" not in out
    assert not (tmp_path / "submissions" / "ledger.csv").exists()
    assert (tmp_path / "submissions" / "tiny-rehearsal.csv").is_file()     # the vote's CSV is still written
