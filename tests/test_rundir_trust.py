"""A run dir is kit's own (README, "What kit promises"): `kit train --out` refuses an existing folder
that is not a run dir before anything is written into it, --fresh moves aside only a run dir, and a
path too long for the file system is one line, not a traceback."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kit.config import RunConfig
from kit.errors import KitError
from kit.runs import move_aside, old_name, run_lock
from kit.train import train

from conftest import kit_cli, one_error

TRAIN_SMALL = ["--set", "model.d_model=16", "--set", "model.ffn_dim=32", "--set", "data.segment_len=48",
               "--set", "data.store_dtype=float32", "--set", "train.eval_every=5", "--set", "train.warmup_steps=2",
               "--set", "train.cpu_threads=1", "--set", "train.max_steps=10", "--no-progress"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def users_folder(path: Path) -> Path:
    """A folder of someone's own files, two of them named like files kit writes into a run dir."""
    path.mkdir(parents=True)
    (path / "metrics.csv").write_text("epoch,my_score\n1,0.5\n")
    (path / "curves.png").write_bytes(b"my own plot")
    (path / "notes.txt").write_text("do not lose\n")
    return path


def test_train_refuses_a_folder_that_is_not_a_run_dir_and_touches_nothing(tiny_data, tmp_path, capsys):
    mine = users_folder(tmp_path / "analysis")
    before = snapshot(tmp_path)
    for flags in ([], ["--fresh"]):                 # --fresh moves aside only a run dir
        one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", mine, *flags, *TRAIN_SMALL)[::2],
                  str(mine), "not a kit run dir", "metrics.csv", "another --out")
        assert snapshot(tmp_path) == before         # no file replaced, no .lock, nothing moved aside
    for name in ("metrics.csv", "curves.png", "notes.txt"):
        (mine / name).unlink()
    code, out, _ = kit_cli(capsys, "train", "--data", tiny_data, "--out", mine, *TRAIN_SMALL)   # now empty: trains
    assert code == 0 and json.loads(out)["step"] == 10


@pytest.mark.parametrize("kits_name", ["summary.json", "best.pt"])
def test_a_users_folder_with_a_file_named_like_kits_is_no_run(kits_name, tiny_data, tmp_path, capsys):
    """One file named like a run's (a user's own summary.json) does not make a folder a run dir:
    --fresh would move the user's whole folder aside."""
    mine = users_folder(tmp_path / "project")
    (mine / kits_name).write_text("{}\n")
    before = snapshot(tmp_path)
    for flags in ([], ["--fresh"]):
        one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", mine, *flags, *TRAIN_SMALL)[::2],
                  str(mine), "not a kit run dir")
        assert snapshot(tmp_path) == before


def test_out_naming_a_parent_folder_is_refused(tiny_data, tmp_path, capsys):
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    (project / "train.py").write_text("print('mine')\n")
    before = snapshot(tmp_path)
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", project / "runs" / "..", *TRAIN_SMALL)[::2],
              "not a kit run dir", "another --out")
    assert snapshot(tmp_path) == before


def test_train_and_move_aside_refuse_a_users_folder_as_a_library(tmp_path):
    """The recipe's members, fine-tunes and students train through train() and start over through
    move_aside(): the same refusal, before anything is written."""
    mine = users_folder(tmp_path / "mine")
    before = snapshot(tmp_path)
    with pytest.raises(KitError, match="not a kit run dir"):
        train(RunConfig(), mine, progress=False)
    with pytest.raises(KitError, match="not a kit run dir .* not moved aside"):
        move_aside(mine, old_name(mine))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flags", [[], ["--fresh"], ["--resume"]])
def test_an_out_name_too_long_for_the_file_system_is_one_line(flags, tiny_data, tmp_path, capsys):
    out = tmp_path / "runs" / ("x" * 260)
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", out, *flags, *TRAIN_SMALL)[::2],
              "x" * 40, "260 bytes", "255", "shorter --out")
    assert not (tmp_path / "runs").exists()


def test_fresh_moves_a_run_with_a_long_name_aside_under_a_name_that_fits(tiny_data, tmp_path, capsys):
    run = tmp_path / ("r" * 250)
    run.mkdir()
    old = {"config.toml": b'name = "old"\n', "summary.json": b'{"stopped_reason": "budget", "step": 3}',
           "best.pt": b"old weights"}
    for name, data in old.items():
        (run / name).write_bytes(data)
    code, out, err = kit_cli(capsys, "train", "--data", tiny_data, "--out", run, "--fresh", *TRAIN_SMALL)
    assert code == 0 and json.loads(out)["step"] == 10, err
    [moved] = [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert len(moved.name.encode()) <= 255 and moved.name.startswith("r" * 200)
    assert {n: (moved / n).read_bytes() for n in old} == old and str(moved.name) in err


def test_distill_refuses_a_folder_of_the_users_files_before_writing_its_teacher(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    (tmp_path / "teacher").mkdir()
    code, _, err = kit_cli(capsys, "distill", tmp_path / "teacher", "--out", folder)
    one_error(code, err, str(folder), "not a kit run dir", "notes.txt")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_fresh_beside_a_recipe_that_is_training_moves_nothing(tiny_recipe, tiny_data, tmp_path, capsys):
    """Another `kit recipe run` of the same --runs trains b; a finished a moved aside under it would
    leave that recipe nothing to predict (it ended with "a/config.toml: missing")."""
    recipe = tiny_recipe("a", "b")
    root = tmp_path / "runs" / "tiny"
    (root / "a").mkdir(parents=True)
    (root / "a" / "summary.json").write_text("{}\n")
    (root / "b").mkdir()
    with run_lock(root / "b"):
        before = snapshot(tmp_path / "runs")
        for only in ([], ["--only", "a"]):          # probe 13: --only a checked a alone, and moved it
            one_error(*kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "runs",
                               "--fresh", "--no-progress", *only)[::2],
                      f"{root / 'b'}: a trainer (pid {os.getpid()}) is working on this member now", "nothing was moved")
    after = snapshot(tmp_path / "runs")
    assert after.pop("tiny/.recipe.lock", b"") == b"" and after == before    # only the recipe's (empty) lock file


def test_a_second_recipe_run_of_the_same_members_is_refused_before_its_trainers_start(tiny_recipe, tiny_data,
                                                                                        tmp_path, capsys):
    """Probe 57 F1: a second `kit recipe run` started before the first one's trainers took their .lock passed its
    checks; its trainer's refusal went into the running member's train.log, reported as "member a failed (exit 2)"."""
    from kit.runs import member_claims

    recipe = tiny_recipe("a", "b", base={"train": {"max_steps": 4, "eval_every": 2}})
    root = tmp_path / "runs" / "tiny"
    root.mkdir(parents=True)
    with member_claims(root) as claim:          # the first run, its workers not yet started
        claim(["a", "b"])
        one_error(*kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "runs",
                           "--no-progress")[::2],
                  f"{root / 'a'}: another `kit recipe run` (pid {os.getpid()}) is training this member now")
        assert not (root / "a").exists() and not (root / "b").exists()        # no member.toml, no train.log
    code, _, err = kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "runs",
                           "--no-progress")
    assert code == 0 and (root / "a" / "summary.json").is_file(), err       # the first run gone: trained
