"""A diverged member never reaches a vote, and memory is bounded before it is asked for (issue 19,
items 2 and 5): a non-finite loss stops training with one line, the last good checkpoint kept; a
recipe votes without the member; sizes past what any machine holds are one line before allocating."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kit.cli import main
from kit.config import RunConfig, layered, parse_overrides
from kit.errors import KitError
from kit.recipe import load_recipe, member_config
from kit.rundir import RunDir
from kit.train import step_bytes, train
from kit.zoo import run_recipe

from conftest import REPO, kit_env, one_error

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"model.d_model": 16, "model.ffn_dim": 32, "data.segment_len": 48, "data.store_dtype": "float32",
         "train.eval_every": 5, "train.warmup_steps": 2, "train.cpu_threads": 1, "train.max_steps": 10}
DIVERGES = "train.lr=1e12"          # AdamW's weight decay alone takes the weights past float32 in 5 steps


def small_args(*more: str) -> list[str]:
    return [a for key, value in SMALL.items() for a in ("--set", f"{key}={value}")] + ["--no-progress", *more]


def finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)["model"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# ---------------------------------------------------------------- one run
def test_a_run_that_diverges_from_the_start_stops_before_any_checkpoint(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data), "--out", str(run), *small_args("--set", DIVERGES)])
    one_error(code, capsys.readouterr().err, f"{run}: training diverged at step 5 (train loss nan",
              "no checkpoint was written", "lower train.lr (now 1e+12)", "--fresh")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_reason"] == "diverged" and summary["step"] == 5 and summary["checkpoint_step"] is None
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()   # nothing made of NaN weights


def test_divergence_after_good_steps_keeps_the_last_good_checkpoint(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = layered(("small", parse_overrides([f"{k}={v}" for k, v in SMALL.items()])),
                  ("data", {"data": {"data_dir": str(tiny_data)}}))
    train(cfg, run, progress=False, stop_after=5)               # 5 good steps: last.pt and best.pt at step 5
    code = main(["train", "--out", str(run), "--resume", "--set", DIVERGES, "--no-progress"])
    said, err = f"kit: {run}: resuming from step 5 of 10\n", capsys.readouterr().err
    assert err.startswith(said), err                            # the step it went on from, then the one error
    one_error(code, err[len(said):], "training diverged at step 10", "the last good checkpoint (step 5) is kept")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["stopped_reason"], summary["step"], summary["checkpoint_step"]) == ("diverged", 10, 5)
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 5
    assert finite(run / "last.pt") and finite(run / "best.pt")


@pytest.mark.slow
def test_python_m_kit_train_exits_2_with_one_line_on_divergence(tiny_data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "kit.train", "--data", str(tiny_data), "--out", str(run),
                           *small_args("--set", DIVERGES)], env=kit_env(), capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kit: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "training diverged" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- a recipe
def _recipe(tiny_recipe, *members: str):
    tables = [{"name": name, **({"train.lr": 1e12} if name.startswith("bad") else {})} for name in members]
    return tiny_recipe(*tables, base={"train": {"max_steps": 10, "eval_every": 5}}, budget={"quick": {}},
                       after={"predict": True, "ensemble": "soft"})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])      # in this process, and in worker processes (python -m kit.train)
def test_a_recipe_votes_without_its_diverged_member_and_says_so(tiny_recipe, tiny_data, tmp_path, capsys,
                                                                monkeypatch, workers):
    monkeypatch.chdir(tmp_path)                  # the CSV lands in the test's own submissions/
    (tmp_path / "kit").mkdir()                   # probe 58 F1: a `kit` folder here was imported by every worker
    recipe, runs = _recipe(tiny_recipe, "good", "bad"), tmp_path / "runs"
    code = main(["recipe", "run", str(recipe), "--data", str(tiny_data), "--runs", str(runs), "--workers",
                 str(workers), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    bad_row = next(line for line in out.splitlines() if line.startswith("bad "))
    assert "diverged at step 5 (not voted)" in bad_row
    assert "bad diverged: predicting and voting without it (1 member(s) left: good)" in err
    assert not (runs / "tiny" / "bad" / "test_probs.npy").exists()       # never predicted
    manifest = (tmp_path / "submissions" / "tiny.json").read_text()
    assert str(runs / "tiny" / "good") in manifest and str(runs / "tiny" / "bad") not in manifest
    assert (tmp_path / "submissions" / "tiny.csv").is_file()


def test_a_recipe_whose_every_member_diverged_is_one_line(tiny_recipe, tiny_data, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(KitError, match=r"every member diverged \(bad\), so there is nothing to vote"):
        run_recipe(_recipe(tiny_recipe, "bad"), data=str(tiny_data), runs=str(runs), progress=False, workers=1)


# ---------------------------------------------------------------- memory
@pytest.mark.parametrize("setting,needle", [
    ("train.batch_size=1000000000", "train.batch_size = 1000000000: must be <= 65536"),
    ("data.segment_len=100000000", "data.segment_len = 100000000: must be <= 100000"),
    ("model.d_model=1000000", "model.d_model = 1000000: must be <= 8192"),
])
def test_sizes_past_any_machine_are_refused_at_load(tiny_data, tmp_path, capsys, setting, needle):
    code = main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--set", setting])
    one_error(code, capsys.readouterr().err, needle)
    assert not (tmp_path / "run").exists()


def test_a_step_that_cannot_fit_is_refused_before_allocating(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data), "--out", str(run), "--set", "data.segment_len=100000",
                 "--no-progress"])
    line = one_error(code, capsys.readouterr().err, f"{run}: one training step needs about", "GiB",
                     "lower train.batch_size (now 32)", "data.segment_len (now 100000)")
    assert "of memory on this machine" in line or "free on" in line
    assert not (run / "last.pt").exists()


def test_the_estimate_grows_with_the_batch_and_fits_every_shipped_recipe_on_a_16_gb_gpu():
    cfg = RunConfig()
    small = step_bytes(cfg)
    cfg.train.batch_size *= 2
    assert step_bytes(cfg) > 1.9 * small
    cfg.data.segment_len *= 4                       # attention grows with the square of the crop
    assert step_bytes(cfg) > 8 * small
    for path in sorted((REPO / "recipes").glob("*.toml")):
        recipe = load_recipe(path)
        for budget in ("quick", "full"):
            for name in recipe.members_for(budget):
                member = member_config(recipe, name, budget)
                member.model.n_mels, member.model.n_classes = 40, 600       # the real competition
                # 16 GB, less the CUDA context and the packed store on the GPU (2.8 GiB)
                assert step_bytes(member) < 12 * 2 ** 30, (path.name, budget, name)



# ---------------------------------------------------------------- the stages after the vote
def _recipe_after(tiny_recipe, a: dict, **after):
    return tiny_recipe({"name": "a", **a}, {"name": "b", "train.seed": 1},
                       base={"train": {"max_steps": 20, "eval_every": 10}}, budget={"full": {}},
                       after={"predict": True, "which": "last", "ensemble": "soft", **after})


def _run(recipe, tiny_data, runs, capsys, workers: int = 1) -> tuple[str, str]:
    code = main(["recipe", "run", str(recipe), "--data", str(tiny_data), "--budget", "full", "--runs", str(runs),
                 "--workers", str(workers), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


# Fine-tunes in this process; a trainer process that diverges is covered by
# test_a_recipe_votes_without_its_diverged_member_and_says_so[2].
@pytest.mark.parametrize("workers", [1])
def test_a_diverged_fine_tune_leaves_its_source_member_in_the_round_vote(tiny_recipe, tiny_data, tmp_path, capsys,
                                                                         monkeypatch, workers):
    monkeypatch.chdir(tmp_path)                  # the CSVs land in the test's own submissions/
    # fine-tunes train at lr x 1e15: b's (3e-3 -> 3e12) diverges; a's (3e-18 -> 3e-3) does not
    recipe = _recipe_after(tiny_recipe, {"train.lr": 3e-18},
                           pseudo={"top_fraction": 0.5, "share": 0.3, "fine_tune": "all", "lr_scale": 1e15})
    runs = tmp_path / "runs"
    out, err = _run(recipe, tiny_data, runs, capsys, workers)
    lines = [line for line in err.splitlines() if "the round votes" in line]
    assert len(lines) == 1 and lines[0].startswith("kit: b-pl1 diverged at step ") and \
        lines[0].endswith(": the round votes b instead"), err
    assert not (runs / "tiny" / "b-pl1" / "test_probs.npy").exists()        # never predicted
    assert "fine-tuned: a-pl1; diverged, its source voted instead: b-pl1 at step" in out
    manifest = json.loads((tmp_path / "submissions" / "tiny.json").read_text())
    assert [Path(m).name for m in manifest["members"]] == ["a-pl1", "b"]
    assert (tmp_path / "submissions" / "tiny.csv").is_file()
    # a re-run keeps the diverged fine-tune out the same way, without training it again
    out, err = _run(recipe, tiny_data, runs, capsys, workers)
    assert [line for line in err.splitlines() if "the round votes" in line] == lines
    assert "b-pl1: already fine-tuned" not in err and "training b-pl1" not in err


def test_a_diverged_student_leaves_the_vote_to_be_submitted(tiny_recipe, tiny_data, tmp_path, capsys, monkeypatch):
    import kit.distill
    import kit.rounds
    import kit.zoo

    monkeypatch.chdir(tmp_path)
    real = kit.distill.distill

    def diverging(*args, overrides=(), **kw):       # the student's settings: its best member's, lr 1e12
        return real(*args, overrides=[*overrides, DIVERGES], **kw)

    sent = []
    monkeypatch.setattr(kit.rounds, "distill", diverging)      # where kit.rounds calls it
    monkeypatch.setattr(kit.zoo, "recipe_submit", lambda csv, message, data_dir, **kw: sent.append(str(csv)) or
                        {"status": "COMPLETE", "public": None, "private": None, "target": "stand-in"})
    recipe = _recipe_after(tiny_recipe, {}, distill={"share": 0.5, "submit": True}, submit=True)
    out, err = _run(recipe, tiny_data, tmp_path / "runs", capsys)
    student = tmp_path / "runs" / "tiny" / "student"
    step = RunDir.of(student).diverged_at
    line = f"kit: student diverged at step {step}: no student CSV, the vote goes on alone (move {student} aside"
    assert step is not None and err.count(line) == 1, err
    assert sent == [str(Path("submissions") / "tiny.csv")]          # the vote; no student
    assert not (tmp_path / "submissions" / "tiny-student.csv").exists()
    assert f"distilled student: diverged at step {step} (no student CSV)" in out
    # a re-run keeps the diverged student out without distilling it again, and submits the vote
    out, err = _run(recipe, tiny_data, tmp_path / "runs", capsys)
    assert err.count(line) == 1 and "distilling" not in err and len(sent) == 2, err


def test_kit_ensemble_by_hand_says_a_run_diverged(predicted, tmp_path, capsys):
    """Probe 51 F9: a run whose training diverged after a good checkpoint was voted by a hand-run `kit
    ensemble` without a word, where a recipe marks it "diverged (not voted)"."""
    import json

    from conftest import kit_cli

    good = predicted.run("good", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2])
    gone = predicted.run("gone", [0, 1, 2, 1, 1, 2], [0, 1, 1, 2])
    (gone / "summary.json").write_text(json.dumps({"step": 150, "stopped_reason": "diverged"}))
    code, _, err = kit_cli(capsys, "ensemble", good, gone, "--out", tmp_path / "subs", "--name", "v")
    said = [line for line in err.splitlines() if "diverged" in line]
    assert code == 0 and len(said) == 1 and f"{gone}: its training diverged at step 150" in said[0], err
    (gone / "summary.json").write_text("{}")                           # probe 53 F6: said nothing
    code, _, err = kit_cli(capsys, "ensemble", good, gone, "--out", tmp_path / "subs", "--name", "w")
    said = [line for line in err.splitlines() if line.startswith("kit: warning:")]
    assert code == 0 and len(said) == 1 and f"{gone / 'summary.json'}: not a summary kit wrote" in said[0], err
