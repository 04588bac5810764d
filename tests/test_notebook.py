"""kit in a notebook: a read-only data dir trains and predicts with its cache elsewhere; the
competition under /kaggle/input is found without --data; progress bars pick the notebook's
kind; `--max-hours` stops members cleanly and a re-run continues them."""
from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

import kit.env
from kit.cli import main
from kit.env import cache_dir, kaggle_data_dir, progress_visible
from kit.recipe import ensure_data
from kit.timeplan import Deadline
from kit.zoo import run_recipe

TRAIN_SMALL = ["--no-progress", "--set", "data.segment_len=48", "--set", "data.store_dtype=float32",
               "--set", "model.d_model=16", "--set", "model.ffn_dim=32", "--set", "train.max_steps=12",
               "--set", "train.eval_every=6", "--set", "train.batch_size=16", "--set", "train.cpu_threads=1"]

@pytest.fixture
def nb_recipe(tiny_recipe):
    """Two tiny members that predict and vote after training (conftest: tiny_recipe)."""
    return tiny_recipe("first", {"name": "second", "model.pooling": "sap"}, name="nb", file="nb.toml",
                       base={"train": {"lr": 1e-3, "eval_every": 5}}, budget={"quick": {"train.max_steps": 10}},
                       after={"predict": True, "ensemble": "hard"})


@pytest.fixture(autouse=True)
def no_kaggle(tmp_path, monkeypatch):
    """No cache choice or Kaggle dirs from the machine running the tests."""
    monkeypatch.delenv("KIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KIT_KAGGLE_WORKING", str(tmp_path / "no-kaggle-working"))
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "no-kaggle-input"))


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def read_only_data(tiny_data, tmp_path, monkeypatch):
    """A copy of the tiny competition that cannot be written (chmod -R a-w; as root, where
    chmod does not stop writes, kit is also told the dir is not writable)."""
    data = Path(shutil.copytree(tiny_data, tmp_path / "input" / "tiny", ignore=shutil.ignore_patterns(".kit-cache")))
    for p in [data, *data.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    if os.access(data, os.W_OK):
        real = kit.env.writable
        monkeypatch.setattr(kit.env, "writable", lambda path: real(path) and data not in Path(path).parents
                            and Path(path) != data)
    yield data
    for p in [data, *data.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_data_dir_trains_and_predicts_with_its_cache_elsewhere(read_only_data, tmp_path, capsys):
    before = files_under(read_only_data)
    run = tmp_path / "runs" / "ro"
    assert main(["train", "--data", str(read_only_data), "--out", str(run), *TRAIN_SMALL]) == 0
    assert main(["predict", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"{read_only_data} is read-only: its packed store and split go to {tmp_path / 'xdg' / 'kit'}" in err
    assert err.count("is read-only") == 1                   # one line, not one per store opening
    assert files_under(read_only_data) == before            # nothing written beside the data
    stores = list((tmp_path / "xdg" / "kit").glob("tiny-*/store-*"))
    assert stores and list(stores[0].glob("split-*.json"))
    assert (run / "test_probs.npy").is_file()


def test_cache_choice_and_the_kaggle_working_dir(read_only_data, tmp_path, monkeypatch, capsys):
    working = tmp_path / "kaggle" / "working"
    working.mkdir(parents=True)
    monkeypatch.setenv("KIT_KAGGLE_WORKING", str(working))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    monkeypatch.setattr("tempfile.tempdir", None)                  # gettempdir() reads TMPDIR again
    where, note = cache_dir(read_only_data)
    # not /kaggle/working, which every saved version keeps (probe 16: 2.8 GiB of store each time)
    assert where.parent == tmp_path / "scratch" / "kit-cache" and where.name.startswith("tiny-")
    assert "read-only" in note and str(where) in note
    assert cache_dir(tmp_path)[0] == tmp_path / ".kit-cache"       # writable: beside the data, no line

    chosen = tmp_path / "mine"
    assert main(["data", "info", str(read_only_data), "--cache", str(chosen)]) == 0
    assert f"cache        {chosen}/tiny-" in capsys.readouterr().out
    assert "KIT_CACHE" not in os.environ                            # --cache lasts one command


@pytest.mark.slow
def test_recipe_workers_inherit_cache_and_max_hours(read_only_data, nb_recipe, tmp_path, monkeypatch, capsys):
    """Two worker processes: `--cache` reaches them; the one member granted a sliver of time by
    the --max-hours deadline checkpoints and stops, the other is not started."""
    grants = [1e-6]
    monkeypatch.setattr(Deadline, "member_minutes", lambda self, name, log, **kw: grants.pop() if grants else None)
    recipe = nb_recipe
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    assert main(["recipe", "run", str(recipe), "--data", str(read_only_data), "--runs", str(runs), "--workers", "2",
                 "--cache", str(cache), "--max-hours", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "stopped at its time limit" in out and "not started" in out and "to continue: 2 member(s)" in out
    assert "csv:" not in out                                        # the vote waits for every member
    assert "max_minutes = 1e-06" in (runs / "nb" / "first" / "config.toml").read_text()
    assert list(cache.glob("tiny-*/store-*")) and not (read_only_data / ".kit-cache").exists()
    assert not (runs / "nb" / "second" / "last.pt").exists()


def test_max_hours_stops_members_cleanly_and_a_rerun_continues(tiny_data, nb_recipe, tmp_path, monkeypatch):
    recipe = nb_recipe
    runs, subs = tmp_path / "runs", tmp_path / "subs"
    grants = [1e-6]                      # the first member gets a sliver of time, the second none
    with monkeypatch.context() as m:
        m.setattr(Deadline, "member_minutes", lambda self, name, log, **kw: grants.pop() if grants else None)
        logs: list[str] = []
        first = run_recipe(recipe, data=str(tiny_data), runs=str(runs), workers=1, progress=False, log=logs.append,
                           submissions=subs, max_hours=5)
    assert [m.note for m in first.members] == ["stopped at its time limit (re-run continues)",
                                                     "not started (--max-hours; re-run continues)"]
    assert first.members[0].step < 10 and (runs / "nb" / "first" / "last.pt").is_file()
    assert "re-run the same command" in first.resume and first.ensemble is None
    assert not list(subs.glob("*.csv"))

    logs = []
    again = run_recipe(recipe, data=str(tiny_data), runs=str(runs), workers=1, progress=False, log=logs.append,
                       submissions=subs, max_hours=5)
    assert "training first -> " + str(runs / "nb" / "first") + " (resuming)" in logs
    assert [m.step for m in again.members] == [10, 10] and again.resume is None
    assert again.ensemble.csv and Path(again.ensemble.csv).is_file()


def test_a_deadline_gives_each_member_what_is_left(monkeypatch):
    from kit.timeplan import AFTER_SECONDS, MIN_MEMBER_SECONDS, START_SECONDS, STOP_SHARE

    logs: list[str] = []
    deadline = Deadline(1.0, time.time(), own={"capped": 5.0})
    left = 1800.0
    monkeypatch.setattr(Deadline, "seconds_left", lambda self: left)
    expected = (left - AFTER_SECONDS - START_SECONDS) * (1 - STOP_SHARE) / 60
    assert deadline.member_minutes("free", logs.append) == pytest.approx(expected)
    assert deadline.member_minutes("capped", logs.append) == 5.0           # its own train.max_minutes
    predicting = Deadline(1.0, time.time(), predict={"a": 100.0, "b": 50.0, "third": 150.0})
    assert predicting.member_minutes("third", logs.append, predicting=["a", "b", "third"]) == pytest.approx(
        expected - 300 * (1 - STOP_SHARE) / 60)                             # three predicted at the end
    assert predicting.member_minutes("b", logs.append) == pytest.approx(   # in a worker: its own
        expected - 50 * (1 - STOP_SHARE) / 60)
    left = AFTER_SECONDS + START_SECONDS + MIN_MEMBER_SECONDS / 2
    assert deadline.member_minutes("late", logs.append) is None
    assert "late: not started" in logs[-1] and "re-run the same command" in logs[-1]


def test_the_competition_under_kaggle_input_is_found_without_data(tiny_data, tmp_path, monkeypatch):
    root = tmp_path / "kaggle" / "input"
    (root / "some-other-dataset" / "files").mkdir(parents=True)
    (root / "some-other-dataset" / "files" / "notes.txt").write_text("not a competition")
    data = Path(shutil.copytree(tiny_data, root / "ml2022spring-hw4" / "Dataset",
                                ignore=shutil.ignore_patterns(".kit-cache")))
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(root))
    logs: list[str] = []
    assert kaggle_data_dir() == data
    assert ensure_data(None, logs.append) == data and str(data) in logs[0]
    assert ensure_data(str(tiny_data), logs.append) == tiny_data            # --data wins

    deep = Path(shutil.copytree(data, root / "a" / "b" / "c" / "d"))
    shutil.rmtree(data)
    assert deep.is_dir() and kaggle_data_dir() is None                     # too deep to be searched
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "absent"))
    assert kaggle_data_dir() is None


@pytest.mark.parametrize("env, visible", [
    ({}, False),                                                # a pipe, as in CI
    ({"JPY_PARENT_PID": "1"}, True),                            # `!kit ...` in a Jupyter notebook cell
    ({"COLAB_RELEASE_TAG": "x"}, True),
    ({"JPY_PARENT_PID": "1", "KAGGLE_KERNEL_RUN_TYPE": "Batch"}, False),   # a saved Kaggle run's log
    ({"KIT_PROGRESS": "1"}, True),
])
def test_progress_bars_show_in_terminals_and_notebooks(env, visible, monkeypatch):
    for name in ("JPY_PARENT_PID", "COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE", "KIT_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert progress_visible() is visible


def test_progress_bars_are_the_plain_kind_outside_a_notebook():
    import tqdm.auto
    import tqdm.std

    assert issubclass(tqdm.auto.tqdm, tqdm.std.tqdm)             # tqdm's console bar (asyncio-capable)
    assert "notebook" not in tqdm.auto.tqdm.__module__          # not the widget, which needs a kernel
