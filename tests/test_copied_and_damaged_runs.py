"""Probe 51: another run's checkpoints copied in together with their checkpoints.json, a damaged
metrics.csv, a folder the OS cannot make, a stand-in URL carrying a password. Each is refused in one
line naming the file, never voted, printed or kept."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from kit.errors import KitError, path_problem

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


@pytest.mark.parametrize("which", ["data", "run", "submissions", "recipe"])
def test_runs_that_is_a_data_dir_a_run_dir_or_submissions_is_refused(two_runs, data, tmp_path, capsys,
                                                                     tiny_recipe, which):
    """F4: `--runs` took the data dir, a member's run dir or submissions/ and trained into it without a word.
    Probe 52 F5: `--runs runs/tiny`, a recipe's own folder, trained another recipe in runs/tiny/tiny."""
    from kit.runs import RECIPE_LOCK

    sub = tmp_path / "submissions"
    sub.mkdir()
    (sub / "ledger.csv").write_text("time,competition,file,sha256,message,ref,status,public,private\n")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / RECIPE_LOCK).write_text("")
    runs = {"data": data, "run": two_runs[0], "submissions": sub, "recipe": tmp_path / "runs" / "tiny"}[which]
    before = sorted(p.name for p in Path(runs).iterdir())
    code, _, err = kit_cli(capsys, "recipe", "run", tiny_recipe, "--data", data, "--runs", runs)
    one_error(code, err, f"--runs {runs}: a ", *([f"--runs {tmp_path / 'runs'}"] if which == "recipe" else []))
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
