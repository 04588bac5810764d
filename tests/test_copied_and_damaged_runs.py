"""Probe 51: another run's checkpoints copied in together with their checkpoints.json, a damaged
metrics.csv, a folder the OS cannot make, a stand-in URL carrying a password. Each is refused in one
line naming the file, never voted, printed or kept."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from kit.errors import KitError, path_problem
from kit.rundir import RunDir

from conftest import kit_cli, one_error, train_tiny_run


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    from kit.data import FeatureStore

    store = FeatureStore.open(tiny_data, "float32", cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    root = tmp_path_factory.mktemp("runs")
    return train_tiny_run(store, root / "a"), train_tiny_run(store, root / "b")


def test_checkpoints_copied_in_with_their_record_are_refused(two_runs, tmp_path, capsys):
    """F1: best.pt, last.pt and checkpoints.json of another run copied into a member passed every check,
    and a recipe re-run predicted, voted and sent them as that member."""
    from kit.written import check_written

    a, b = (Path(shutil.copytree(run, tmp_path / run.name)) for run in two_runs)
    check_written(a / "best.pt")                            # the run's own files pass
    for name in ("best.pt", "last.pt", "checkpoints.json"):
        shutil.copy(b / name, a / name)
    with pytest.raises(KitError, match="written by another run than this one's identity.json"):
        check_written(a / "best.pt")
    check_written(b / "best.pt")                            # in their own run they still pass
    assert (a / "summary.json").read_bytes() != (b / "summary.json").read_bytes()
    with pytest.raises(KitError, match="written by another run"):      # probe 54 F5: a recipe said a's own
        RunDir(a).summary_problem()                 # summary.json "cannot be read" and that a resumes, first
    code, _, err = kit_cli(capsys, "predict", a)
    one_error(code, err, str(a / "checkpoints.json"), "another run's checkpoints copied in")


def test_a_damaged_metrics_csv_is_one_line_on_resume(two_runs, tmp_path, capsys):
    """F2: an empty, re-headed or binary metrics.csv made `kit train --resume` end in pandas' traceback."""
    from kit.train.results import read_metrics

    run = Path(shutil.copytree(two_runs[0], tmp_path / "r"))
    assert [m["step"] for m in read_metrics(run / "metrics.csv")] == [15, 30]
    for text, why in ((b"", "No columns"), (b"step,foo\n1,2\n", "no val_acc column"),
                      (b"step,val_acc\n1,x\n", "val_acc not numbers"), (b"\x00\xffgarbage{[", "damaged")):
        (run / "metrics.csv").write_bytes(text)
        with pytest.raises(KitError, match=why):
            read_metrics(run / "metrics.csv")
    code, _, err = kit_cli(capsys, "train", "--resume", "--out", run, "--set", "train.max_steps=45")
    one_error(code, err, f"{run / 'metrics.csv'}: damaged", "remove it")


def test_a_folder_the_os_says_cannot_be_found_or_made_is_one_line():
    """F3: mkdir under /proc fails with ENOENT, which was not among the path errors made one line."""
    line = path_problem(FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/x"))
    assert line == "/proc/x: no such file or folder, or one cannot be made there"


def test_a_stand_in_url_with_a_password_is_refused_and_never_shown(kaggle_env, standin, sub, capsys):
    """F6: `--endpoint http://user:pw@host:port` printed the password and kept it in the ledger."""
    host = standin.url.split("//", 1)[1]
    code, out, err = kit_cli(capsys, "submit", sub, "-m", "x", "--ledger", sub.parent / "ledger.csv",
                             "--endpoint", f"http://probe:secretpw@{host}")
    one_error(code, err, "a user, password or query in it")
    assert "secretpw" not in out + err and not standin.submissions and not (sub.parent / "ledger.csv").exists()
    code, out, err = kit_cli(capsys, "submit", sub, "-m", "x", "--ledger", sub.parent / "ledger.csv",
                             "--endpoint", f"http://{host}/?key=SECRET")                  # probe 52 F6
    one_error(code, err, "a user, password or query in it")
    assert "SECRET" not in out + err and not standin.submissions


@pytest.mark.parametrize("which", ["data", "run", "submissions", "recipe", "recipe's copy"])
def test_runs_that_is_a_data_dir_a_run_dir_or_submissions_is_refused(two_runs, data, tmp_path, capsys,
                                                                     tiny_recipe, which):
    """F4: `--runs` took the data dir, a member's run dir or submissions/ and trained into it without a word.
    Probe 52 F5: `--runs runs/tiny`, a recipe's own folder, trained another recipe in runs/tiny/tiny; probe 53
    F2: the same folder without its lock (its member run dirs copied by hand) as well."""
    from kit.runs import RECIPE_LOCK

    sub = tmp_path / "submissions"
    sub.mkdir()
    (sub / "ledger.csv").write_text("time,competition,file,sha256,message,ref,status,public,private\n")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / RECIPE_LOCK).write_text("")
    shutil.copytree(two_runs[0], tmp_path / "copy" / "tiny" / "mean")
    runs = {"data": data, "run": two_runs[0], "submissions": sub, "recipe": tmp_path / "runs" / "tiny",
            "recipe's copy": tmp_path / "copy" / "tiny"}[which]
    before = sorted(p.name for p in Path(runs).iterdir())
    code, _, err = kit_cli(capsys, "recipe", "run", tiny_recipe(), "--data", data, "--runs", runs)
    above = {"recipe": [f"--runs {tmp_path / 'runs'}"], "recipe's copy": ["member mean", f"--runs {tmp_path / 'copy'}"]}
    one_error(code, err, f"--runs {runs}: ", *above.get(which, []))
    assert sorted(p.name for p in Path(runs).iterdir()) == before


def test_a_checkpoint_its_runs_record_has_no_entry_for_is_refused_and_an_older_record_is_entered(two_runs, tmp_path):
    """Probe 40: a checkpoint on disk that checkpoints.json has no entry for passed (another run's avg.pt
    copied into a run that never averaged). Probe 52: another run's checkpoints with an older kit's record
    (no run id) passed. A record that names its run has an entry for every checkpoint the run wrote; an
    older run, resumed, has its record named (with entries for what it let pass) before its identity.json
    gains an id, so its own checkpoints are never refused."""
    import json

    from kit.written import RUN_KEY, check_written, write_identity

    a, b = (Path(shutil.copytree(run, tmp_path / run.name)) for run in two_runs)
    shutil.copy(b / "best.pt", a / "avg.pt")
    with pytest.raises(KitError, match="checkpoints.json has no entry for it"):
        check_written(a / "avg.pt")
    (a / "avg.pt").unlink()
    record, identity = (json.loads((a / name).read_text()) for name in ("checkpoints.json", "identity.json"))
    (a / "checkpoints.json").write_text(json.dumps({"last.pt": record["last.pt"]}))    # an older kit's record
    with pytest.raises(KitError, match="written by another run"):      # beside an identity with a run id: not
        check_written(a / "best.pt")                                   # the run's own (copied in, or edited)
    (a / "identity.json").write_text(json.dumps({k: v for k, v in identity.items() if k != "run"}))
    check_written(a / "best.pt")                        # an older kit's run: no id, no entry: passes, as it did
    write_identity(a, {**identity, "run": "0" * 32})    # resumed by this kit: the record is named first
    upgraded = json.loads((a / "checkpoints.json").read_text())
    assert upgraded[RUN_KEY] == "0" * 32 and upgraded["best.pt"] == record["best.pt"]
    assert json.loads((a / "identity.json").read_text())["run"] == "0" * 32
    check_written(a / "best.pt")
    check_written(a / "last.pt")


def test_a_summary_its_training_did_not_write_is_not_taken_for_the_end_of_training(tiny_data, tmp_path):
    """Probe 53 F1: a well-formed summary.json written by hand into a member killed at step 235 of 400 made it
    "already finished": predicted from its checkpoint, voted, tabled at 400 steps. checkpoints.json now holds
    the digest of each summary its training wrote; any other is not the run's end, and the run resumes."""
    import json

    from kit.config import layered
    from kit.train import train
    from kit.written import SUMMARIES, SUMMARY, WRITTEN

    base = {"data": {"data_dir": str(tiny_data), "segment_len": 32, "store_dtype": "float32"},
            "model": {"d_model": 16, "ffn_dim": 32, "n_heads": 2},
            "train": {"batch_size": 8, "max_steps": 20, "eval_every": 5, "cpu_threads": 1}}
    run_dir, run = tmp_path / "m", RunDir(tmp_path / "m")
    train(layered(("test", base)), run_dir, progress=False, stop_after=7)
    forged = {"name": "m", "step": 20, "total_steps": 20, "stopped_reason": "budget", "best_val_acc": 0.9}
    (run_dir / SUMMARY).write_text(json.dumps(forged))
    assert not run.finished and "not the summary this run's training wrote" in run.summary_problem()
    assert "has no entry for it" in run.summary_problem()
    assert train(layered(("test", base)), run_dir, resume=True, progress=False)["step"] == 20
    assert run.finished and run.summary()["step"] == 20
    (run_dir / SUMMARY).write_text(json.dumps({**run.summary(), "best_val_acc": 0.99}))
    assert not run.finished and "has another digest for it" in run.summary_problem()
    record = json.loads((run_dir / WRITTEN).read_text())           # an older kit's record: no word on summaries
    (run_dir / WRITTEN).write_text(json.dumps({k: v for k, v in record.items() if k != SUMMARIES}))
    assert not run.finished          # probe 54 F6: an entry for summary.json alone says summaries are recorded
    (run_dir / WRITTEN).write_text(json.dumps({k: v for k, v in record.items() if k not in (SUMMARIES, SUMMARY)}))
    assert run.finished and run.summary_problem() is None


def test_checkpoints_copied_in_with_the_record_deleted_are_refused(two_runs, tmp_path, capsys):
    """Probe 53 F3: another run's best.pt and last.pt copied in and checkpoints.json deleted passed as a run of an
    older kit (no record) and were voted. identity.json's run id says this kit trained it, and this kit records
    every checkpoint: no record is a lost one. An older kit's run (no run id, no record) still passes."""
    import json

    from kit.identity import IDENTITY
    from kit.records import PredictionIds, foreign_predictions
    from kit.written import WRITTEN, check_written

    a, b = (Path(shutil.copytree(run, tmp_path / run.name)) for run in two_runs)
    assert kit_cli(capsys, "predict", b, "--no-progress")[0] == 0
    record = (b / WRITTEN).read_bytes()
    (b / WRITTEN).unlink()          # a reader of predictions says the record is lost (probe 54 F4: "records another")
    assert "checkpoints.json: missing or empty, while identity.json names the run" in \
        foreign_predictions(b, PredictionIds.load(b))
    (b / WRITTEN).write_bytes(record)
    for name in ("best.pt", "last.pt"):
        shutil.copy(b / name, a / name)
    for lost in ("deleted", "emptied"):
        if lost == "deleted":
            (a / WRITTEN).unlink()
        else:
            (a / WRITTEN).write_text("{}")
        with pytest.raises(KitError, match="checkpoints.json: missing or empty, while identity.json names the run"):
            check_written(a / "best.pt")
        code, _, err = kit_cli(capsys, "predict", a)
        one_error(code, err, str(a / WRITTEN), "cannot be told from another run's")
    identity = json.loads((a / IDENTITY).read_text())
    (a / IDENTITY).write_text(json.dumps({k: v for k, v in identity.items() if k != "run"}))
    check_written(a / "best.pt")                    # an older kit's run: nothing to tell it by


def test_a_damaged_records_last_way_on_leads_on(two_runs, tmp_path):
    """Probe 54 F2: a damaged checkpoints.json said "delete the record to skip their check", and the run, whose
    identity.json names it, was then refused as a lost record. The advice now names the run id too."""
    import json

    from kit.identity import IDENTITY
    from kit.written import WRITTEN, check_written

    a = Path(shutil.copytree(two_runs[0], tmp_path / "a"))
    (a / WRITTEN).write_text("[]")
    with pytest.raises(KitError, match="delete the record and the \"run\" entry of its identity.json") as said:
        check_written(a / "best.pt")
    assert str(said.value).startswith(f"{a / WRITTEN}: ")
    (a / WRITTEN).unlink()                                       # the advice, followed
    identity = json.loads((a / IDENTITY).read_text())
    (a / IDENTITY).write_text(json.dumps({k: v for k, v in identity.items() if k != "run"}))
    check_written(a / "best.pt")


def test_a_kill_while_a_summary_is_written_leaves_one_the_record_accepts(tiny_data, tmp_path, monkeypatch):
    """Probe 54 F3: a kill between summary.json and its record left the run's own summary taken for one
    written by hand. The new digest is recorded beside the old before the file is written, alone after."""
    import json

    import kit.written
    from kit.config import layered
    from kit.train import train

    base = {"data": {"data_dir": str(tiny_data), "segment_len": 32, "store_dtype": "float32"},
            "model": {"d_model": 16, "ffn_dim": 32, "n_heads": 2},
            "train": {"batch_size": 8, "max_steps": 10, "eval_every": 5, "cpu_threads": 1}}
    run_dir, run = tmp_path / "m", RunDir(tmp_path / "m")
    train(layered(("test", base)), run_dir, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    real_record = kit.written.record_written

    def write_killed(path, data):
        raise KeyboardInterrupt                     # killed before the new summary is in place

    def record_killed(path, digest=None, keep=False):
        if not keep:
            raise KeyboardInterrupt                 # killed after it is in place, before its digest is alone
        real_record(path, digest, keep)

    for name, killed in (("write_bytes", write_killed), ("record_written", record_killed)):
        with monkeypatch.context() as patch:
            patch.setattr(kit.written, name, killed)
            with pytest.raises(KeyboardInterrupt):
                kit.written.write_summary(run_dir, {**summary, "seconds": summary["seconds"] + 1})
        assert run.finished and run.summary_problem() is None, name       # the old summary, or the new one
    assert run.summary()["seconds"] == summary["seconds"] + 1


def test_a_renamed_copy_of_a_recipes_folder_is_refused_by_its_members_settings(two_runs, data, tmp_path, capsys,
                                                                               tiny_recipe):
    """Probe 55: `cp -r runs/zoo v2/other` (its .recipe.lock left out); `kit recipe run zoo --runs v2/other`
    trained a second zoo in v2/other/zoo beside the copied members: the check went by the folder's name only.
    The members' own identity.json (the recipe's settings at the budget they record) tells a copy under any
    name; a `kit train` run that only shares a member's name is no copy and is not refused."""
    from kit.members import trained_as_members
    from kit.recipe import load_recipe

    recipe_file = tiny_recipe("mean", {"name": "sap", "model.pooling": "sap"}, budget={"quick": {"train.max_steps": 4}},
                              after={"predict": False})
    code, _, err = kit_cli(capsys, "recipe", "run", recipe_file, "--data", data, "--runs", tmp_path / "runs",
                           "--no-progress")
    assert code == 0, err
    recipe = load_recipe(recipe_file)
    assert trained_as_members(tmp_path / "runs" / "tiny", recipe) == ["mean", "sap"]
    renamed = tmp_path / "v2" / "other"
    shutil.copytree(tmp_path / "runs" / "tiny", renamed, ignore=shutil.ignore_patterns(".*"))  # its lock left out
    before = sorted(p.name for p in renamed.iterdir())
    code, _, err = kit_cli(capsys, "recipe", "run", recipe_file, "--data", data, "--runs", renamed, "--no-progress")
    one_error(code, err, f"--runs {renamed}: ", "member(s) mean, sap", "rename the folder to tiny",
              f"--runs {tmp_path / 'v2'}")
    assert sorted(p.name for p in renamed.iterdir()) == before
    # Probe 56 MED 1: the recipe edited after the copy (no member's settings match the copied runs) trained a new
    # zoo nested in the copy; the member.toml a recipe writes into each member's folder still tells it.
    edited = tiny_recipe("mean", {"name": "sap", "model.pooling": "sap"}, budget={"quick": {"train.max_steps": 6}},
                         after={"predict": False}, file="edited.toml")
    assert trained_as_members(renamed, load_recipe(edited)) == []
    code, _, err = kit_cli(capsys, "recipe", "run", edited, "--data", data, "--runs", renamed, "--no-progress")
    one_error(code, err, f"--runs {renamed}: a recipe's own folder or a copy of one", "mean, sap",
              "member.toml", f"--runs {tmp_path / 'v2'}")
    assert sorted(p.name for p in renamed.iterdir()) == before
    shutil.rmtree(renamed / "sap")
    shutil.rmtree(renamed / "mean")
    shutil.copytree(two_runs[0], renamed / "mean")          # a `kit train` run named as a member: other settings
    assert trained_as_members(renamed, recipe) == []
    code, _, err = kit_cli(capsys, "recipe", "run", recipe_file, "--data", data, "--runs", renamed, "--no-progress")
    assert code == 0, err                                   # no member.toml: a folder of the user's own runs
    assert (renamed / "tiny" / "mean" / "member.toml").is_file() and not (renamed / "mean" / "member.toml").exists()


def test_a_fresh_start_over_a_run_whose_summary_cannot_be_read_does_not_call_it_finished(tmp_path):
    """Left from session 36: `kit train` into a run whose summary.json is damaged was refused as "a finished
    run" with no --resume offered, while that run is not finished (a resume trains it on)."""
    from kit.runs import check_start

    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"weights")
    (run / "summary.json").write_text("{bad")
    with pytest.raises(KitError, match=r"holds a run whose summary.json cannot be read; --resume to continue it, or "):
        check_start(run, resume=False)
    (run / "summary.json").write_text('{"step": 4, "stopped_reason": "budget"}')
    with pytest.raises(KitError, match=r"holds a finished run; start over with --fresh"):
        check_start(run, resume=False)
    # Session 38: a run that stopped at a session's time limit (--max-hours) is not finished either (a re-run
    # resumes it, kit.rundir.RunDir.finished): it was called "a finished run", with no --resume offered.
    (run / "summary.json").write_text('{"step": 4, "stopped_reason": "time"}')
    with pytest.raises(KitError, match=r"holds an unfinished run \(it stopped at its session's time limit\); "
                                       r"--resume to continue it, or "):
        check_start(run, resume=False)


def test_a_member_whose_summary_is_not_finished_and_has_no_last_pt_is_refused_before_training(data, tmp_path, capsys,
                                                                                             tiny_recipe):
    """Session 38: a member whose summary.json says it stopped at a session's time limit (or cannot be read)
    is not finished, so the recipe resumes it; with its last.pt gone it cannot. The members' check said so only
    of a run with no summary at all (it took any summary.json for "finished"), so the recipe went on to the
    member's trainer."""
    recipe_file = tiny_recipe("mean", budget={"quick": {"train.max_steps": 4}}, after={"predict": False})
    code, _, err = kit_cli(capsys, "recipe", "run", recipe_file, "--data", data, "--runs", tmp_path / "runs",
                           "--no-progress")
    assert code == 0, err
    member = tmp_path / "runs" / "tiny" / "mean"
    summary = json.loads((member / "summary.json").read_text())
    (member / "summary.json").write_text(json.dumps({**summary, "stopped_reason": "time"}))    # by hand: not read
    (member / "last.pt").unlink()
    kept = sorted(p.name for p in member.iterdir())
    code, _, err = kit_cli(capsys, "recipe", "run", recipe_file, "--data", data, "--runs", tmp_path / "runs",
                           "--no-progress")
    one_error(code, err, f"{member}/last.pt: missing, so member mean cannot resume (its best.pt is kept)", "--fresh")
    assert sorted(p.name for p in member.iterdir()) == kept
