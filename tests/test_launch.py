"""Launchers: a recipe's members trained as Kaggle kernels on the local stand-in (pushed with the real
client, really run, pulled back; errors, timeouts, quota, 429/5xx while polling) and as submitit jobs
(its LocalExecutor), then ensembled here. Each kernel is a subprocess running kit from the pushed source.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kit.cli import main
from kit.errors import KitError
from kit.kaggle.server import StandIn
from kit.launch import make_launcher
from kit.rundir import RunDir
from kit.zoo import run_recipe

from conftest import fake_kaggle_home, recipe_toml

COMP = "ml2022spring-hw4"
USER = "kit-test"
KEY = "kitfakekey-NEVER-PRINTED-7373"

ZOO = recipe_toml(["a", {"name": "b", "model.pooling": "sap"}], name="zoo", base={"train": {"eval_every": 5}},
                  budget={"quick": {"train.max_steps": 10}}, after={"predict": True, "ensemble": "hard"})


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Submissions (the ensemble's CSV) land in the test's own dir."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fake credentials in a private home; retries and polls in milliseconds; no Kaggle dirs."""
    return fake_kaggle_home(tmp_path, monkeypatch, USER, KEY,
                            clear=("KIT_CACHE", "KIT_KAGGLE_ROOT", "KIT_KAGGLE_INPUT", "KIT_KAGGLE_WORKING"),
                            KIT_KAGGLE_KERNEL_POLL="0.1")


def recipe_file(tmp_path: Path, text: str = ZOO) -> Path:
    path = tmp_path / "zoo.toml"
    path.write_text(textwrap.dedent(text))
    return path


def kit(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def recipe_args(tmp_path, tiny_data, standin, *extra):
    return ["recipe", "run", recipe_file(tmp_path), "--data", tiny_data, "--runs", tmp_path / "runs",
            "--launcher", "kaggle", "--endpoint", standin.url, "--no-progress", *extra]


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("kit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- Kaggle kernels
@pytest.mark.slow
def test_members_train_in_kernels_and_are_ensembled_here(env, standin, tiny_data, tmp_path, capsys):
    """Two kernels, one member each; 429 and 503 while polling and a 500 on an output file are retried."""
    standin.inject("GetKernelSessionStatus", 429, count=2, retry_after=0.05)
    standin.inject("GetKernelSessionStatus", 503, count=1)
    standin.inject("kernel-output", 500, count=1)
    code, out, err = kit(capsys, *recipe_args(tmp_path, tiny_data, standin))
    assert code == 0, err
    runs = tmp_path / "runs" / "zoo"
    assert "Kaggle GPU quota (local stand-in): 30.0 h of 30 h left this week" in err
    assert "this run: 2 kernel(s) x at most" in err
    assert "pushed kit-test/kit-zoo-1 version 1: a" in err and "pushed kit-test/kit-zoo-2 version 1: b" in err
    assert err.count("HTTP 429 to GetKernelSessionStatus") == 2 and "HTTP 503 to GetKernelSessionStatus" in err
    assert "HTTP 500 to download of" in err
    for member, slug in (("a", "kit-zoo-1"), ("b", "kit-zoo-2")):
        assert json.loads((runs / member / "summary.json").read_text())["step"] == 10
        assert json.loads((runs / member / "launch.json").read_text())["kernel"] == f"{USER}/{slug}"
        log = (runs / "kaggle-logs" / f"{slug}-v1.log").read_text()
        assert f"kit-src{os.sep}zoo.toml --only {member}" in log       # kit ran from the source it was pushed with
        assert "installing" not in log          # this Python has every requirement that applies to it
        assert not list((runs / member).glob(".lock"))
        config = (runs / member / "config.toml").read_text()           # pointed at the data here, not the kernel's
        assert f'data_dir = "{tiny_data}"' in config
        assert json.loads((runs / member / "ids.json").read_text())["data_dir"] == str(tiny_data.resolve())
    assert "predicting" not in err                                         # predicted in the kernels
    assert "ensemble (hard) val acc" in out and Path(out.split("csv: ")[1].split()[0]).is_file()
    state = json.loads((runs / "kaggle-kernels.json").read_text())
    assert {k["status"] for k in state["kernels"].values()} == {"COMPLETE"}
    assert KEY not in out + err + (runs / "kaggle-logs" / "kit-zoo-1-v1.log").read_text()


@pytest.mark.slow
def test_out_of_time_kernels_continue_failed_ones_are_one_line_and_a_rerun_finishes(env, standin, tiny_data,
                                                                                     tmp_path, capsys):
    """Kernel 1's first session is stopped as out of time once it has a checkpoint: kit pulls that back
    and pushes version 2 with version 1's output as input, which resumes member a from last.pt.
    Kernel 2 errors: one line, exit 2, after kernel 1 is done; the re-run trains only b."""
    standin.kernels.time_out_next(1, when_file="last.pt")
    standin.kernels.fail_next(1)
    # 600 steps, the first checkpoint at 20: the stand-in's watcher (every 0.2 s, in this process) sees last.pt
    # long before the end (at 120 steps a loaded machine once let the session finish first: a flake)
    text = ZOO.replace('train.max_steps = 10', 'train.max_steps = 600\ntrain.eval_every = 20')
    text = text.replace('name = "b"', 'name = "b"\nbudget.quick.train.max_steps = 10').replace("predict = true",
                                                                                           "predict = false")
    args = recipe_args(tmp_path, tiny_data, standin)
    args[2] = recipe_file(tmp_path, text)
    code, out, err = kit(capsys, *args)
    line = error_line(err)
    assert code == 2 and out == ""
    assert "kernel kit-test/kit-zoo-2 version 1 failed (ERROR: Kernel failed: exit code 1" in line
    assert "kaggle-logs/kit-zoo-2-v1.log" in line and "re-run the same command to continue" in line
    assert "kit-test/kit-zoo-1 version 1 ran out of time: pushing a new version to continue" in err
    assert "a checkpointed, not finished" in err
    assert "pushed kit-test/kit-zoo-1 version 2: a (continuing from its earlier output)" in err
    runs = tmp_path / "runs" / "zoo"
    second = (runs / "kaggle-logs" / "kit-zoo-1-v2.log").read_text()
    assert "continuing a from" in second and "(resuming)" in second
    assert json.loads((runs / "a" / "summary.json").read_text())["step"] == 600
    assert json.loads((runs / "a" / "launch.json").read_text())["version"] == 2
    assert not (runs / "b").exists()
    first, again = standin.kernels.sessions[f"{USER}/kit-zoo-1"]
    assert first.status == "ERROR" and "out of time" in first.message and again.status == "COMPLETE"

    code, out, err = kit(capsys, *args)
    assert code == 0, err
    assert "a: already finished" in err and "pushed kit-test/kit-zoo-2 version 2: b" in err
    assert "kit-zoo-1" not in err                                            # a is not trained again
    assert RunDir(runs / "a").finished and RunDir(runs / "b").finished


def test_a_requirement_whose_marker_leaves_it_out_of_this_python_is_not_installed(monkeypatch):
    """Every kernel started pip for "tomli>=1.1; python_version < '3.11'" on Python 3.11 and said it was
    installing tomli. A marker the kernel cannot read is left to pip."""
    from kit.launch import kernel_main

    calls: list = []
    monkeypatch.setattr(kernel_main.subprocess, "check_call", calls.append)
    major, minor = sys.version_info[:2]
    before = f"kit-gone-a; python_version < '{major}.{minor}'"
    after = f"kit-gone-b; python_version<\"{major}.{minor + 1}\""
    other = "kit-gone-c; sys_platform == 'nowhere'"
    reqs = [["kit_gone_a", before], ["kit_gone_b", after], ["kit_gone_c", other], ["json", "json"]]
    assert kernel_main.install_missing(reqs) == [after, other]
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", after, other]]
    assert kernel_main.install_missing([["kit_gone_a", before], ["json", "json"]]) == [] and len(calls) == 1


def test_no_gpu_quota_left_stops_before_pushing(env, tiny_data, tiny_answers, tmp_path, capsys):
    with StandIn(tiny_data, tiny_answers, competition=COMP, gpu_used_hours=30.0) as spent:
        code, out, err = kit(capsys, *recipe_args(tmp_path, tiny_data, spent))
        assert "SaveKernel" not in spent.calls
    line = error_line(err)
    assert code == 2 and "not enough Kaggle GPU quota: 0.0 h left this week" in line and "nothing was pushed" in line
    assert not (tmp_path / "runs" / "zoo" / "a").exists()


def test_the_stand_in_serves_kernels_to_the_bare_kaggle_client(env, standin, tmp_path):
    """`kaggle kernels push | status | output` and `kaggle quota` against the stand-in: the script runs
    with the competition under its input dir, and what it writes is the kernel's output."""
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "hello.py").write_text(textwrap.dedent("""
        import os, pathlib
        root = pathlib.Path(os.environ["KIT_KAGGLE_ROOT"])
        names = sorted(p.name for p in (root / "input" / "ml2022spring-hw4" / "Dataset").iterdir())
        (root / "working" / "seen.txt").write_text(",".join(n for n in names if n.endswith(".json")))
        print("hello from the kernel")
    """))
    (folder / "kernel-metadata.json").write_text(json.dumps(
        {"id": f"{USER}/hello-kernel", "title": "hello kernel", "code_file": "hello.py", "language": "python",
         "kernel_type": "script", "enable_gpu": True, "competition_sources": [COMP]}))
    environ = {**os.environ, "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": standin.url, "NO_PROXY": "",
               "no_proxy": ""}

    def kaggle(*args) -> str:
        done = subprocess.run([sys.executable, "-m", "kaggle", *args], env=environ, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "successfully pushed" in kaggle("kernels", "push", "-p", str(folder))
    [session] = standin.kernels.sessions[f"{USER}/hello-kernel"]
    assert session.done.wait(60) and "COMPLETE" in kaggle("kernels", "status", f"{USER}/hello-kernel")
    kaggle("kernels", "output", f"{USER}/hello-kernel", "-p", str(tmp_path / "out"))
    assert (tmp_path / "out" / "seen.txt").read_text() == "mapping.json,metadata.json,testdata.json"
    assert "hello from the kernel" in (tmp_path / "out" / "hello-kernel.log").read_text()


# ---------------------------------------------------------------- Slurm through submitit
@pytest.mark.slow
def test_members_run_as_submitit_jobs(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("KIT_CACHE", raising=False)
    logs: list[str] = []
    result = run_recipe(recipe_file(tmp_path), data=str(tiny_data), runs=str(tmp_path / "runs"), progress=False,
                        log=logs.append, launcher=make_launcher("slurm", cluster="local"))
    runs = tmp_path / "runs" / "zoo"
    assert sum("submitted as job" in line for line in logs) == 2
    assert [m.step for m in result.members] == [10, 10] and result.ensemble.csv
    assert (runs / ".submitit").is_dir() and not any("predicting" in line for line in logs)


@pytest.mark.parametrize("args, message", [
    (["--launcher", "slurm"], "no Slurm here (sbatch not found)"),
    (["--kernels", "3"], "--kernels is an option of --launcher kaggle (this run: --launcher local)"),
    (["--launcher", "kaggle", "--kernels", "0"], "--kernels 0: must be at least 1"),
])
def test_launcher_options_are_checked(tmp_path, tiny_data, capsys, monkeypatch, args, message):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    code, out, err = kit(capsys, "recipe", "run", recipe_file(tmp_path), "--data", tiny_data, "--runs",
                         tmp_path / "runs", *args)
    assert code == 2 and message in error_line(err)


def test_a_missing_kaggle_account_is_one_line(tmp_path, tiny_data, monkeypatch):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KIT_KAGGLE_ENDPOINT", "KAGGLE_CONFIG_DIR",
                 "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    real = tmp_path / "real"
    real.mkdir()
    for f in ("metadata.json", "testdata.json", "mapping.json"):
        (real / f).write_text((tiny_data / f).read_text())
    from kit.launch.kaggle_kernels import kaggle_target

    with pytest.raises(KitError, match="--launcher kaggle: no Kaggle credentials found"):
        with kaggle_target(real, None, None):
            pass


def test_members_stay_with_their_kernel_and_running_kernels_are_not_pushed_again(tmp_path):
    """What a re-run plans from kaggle-kernels.json: a kernel still running is waited for; a member
    goes back to the kernel whose output it continues from; new members fill the least loaded free one."""
    from kit.launch.kaggle_kernels import STATE, KaggleLauncher, KernelRun
    from kit.recipe import load_recipe

    root = tmp_path / "runs" / "zoo"
    root.mkdir(parents=True)
    target = {"endpoint": None, "env": None, "competition": COMP, "name": "kaggle"}
    (root / STATE).write_text(json.dumps({"target": "kaggle", "competition": COMP, "kernels": {
        "me/kit-zoo-1": {"ref": "me/kit-zoo-1", "members": ["a"], "version": 2, "status": "ERROR"},
        "me/kit-zoo-2": {"ref": "me/kit-zoo-2", "members": ["b"], "version": 1, "status": "RUNNING",
                         "pending": True}}}))

    def plan(fresh: bool) -> list[tuple]:
        run = KernelRun(KaggleLauncher(kernels=2), target, load_recipe(recipe_file(tmp_path)), root, "quick",
                        print, None, None, None)
        run.user = "me"
        return [(k.ref, k.members, k.version, k.pending) for k in run.plan(["a", "b", "c", "d"], fresh)]

    assert plan(fresh=False) == [("me/kit-zoo-2", ["b"], 1, True), ("me/kit-zoo-1", ["a", "d"], 2, False),
                                 ("me/kit-zoo-3", ["c"], 0, False)]
    assert plan(fresh=True) == [("me/kit-zoo-1", ["a", "c"], 2, False), ("me/kit-zoo-2", ["b", "d"], 1, False)]


def test_a_pulled_run_never_overwrites_another_run(tmp_path):
    """A local run not from this kernel is moved aside; an earlier pull of the same kernel is replaced;
    a pull that holds no checkpoint leaves the local run as it was."""
    from kit.launch.kernel_pull import LAUNCH_MARK, Kernel, adopt

    def run_dir(path: Path, step: int) -> Path:           # a run as kit writes it: config.toml beside last.pt
        path.mkdir(parents=True)
        (path / "config.toml").write_text('name = "a"\n')
        (path / "last.pt").write_text(str(step))
        return path

    root = tmp_path / "runs" / "zoo"
    local = run_dir(root / "a", 5)
    k = Kernel("me/kit-zoo-1", ["a"], version=1)
    logs: list[str] = []
    adopt(run_dir(tmp_path / "pull1" / "a", 20), local, k, logs.append)
    [old] = list(tmp_path.glob("runs/zoo.old-*/a"))
    assert (old / "last.pt").read_text() == "5" and (local / "last.pt").read_text() == "20"
    assert json.loads((local / LAUNCH_MARK).read_text()) == {"launcher": "kaggle", "kernel": "me/kit-zoo-1",
                                                             "version": 1}
    k.version = 2
    adopt(run_dir(tmp_path / "pull2" / "a", 40), local, k, logs.append)
    assert (local / "last.pt").read_text() == "40" and len(list(tmp_path.glob("runs/zoo.old-*/a*"))) == 1
    (tmp_path / "pull3" / "a").mkdir(parents=True)
    adopt(tmp_path / "pull3" / "a", local, k, logs.append)
    assert (local / "last.pt").read_text() == "40" and "left no checkpoint" in logs[-1]


def test_kit_kaggle_root_relocates_kaggle_input_and_working(tmp_path, monkeypatch):
    from kit.env import kaggle_input, kaggle_working

    for name in ("KIT_KAGGLE_ROOT", "KIT_KAGGLE_INPUT", "KIT_KAGGLE_WORKING"):
        monkeypatch.delenv(name, raising=False)
    assert (kaggle_input(), kaggle_working()) == (Path("/kaggle/input"), Path("/kaggle/working"))
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(tmp_path))
    assert (kaggle_input(), kaggle_working()) == (tmp_path / "input", tmp_path / "working")
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "elsewhere"))       # the narrower setting wins
    assert kaggle_input() == tmp_path / "elsewhere"


def test_pulls_leave_locks_and_temp_files_behind():
    from kit.kaggle.kernel_ops import pulled
    from kit.launch.kaggle_kernels import LEFT_BEHIND

    prefixes = ["runs/zoo/a/"]
    assert pulled("runs/zoo/a/last.pt", prefixes, LEFT_BEHIND)
    assert not pulled("runs/zoo/a/.last.pt.3f2a.tmp", prefixes, LEFT_BEHIND)      # a killed save's temp file
    assert not pulled("runs/zoo/a/.lock", prefixes, LEFT_BEHIND)
    assert not pulled("runs/zoo/b/last.pt", prefixes, LEFT_BEHIND)


def test_a_second_kernel_recipe_in_the_same_runs_is_refused_before_it_pushes(env, standin, tiny_data, tmp_path,
                                                                          capsys):
    """Two `kit recipe run --launcher kaggle` of one recipe at once pushed every kernel twice (two
    versions each, the GPU hours spent twice); the second now stops in one line, pushing nothing."""
    from kit.fsio import file_lock
    from kit.launch.kaggle_kernels import LOCK

    root = tmp_path / "runs" / "zoo"
    with file_lock(root / LOCK):                  # the first recipe, following its kernels
        code, _, err = kit(capsys, *recipe_args(tmp_path, tiny_data, standin))
    assert code == 2 and "another `kit recipe run --launcher kaggle` is pushing" in error_line(err)
    assert not any("Kernel" in call for call in standin.calls), standin.calls      # nothing pushed
    assert not (root / "kaggle-kernels.json").exists()


def test_a_kernel_another_run_pushed_and_that_still_runs_is_not_pushed_over(env, standin, tiny_data, tmp_path,
                                                                             capsys):
    """The same recipe launched with another --runs (or from another clone) names the same kernels: a push
    would start a version over the running one and each run would pull the other's output back."""
    from kit.launch.kernel_package import kernel_slug

    ref = f"{USER}/{kernel_slug('zoo', 1)}"
    standin.kernels.save({"slug": ref, "language": "python", "kernelType": "script",
                          "text": "import time; time.sleep(60)"}, USER, f"127.0.0.1:{standin.port}")
    [elsewhere] = standin.kernels.sessions[ref]
    code, _, err = kit(capsys, *recipe_args(tmp_path, tiny_data, standin))
    line = error_line(err)
    assert code == 2 and f"kernel {ref} (" in line and "is running a version this run did not push" in line, line
    assert standin.kernels.sessions[ref] == [elsewhere] and not elsewhere.done.is_set()     # nothing pushed


# ---------------------------------------------------------------- a server kit's authors did not write (probe 37)
def test_out_of_memory_is_not_out_of_time():
    from kit.launch.kaggle_kernels import RAN_OUT

    assert not RAN_OUT.search("Your notebook exceeded the allowed memory (30 GB)")
    assert not RAN_OUT.search("Output size exceeded 20 GB")
    for timed in ("Your notebook exceeded its session time limit", "Kernel timed out", "maximum run time reached"):
        assert RAN_OUT.search(timed), timed


@pytest.mark.slow
def test_output_that_cannot_be_pulled_is_pulled_again_never_pushed_again(env, standin, tiny_data, tmp_path, capsys):
    """Every output file answered 404 (an expired URL): kit pushed new versions from scratch, up to four a
    kernel. Now the kernels stay pending, and the re-run pulls them without pushing anything."""
    standin.inject("kernel-output", 404, count=1000)
    args = recipe_args(tmp_path, tiny_data, standin)
    code, out, err = kit(capsys, *args)
    line = error_line(err)
    assert code == 2 and "could not be pulled back" in line and "re-run the same command" in line
    assert standin.calls.count("SaveKernel") == 2
    state = json.loads((tmp_path / "runs" / "zoo" / "kaggle-kernels.json").read_text())
    assert all(k["pending"] for k in state["kernels"].values()), state
    standin.faults.clear()
    code, out, err = kit(capsys, *args)
    assert code == 0, err
    assert standin.calls.count("SaveKernel") == 2 and "was pushed earlier" in err
    assert RunDir(tmp_path / "runs" / "zoo" / "a").finished and RunDir(tmp_path / "runs" / "zoo" / "b").finished


@pytest.mark.slow
def test_a_lost_answer_to_a_push_is_not_pushed_again(env, standin, tiny_data, tmp_path, capsys):
    """SaveKernel made the version, then its answer was lost (502): kit pushed again, two GPU sessions."""
    from kit.kaggle.server_competitions import _ApiError

    real, lost = standin.kernels.save, set()

    def save(request: dict, user: str, host: str) -> dict:
        made = real(request, user, host)
        if request.get("slug") not in lost:
            lost.add(request.get("slug"))
            raise _ApiError(502, "Bad Gateway")
        return made

    standin.kernels.save = save
    code, out, err = kit(capsys, *recipe_args(tmp_path, tiny_data, standin))
    assert code == 0, err
    assert "SaveKernel's answer was lost (HTTP 502)" in err
    assert {ref: len(s) for ref, s in standin.kernels.sessions.items()} == {f"{USER}/kit-zoo-1": 1,
                                                                             f"{USER}/kit-zoo-2": 1}


@pytest.mark.slow
def test_runs_pulled_back_are_checked_against_the_recipes_members(env, standin, tiny_data, tmp_path, capsys,
                                                                  monkeypatch):
    """Members a and b swapped in one kernel's output (or one from before the recipe was edited) were voted
    and sent: each pulled run is now compared with what the recipe asks of its member."""
    from kit.launch import kaggle_kernels

    real = kaggle_kernels.adopt

    def swapped(pulled: Path, run_dir: Path, k, log, data_dir=None) -> None:
        other = pulled.with_name({"a": "b", "b": "a"}[pulled.name])
        real(other if other.exists() else pulled, run_dir, k, log, data_dir)

    monkeypatch.setattr(kaggle_kernels, "adopt", swapped)
    code, out, err = kit(capsys, *recipe_args(tmp_path, tiny_data, standin, "--kernels", "1"))
    assert code == 2 and "not what the recipe now asks for" in error_line(err) and "pooling" in err, err
    assert out == "" and not list(tmp_path.glob("submissions/*.csv"))


@pytest.mark.slow
def test_a_web_page_is_not_saved_as_output_and_empty_output_is_not_pushed_again(env, standin, tiny_data, tmp_path,
                                                                               capsys):
    """A sign-in page served for each output file was saved as the member's files (the run then stopped on
    'malformed TOML'); a COMPLETE version that left no output was pushed three times more."""
    real_serve, real_list = standin.kernels.serve_file, standin.kernels.list_output
    standin.kernels.serve_file = lambda handler, path: handler._send(200, b"<html>sign in</html>", "text/html")
    args = recipe_args(tmp_path, tiny_data, standin, "--kernels", "1")
    code, _, err = kit(capsys, *args)
    assert code == 2 and "sent a web page instead" in error_line(err) and "malformed" not in err, err
    standin.kernels.serve_file = real_serve
    standin.kernels.list_output = lambda request, user, host: {**real_list(request, user, host), "files": []}
    code, _, err = kit(capsys, *args)
    line = error_line(err)
    assert code == 2 and "ended COMPLETE but brought back nothing new for a, b" in line, err
    assert standin.calls.count("SaveKernel") == 1


def test_a_push_cut_off_by_a_kill_is_waited_for_by_the_re_run(tmp_path):
    """Ctrl-C while SaveKernel was in flight left a version kaggle-kernels.json did not list: the re-run
    blamed another clone, then trained from scratch beside it."""
    from kit.launch.kaggle_kernels import STATE, KaggleLauncher, Kernel, KernelRun
    from kit.recipe import load_recipe

    root = tmp_path / "runs" / "zoo"
    root.mkdir(parents=True)
    target = {"endpoint": None, "env": None, "competition": COMP, "name": "kaggle"}
    run = KernelRun(KaggleLauncher(kernels=1), target, load_recipe(recipe_file(tmp_path)), root, "quick", print,
                    None, None, None)

    def interrupted(op: str, params: dict, on_event=None) -> dict:
        raise KeyboardInterrupt

    run._call = interrupted
    run.state["me/kit-zoo-1"] = k = Kernel("me/kit-zoo-1", ["a", "b"])
    with pytest.raises(KeyboardInterrupt):
        run.push(k, earlier=False)
    saved = json.loads((root / STATE).read_text())["kernels"]["me/kit-zoo-1"]
    assert saved["pending"] and saved["status"] == "PUSHING" and saved["version"] == 1     # probe 39: not 0
    again = KernelRun(KaggleLauncher(kernels=1), target, load_recipe(recipe_file(tmp_path)), root, "quick", print,
                      None, None, None)
    again.user = "me"
    assert [(k.ref, k.pending) for k in again.plan(["a", "b"], fresh=False)] == [("me/kit-zoo-1", True)]


def test_a_refusal_of_a_kernel_call_is_not_blamed_on_the_competitions_rules():
    import requests

    from kit.kaggle.retrying import http_message

    response = requests.Response()
    response.status_code, response._content = 403, b'{"message": "Phone verification is required to use GPU"}'
    error = requests.HTTPError("403 Client Error", response=response)
    assert "Rules" not in http_message("SaveKernel", 403, error, 0)
    assert "Phone verification" in http_message("SaveKernel", 403, error, 0)
    assert "Rules" in http_message("CreateSubmission", 403, error, 0)


@pytest.mark.slow
def test_a_checkpoint_cut_off_in_the_download_is_pulled_again_not_adopted(env, standin, tiny_data, tmp_path, capsys):
    """A .pt file served cut off was adopted as a finished member: prediction then said "train the run
    first" or "--fresh" (training again on the GPU quota), and re-runs skipped it as finished."""
    real = standin.kernels.serve_file

    def cut_off(handler, path: str) -> None:
        if not path.endswith(".pt"):
            return real(handler, path)
        handler._send(200, b"PK\x03\x04 cut off", "application/octet-stream")

    standin.kernels.serve_file = cut_off
    args = recipe_args(tmp_path, tiny_data, standin, "--kernels", "1")
    code, _, err = kit(capsys, *args)
    assert code == 2 and "came back incomplete" in error_line(err) and "re-run the same command" in err, err
    assert not (tmp_path / "runs" / "zoo" / "a" / "summary.json").exists()
    standin.kernels.serve_file = real
    code, _, err = kit(capsys, *args)
    assert code == 0 and standin.calls.count("SaveKernel") == 1, err
    assert RunDir(tmp_path / "runs" / "zoo" / "a").finished


def test_a_re_run_gives_every_kernel_it_waits_for_the_grace_of_an_index_that_lags(tmp_path):
    """Probe 38: after a kill right after the push, the re-run took the same lagging 404 for a kernel gone
    and pushed every kernel again."""
    from kit.launch.kaggle_kernels import KaggleLauncher, Kernel, KernelRun
    from kit.recipe import load_recipe

    root = tmp_path / "runs" / "zoo"
    root.mkdir(parents=True)
    target = {"endpoint": None, "env": None, "competition": COMP, "name": "kaggle"}
    run = KernelRun(KaggleLauncher(kernels=1), target, load_recipe(recipe_file(tmp_path)), root, "quick", print,
                    None, None, None)
    run.state = {"me/kit-zoo-1": Kernel("me/kit-zoo-1", ["a", "b"], version=1, status="QUEUED", pending=True)}
    asked: dict = {}
    run._call = lambda op, params, on_event=None: asked.update(params) or {"ended": {}}
    run.wait(["me/kit-zoo-1"])
    assert asked["pushed"] == ["me/kit-zoo-1"]


@pytest.mark.slow
def test_a_version_out_of_time_with_nothing_new_is_not_pushed_again(env, standin, tiny_data, tmp_path, capsys):
    """Probe 38: a version stopped out of time before any checkpoint was pushed three times more (four
    sessions of up to 12 hours)."""
    standin.kernels.time_out_next(4, when_file=None, seconds=0.2)
    code, _, err = kit(capsys, *recipe_args(tmp_path, tiny_data, standin, "--kernels", "1"))
    assert code == 2 and "but brought back nothing new for a, b" in error_line(err), err
    assert standin.calls.count("SaveKernel") == 1


def test_a_kernel_that_never_leaves_the_queue_is_given_up_on_in_one_line(env, standin, tiny_data, tmp_path,
                                                                         monkeypatch, capsys):
    """Probe 37 (c): a kernel left QUEUED was polled for ever, past its session limit, without an end.
    kit now stops waiting at the limit plus a grace, in one line; the kernel stays pending for a re-run."""
    import json

    monkeypatch.setenv("KIT_KAGGLE_KERNEL_GRACE", "1")
    held = [standin.kernels._slots.acquire(timeout=5) for _ in range(2)]      # every session slot taken
    try:
        code, _, err = kit(capsys, *recipe_args(tmp_path, tiny_data, standin, "--max-hours", "0.001"))
    finally:
        for _ in held:
            standin.kernels._slots.release()
    line = error_line(err)
    assert code == 2 and "(QUEUED) not ended 0.001 h (their session limit) plus 0.0166667 min" in line, line
    assert "re-run the same command to wait again" in line
    state = json.loads((tmp_path / "runs" / "zoo" / "kaggle-kernels.json").read_text())
    assert all(k["pending"] for k in state["kernels"].values()), state
