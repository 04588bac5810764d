"""Fault injection, as a careless-but-realistic user would: what kit promises back (README, "What
kit promises"): nothing stale, nothing orphaned, nothing lost; a problem is one line and exit 2."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kit.cli import main
from kit.data import FeatureStore
from kit.errors import KitError
from kit.kaggle import append_ledger, read_ledger, update_ledger
from kit.runs import run_lock
from kit.train import load_model
from kit.workers import run_slots
from kit.zoo import run_recipe

from conftest import garbage, kit_cli, kit_env, one_error, process_alive

MEMBERS = ("mean", "sap")


@pytest.fixture
def write_recipe(tiny_recipe):
    """write_recipe(max_steps=10, eval_every=5, lr=3e-3, members=MEMBERS) -> a tiny recipe's path
    (the same path each call): the members train on a quick budget, no prediction after."""

    def write(max_steps: int = 10, eval_every: int = 5, lr: float = 3e-3, members=MEMBERS) -> Path:
        member_tables = [{"name": name, **({"model.pooling": "sap"} if name == "sap" else {})} for name in members]
        return tiny_recipe(*member_tables, base={"train": {"lr": lr, "max_steps": max_steps, "eval_every": eval_every}},
                           budget={"quick": {}, "full": {}})

    return write


def change_a_feature_file(data: Path, value: float | None = None) -> Path:
    """Replace one training feature file in place (json untouched): scaled, or filled with `value`."""
    meta = json.loads((data / "metadata.json").read_text())
    path = data / next(iter(meta["speakers"].values()))[0]["feature_path"]
    x = torch.load(path, weights_only=True)
    torch.save(x * 1.5 if value is None else torch.full_like(x, value), path)
    return path


TRAIN_SMALL = ["--set", "model.d_model=16", "--set", "model.ffn_dim=32", "--set", "data.segment_len=48",
               "--set", "data.store_dtype=float32", "--set", "train.eval_every=5", "--set", "train.warmup_steps=2",
               "--set", "train.cpu_threads=1", "--set", "train.max_steps=10", "--no-progress"]


@pytest.fixture
def trained(tiny_data, tmp_path, capsys) -> Path:
    """A finished 10-step `kit train` run dir."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *TRAIN_SMALL]) == 0
    capsys.readouterr()
    return run


# ---------------------------------------------------------------- 1. stale members
@pytest.mark.slow
def test_recipe_reuses_a_member_only_for_the_same_data_settings_and_budget(write_recipe, data, tmp_path, capsys):
    recipe, runs = write_recipe(members=("mean",)), tmp_path / "runs"
    run = ["recipe", "run", recipe, "--runs", runs, "--workers", 1, "--no-progress"]
    assert kit_cli(capsys, *run, "--data", data)[0] == 0
    moved = Path(shutil.copytree(data, tmp_path / "moved", ignore=shutil.ignore_patterns(".kit-cache")))
    code, out, err = kit_cli(capsys, *run, "--data", moved, "--member-minutes", 5)
    assert code == 0 and "finished earlier" in out      # same content elsewhere; a time budget is not identity

    change_a_feature_file(moved)        # probe 45: said as the two paths, as if the move were the change
    line = one_error(*kit_cli(capsys, *run, "--data", moved)[::2], "runs/tiny/mean", "data (the contents of its "
                     f"feature files changed; the dir moved too: {data.resolve()} -> {moved.resolve()})", "--fresh",
                     "--runs OTHER")
    assert "json" not in line
    assert "budget quick" not in line and "train." not in line
    one_error(*kit_cli(capsys, *run, "--data", data, "--budget", "full")[::2], "budget quick -> full")
    write_recipe(lr=1e-3, members=("mean",))
    one_error(*kit_cli(capsys, *run, "--data", data)[::2], "train.lr 0.003 -> 0.001")

    before = (runs / "tiny" / "mean" / "summary.json").read_text()
    code, out, err = kit_cli(capsys, *run, "--data", data, "--fresh")
    assert code == 0 and "finished earlier" not in out
    [old] = (runs).glob("tiny.old-*")
    assert (old / "mean" / "summary.json").read_text() == before and (old / "mean" / "best.pt").is_file()
    assert json.loads((runs / "tiny" / "mean" / "identity.json").read_text())["config"]["train.lr"] == 1e-3


def test_a_member_from_before_identity_json_is_judged_by_its_config(write_recipe, tiny_data, tmp_path):
    recipe, runs = write_recipe(members=("mean",)), tmp_path / "runs"
    run = dict(data=str(tiny_data), runs=str(runs), progress=False, workers=1)
    run_recipe(recipe, **run)
    identity = runs / "tiny" / "mean" / "identity.json"
    identity.unlink()
    assert run_recipe(recipe, **run).members[0].note == "finished earlier"
    assert identity.is_file()                                   # adopted: its config.toml agreed
    identity.unlink()
    write_recipe(lr=1e-3, members=("mean",))
    with pytest.raises(KitError, match=r"train.lr 0.003 -> 0.001"):
        run_recipe(recipe, **run)


def test_recipe_refuses_a_member_someone_is_training(write_recipe, tiny_data, tmp_path):
    recipe, runs = write_recipe(members=("mean",)), tmp_path / "runs"
    with run_lock(runs / "tiny" / "mean"):
        with pytest.raises(KitError, match=rf"a trainer \(pid {os.getpid()}\) is working on this member"):
            run_recipe(recipe, data=str(tiny_data), runs=str(runs), progress=False, workers=1)


# ---------------------------------------------------------------- 2. resume on other data / shape
def test_resume_refuses_other_data_and_another_model_shape(trained, data, capsys):
    last = (trained / "last.pt").read_bytes()
    change_a_feature_file(data)
    one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--data", data, "--no-progress")[::2],
              "cannot resume", "data (the contents of its feature files changed", "--fresh")
    one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress",
                       "--set", "model.d_model=32")[::2], "cannot resume", "model.d_model 16 -> 32")
    # probe 41: another split made validation hold utterances the weights had trained on, without a word
    split = (trained / "split.json").read_bytes()
    for setting, said in (("data.split_seed=7", "data.split_seed 0 -> 7"),
                          ("data.val_fraction=0.3", "data.val_fraction"), ("data.train_on_val=true", "train_on_val")):
        one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress",
                           "--set", setting)[::2], "cannot resume", said, "validation split")
    assert (trained / "split.json").read_bytes() == split
    # probe 41: fewer steps than it has trained: refused, not recorded as a run of 5 steps
    config = (trained / "config.toml").read_bytes()
    one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress",
                       "--set", "train.max_steps=5")[::2], "cannot resume with train.max_steps 5", "trained 10 steps")
    assert (trained / "config.toml").read_bytes() == config
    assert (trained / "last.pt").read_bytes() == last          # nothing was touched
    code, out, _ = kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress",
                           "--set", "train.max_steps=15")        # a longer budget is still the same run
    assert code == 0 and json.loads(out)["step"] == 15


# ---------------------------------------------------------------- 3. checkpoints
def test_resume_of_a_folder_that_is_not_there_is_refused(tiny_data, tmp_path, capsys):
    """Probe 14: a typo in --out with --resume trained a whole run from step 0 without a word."""
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "typo", "--resume",
                       *TRAIN_SMALL)[::2], f"{tmp_path / 'typo'}: no run to resume (no such folder)")
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()                           # probe 15: an empty one trained from 0 without a word
    code, _, err = kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "empty", "--resume",
                           *TRAIN_SMALL)
    assert code == 0 and "nothing to resume yet (no checkpoint): training from step 0" in err


def test_resume_without_last_pt_stops_and_keeps_best_and_summary(trained, tiny_data, capsys):
    (trained / "last.pt").unlink()
    kept = {n: (trained / n).read_bytes() for n in ("best.pt", "summary.json")}
    one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress")[::2],
              "last.pt: missing", "cannot resume", "--fresh")
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", trained, *TRAIN_SMALL)[::2],
              "holds a finished run", "--fresh")
    assert {n: (trained / n).read_bytes() for n in kept} == kept
    code, _, err = kit_cli(capsys, "train", "--data", tiny_data, "--out", trained, "--fresh", *TRAIN_SMALL)
    assert code == 0 and "old run moved to" in err
    [old] = trained.parent.glob("run.old-*")
    assert {n: (old / n).read_bytes() for n in kept} == kept and (trained / "last.pt").is_file()


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_a_damaged_checkpoint_is_one_line_naming_it(trained, capsys, damage):
    def spoil(path: Path) -> None:
        raw = path.read_bytes()
        path.write_bytes({"empty": b"", "truncated": raw[:len(raw) // 2], "random": garbage(len(raw))}[damage])

    spoil(trained / "last.pt")
    one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress")[::2],
              f"{trained / 'last.pt'}: unreadable checkpoint")
    spoil(trained / "best.pt")
    one_error(*kit_cli(capsys, "predict", trained)[::2], f"{trained / 'best.pt'}: unreadable checkpoint")
    with pytest.raises(KitError, match="best.pt: unreadable checkpoint"):
        load_model(trained, "best")


def test_temp_files_of_a_killed_save_are_cleaned_on_the_next_run(trained, capsys):
    leftovers = [trained / ".last.pt.k1ll3d.tmp", trained / ".metrics.csv.x7y8z9.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a checkpoint")
    assert kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress",
                   "--set", "train.max_steps=15")[0] == 0
    assert not any(p.exists() for p in leftovers)


# ---------------------------------------------------------------- 4. one trainer per run dir
def test_a_second_trainer_on_a_locked_run_dir_is_refused(trained, capsys):
    with run_lock(trained):
        one_error(*kit_cli(capsys, "train", "--out", trained, "--resume", "--no-progress")[::2],
                  f"another trainer (pid {os.getpid()})")


# ---------------------------------------------------------------- 5. ledger
LEDGER_HEADER = "time,competition,file,sha256,message,members,vote,ref,status,public,private,target,error\n"
LEDGER_ROW = "2026-11-21T10:00:00Z,c,a.csv,abc,first,m1,hard,101,COMPLETE,0.9,0.8,kaggle,\n"


def test_a_truncated_ledger_row_stops_scores_and_submit(tmp_path, tiny_data, tiny_answers, capsys, monkeypatch):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(LEDGER_HEADER + LEDGER_ROW + "2026-11-21T11:00:00Z,c,b.csv,def,second,m1,hard,10")
    before = ledger.read_bytes()
    one_error(*kit_cli(capsys, "scores", "--ledger", ledger, "--no-refresh")[::2], "ledger.csv: row 2", "bak-")
    sub = tmp_path / "sub.csv"                       # a valid CSV: the answer key's Id,Category
    sub.write_text("".join(",".join(line.split(",")[:2]) + "\n" for line in tiny_answers.read_text().splitlines()))
    sub.with_suffix(".json").write_text(json.dumps({"data_dir": str(tiny_data), "members": [], "vote": "hard"}))
    monkeypatch.setattr("kit.kaggle.submissions.call", lambda *a, **k: pytest.fail("sent despite a damaged ledger"))
    one_error(*kit_cli(capsys, "submit", sub, "-m", "x", "--ledger", ledger, "--endpoint", "http://127.0.0.1:9")[::2],
              "ledger.csv: row 2")                                   # a stand-in: the data is synthetic
    assert ledger.read_bytes() == before

    ledger.write_text(LEDGER_HEADER + LEDGER_ROW + "2026-11-21T11:00:00Z,c,b.csv\n")      # a row cut short
    one_error(*kit_cli(capsys, "scores", "--ledger", ledger, "--no-refresh")[::2], "row 2 has 3 fields")


def test_ledger_rewrites_keep_a_backup_and_every_field(tmp_path):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(LEDGER_HEADER.rstrip("\n") + ",note\n" + LEDGER_ROW.rstrip("\n") + ",mine\n")
    first = ledger.read_text()
    append_ledger(ledger, {"time": "t2", "competition": "c", "file": "b.csv", "ref": "102", "status": "PENDING"})
    [backup] = tmp_path.glob("ledger.csv.bak-*")
    assert backup.read_text() == first
    update_ledger(ledger, "c", "101", {"status": "COMPLETE", "public": None, "error": ""})
    rows = read_ledger(ledger).to_dict("records")
    assert rows[0]["public"] == "0.9" and rows[0]["note"] == "mine"     # nothing blanked, no column dropped
    assert rows[1]["ref"] == "102" and len(list(tmp_path.glob("ledger.csv.bak-*"))) == 2


# ---------------------------------------------------------------- 6. config values
@pytest.mark.parametrize("setting,needle", [
    ("train.batch_size=0", "train.batch_size = 0: must be > 0"),
    ("train.batch_size=-4", "train.batch_size = -4: must be > 0"),
    ("train.eval_every=0", "train.eval_every = 0: must be > 0"),
    ("train.max_steps=nan", "train.max_steps: expected an integer"),
    ("train.max_steps=inf", "train.max_steps: expected an integer"),
    ("train.lr=nan", "train.lr = nan: must be a finite number"),
    ("train.lr=inf", "train.lr = inf: must be a finite number"),
    ("data.segment_len=0", "data.segment_len = 0: must be > 0"),
    ("data.val_fraction=0", "data.val_fraction = 0.0: must be in (0, 1)"),
    ("model.dropout=1", "model.dropout = 1.0: must be in [0, 1)"),
    ("train.label_smoothing=1", "train.label_smoothing = 1.0: must be in [0, 1)"),
    ("train.minutes=-1", "train.minutes = -1.0: must be >= 0"),
    ("train.max_minutes=nan", "train.max_minutes = nan"),
])
def test_out_of_range_settings_are_one_line(tiny_data, tmp_path, capsys, setting, needle):
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "run", "--set", setting)[::2],
              needle)
    assert not (tmp_path / "run").exists()


def test_out_of_range_flags_are_one_line(tiny_data, tmp_path, capsys):
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "run", "--max-minutes", -1)[::2],
              "--max-minutes -1: must be a positive number of minutes")


def test_a_file_where_a_folder_must_go_is_one_line(tiny_data, tmp_path, capsys):
    in_the_way = tmp_path / "afile"
    in_the_way.write_text("mine")
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", in_the_way)[::2],
              f"{in_the_way}: a file is in the way")
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", in_the_way / "run")[::2],
              f"{in_the_way / 'run'}: part of the path is a file")
    assert in_the_way.read_text() == "mine"


# ---------------------------------------------------------------- 7. feature files
def test_a_feature_file_replaced_in_place_rebuilds_the_store(data):
    before = FeatureStore.open(data, "float32", progress=False)
    change_a_feature_file(data)
    after = FeatureStore.open(data, "float32", progress=False)
    assert after.root != before.root and after.content_digest != before.content_digest
    bad = change_a_feature_file(data, float("nan"))
    with pytest.raises(KitError, match=f"{bad.name}: contains NaN"):
        FeatureStore.open(data, "float32", progress=False)


# Seeded bytes, not os.urandom: the suite must not change from run to run. The second case starts
# like a pickle (PROTO opcode, an unknown protocol), so torch.load's unpickler reads past the header.
@pytest.mark.parametrize("header", [b"", b"\x80\xb9"], ids=["random", "pickle-header"])
def test_random_bytes_in_a_feature_file_are_corrupt_not_code(data, capsys, header):
    path = change_a_feature_file(data)
    path.write_bytes(header + garbage(4096))
    line = one_error(*kit_cli(capsys, "data", "check", data)[::2], path.name, "corrupt")
    assert "run code" not in line


def test_a_damaged_file_that_makes_torch_warn_is_still_one_line_in_a_real_process(data, trained):
    """In a real process (not under pytest, which captures warnings) torch's unpickler printed its
    UserWarning and source line above kit's error for a file starting like a pickle."""
    pickle_like = b"\x80\xb9" + garbage(4096)
    path = change_a_feature_file(data)
    path.write_bytes(pickle_like)
    (trained / "best.pt").write_bytes(pickle_like)
    cases = ((["data", "check", str(data)], "corrupt"), (["predict", str(trained)], "unreadable checkpoint"))
    for args, needle in cases:
        proc = subprocess.run([sys.executable, "-m", "kit", *args], env=kit_env(), capture_output=True, text=True)
        one_error(proc.returncode, proc.stderr, needle)


# ---------------------------------------------------------------- 4. worker lifetime
def _start_recipe(recipe: Path, data: Path, runs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kit", "recipe", "run", str(recipe), "--data", str(data),
                             "--runs", str(runs), "--workers", "2", "--no-progress"],
                            env=kit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)


def _sigint_default() -> None:
    """SIGINT as a terminal or a scheduler leaves it: a suite started in the background (`make test &`,
    some CI runners) inherits SIGINT ignored, and Python then keeps ignoring it in the recipe."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _trainers(runs: Path, proc: subprocess.Popen, need: str, timeout: float = 60) -> list[int]:
    """The pids of both members' trainers (from their run dirs' .lock) once each has written `need`."""
    dirs = [runs / "tiny" / name for name in MEMBERS]
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        pids = [(d / ".lock").read_text().strip() if (d / ".lock").is_file() else "" for d in dirs]
        if all(p.isdigit() for p in pids) and all((d / need).is_file() for d in dirs):
            return [int(p) for p in pids]
        time.sleep(0.02)     # polling the run dirs, not timing anything
    pytest.fail(f"the trainers did not write {need} within {timeout} s")


def _wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.05)     # polling /proc, not timing anything
    return [p for p in pids if process_alive(p)]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_the_recipe_alone_stops_its_workers(write_recipe, tiny_data, tmp_path, sig, code):
    runs = tmp_path / "runs"
    proc = _start_recipe(write_recipe(max_steps=100000, eval_every=1000), tiny_data, runs)
    pids: list[int] = []
    try:
        pids = _trainers(runs, proc, "identity.json")
        os.kill(proc.pid, sig)                  # the parent only, as a scheduler's timeout does
        try:
            # Stopping the workers takes at most 2 x 5 s of grace; 60 s leaves room for a loaded machine.
            assert proc.wait(60) == code
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the recipe still ran 60 s after {sig.name}; its stderr: {proc.communicate()[1][-2000:]}")
        assert _wait_gone(pids) == []
    finally:
        for pid in [proc.pid, *pids]:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_sigkill_of_a_two_worker_recipe_then_rerun_matches_an_uninterrupted_run(write_recipe, tiny_data, tmp_path):
    recipe = write_recipe(max_steps=120, eval_every=20)

    def finish(runs: Path) -> dict:
        proc = _start_recipe(recipe, tiny_data, runs)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return {m: json.loads((runs / "tiny" / m / "summary.json").read_text())["weights_sha1"] for m in MEMBERS}

    straight = finish(tmp_path / "straight")
    runs = tmp_path / "killed"
    proc = _start_recipe(recipe, tiny_data, runs)
    pids: list[int] = []
    try:
        pids = _trainers(runs, proc, "last.pt")
        proc.kill()                              # SIGKILL: no handler runs in the recipe
        proc.wait(30)
        assert _wait_gone(pids) == []            # the kernel took the workers down with it
        assert not all((runs / "tiny" / m / "summary.json").is_file() for m in MEMBERS)    # killed mid-run
    finally:
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert finish(runs) == straight


def test_a_member_killed_by_a_signal_is_named_as_killed_not_by_its_logs_last_line(tmp_path):
    """A worker SIGKILLed (the out-of-memory killer, or a user) leaves in train.log whatever an
    earlier session wrote last (here summary.json's closing brace): the error names the signal."""
    run_dir = tmp_path / "m"
    run_dir.mkdir()
    (run_dir / "train.log").write_text('{\n  "step": 4\n}\n')
    suicide = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    with pytest.raises(KitError) as e:
        run_slots([("m", run_dir, [suicide])], [{"label": "cpu"}], lambda line: None, [])
    assert "member m failed (killed by signal 9, SIGKILL; out of memory?)" in str(e.value)
    assert "}" not in str(e.value).split("full log")[0]


def test_a_data_change_says_what_changed_and_a_move_only_beside_it():
    """Probe 45 #2: a copied data dir with one feature file changed was reported as `data (OLD -> NEW)`,
    as if the move itself were the change (a moved dir with the same contents is the same data)."""
    from kit.identity import identity_changes

    def ident(where: str, layout: str, features: str) -> dict:
        return {"data": {"dir": where, "layout": layout, "features": features}, "config": {}, "budget": "quick"}

    assert identity_changes(ident("/a", "L", "F"), ident("/b", "L", "F")) == []
    assert identity_changes(ident("/a", "L", "F"), ident("/a", "L", "G")) == [
        "data (the contents of its feature files changed)"]
    assert identity_changes(ident("/a", "L", "F"), ident("/b", "M", "F")) == [
        "data (its metadata.json, mapping.json or testdata.json changed; the dir moved too: /a -> /b)"]
    [both] = identity_changes(ident("/a", "L", "F"), ident("/a", "M", "G"))
    assert "json changed and the contents of its feature files changed)" in both and "moved" not in both


def test_resuming_a_finished_run_says_so_and_keeps_its_summary(trained, tiny_data, capsys):
    """Probe 49 F5: `kit train --resume` on a finished run trained no step, said nothing, and rewrote
    summary.json with its achieved step rate 0.0 (and other seconds and cores)."""
    from kit.rundir import RunDir

    summary = (trained / "summary.json").read_bytes()
    for _ in range(2):      # probe 54 F1: the kept summary was not recorded; the second call called it hand-written
        code, out, err = kit_cli(capsys, "train", "--out", trained, "--resume", "--data", tiny_data, "--no-progress")
        assert code == 0 and f"{trained}: already finished at step 10" in err, err
        assert (trained / "summary.json").read_bytes() == summary and json.loads(out) == json.loads(summary)
        assert RunDir.of(trained).finished and RunDir.of(trained).summary_problem() is None
