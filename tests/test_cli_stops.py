"""How `kit` ends when it is stopped from outside: SIGTERM (a Kaggle or Slurm time-out) runs every
`finally`, so no worker outlives it and no temp folder stays; a reader that leaves the pipe early, or
stdout on a full disk, is no traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.fsio import atomic_dir

from conftest import kit_env, process_alive, recipe_toml


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_of_a_two_worker_synth_stops_its_workers_and_leaves_no_hidden_folder(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "kit", "data", "synth", "--preset", "demo", "--workers", "2",
                             "--out", str(out)], env=kit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while not any(tmp_path.glob(".demo.*/uttr-*.pt")):      # rendering has begun in both workers
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)     # polling the folder, not timing anything
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGTERM)           # the parent only, as a scheduler's time-out does
        assert proc.wait(60) == 143
        assert "kit: stopped by SIGTERM" in proc.communicate()[1]
        deadline = time.time() + 15
        while any(process_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.05)     # polling /proc, not timing anything
        assert [p for p in workers if process_alive(p)] == []
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "an interrupted synth leaves nothing"
    finally:
        for pid in [proc.pid, *workers]:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_hidden_folder_of_a_sigkilled_synth_goes_with_the_next_write_there(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "kit", "data", "synth", "--preset", "demo", "--workers", "2",
                             "--out", str(out)], env=kit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not any(tmp_path.glob(".demo.*/uttr-*.pt")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)     # polling the folder, not timing anything
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)           # nothing of kit's runs: its folder stays behind
        proc.wait(60)
        deadline = time.time() + 15
        while any(process_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.05)     # the workers follow their parent (die_with_parent)
        assert [p.name for p in tmp_path.iterdir()][0].startswith(".demo.")
    finally:
        if process_alive(proc.pid):
            os.kill(proc.pid, signal.SIGKILL)
    with atomic_dir(out) as folder:                 # the next synth (or any write) of that folder
        (folder / "meta.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_reader_that_leaves_the_pipe_early_is_no_traceback(tiny_data):
    proc = subprocess.Popen([sys.executable, "-m", "kit", "data", "info", str(tiny_data)], env=kit_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()                             # `kit data info | head -0`
    err = proc.stderr.read()
    assert proc.wait(60) == 141 and "Traceback" not in err and "Exception" not in err, err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_disk_is_one_line_and_exit_2(tiny_data):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "kit", "data", "info", str(tiny_data)], env=kit_env(),
                              stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "kit: error: cannot write the output (No space left on device)"], done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["--help"], ["recipe", "run", "--help"], ["--version"]])
def test_help_on_a_full_disk_is_one_line_and_exit_2(argv):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "kit", *argv], env=kit_env(),
                              stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "kit: error: cannot write the output (No space left on device)"], done.stderr


def test_help_read_by_a_reader_that_leaves_is_exit_141_and_quiet():
    proc = subprocess.Popen([sys.executable, "-m", "kit", "recipe", "run", "--help"], env=kit_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()             # the reader left before the first line (`kit ... --help | true`)
    err = proc.stderr.read()
    assert proc.wait(60) == 141 and err == "", err


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)])
def test_a_stopped_background_recipe_stops_its_local_submitit_job(tiny_data, tmp_path, sig, code):
    """Started in the background (`&`, nohup: SIGINT ignored, as the shell does), the recipe's SIGTERM
    still stops the member's local job: submitit's cancel alone is a SIGINT its controller ignores.
    A SIGKILLed recipe cancels nothing: the job sees its recipe gone and stops (probe 11: it trained on
    under pid 1, and the re-run was refused until it ended)."""
    recipe = tmp_path / "zoo.toml"
    recipe.write_text(recipe_toml(["a"], name="zoo", base={"train": {"eval_every": 50}},
                                  budget={"quick": {"train.max_steps": 10**6}},
                                  after={"predict": False, "ensemble": "none", "submit": False}))
    proc = subprocess.Popen([sys.executable, "-m", "kit", "recipe", "run", str(recipe), "--data", str(tiny_data),
                             "--runs", str(tmp_path / "runs"), "--launcher", "slurm", "--submitit-cluster", "local",
                             "--no-progress"], env=kit_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    job, members = None, []
    try:
        for line in proc.stderr:                    # "kit: a: submitted as job 1234 (local; ...)"
            if "submitted as job" in line:
                job = int(line.split("submitted as job ")[1].split()[0])
                break
        assert job and process_alive(job), "the member's job did not start"
        time.sleep(1)    # the controller has started its member (not a timing assertion)
        members = _children(job)
        os.kill(proc.pid, sig)
        assert proc.wait(60) == code
        deadline = time.time() + 90      # a job still importing torch on a busy machine
        while process_alive(job) and time.time() < deadline:
            time.sleep(0.1)      # polling /proc, not timing anything
        assert not process_alive(job), "the member's local job outlived its recipe"
    finally:
        for pid in [proc.pid, job, *members]:
            if pid and process_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl, /proc")
def test_a_sigkilled_stand_in_takes_its_kernel_and_the_kernels_recipe_with_it(tmp_path):
    """`kit kaggle serve` starts each kernel's script with KIT_STANDIN_PID; the script ends with the stand-in
    and the `kit` it starts ends with the script. Before, a SIGKILLed stand-in left both training under pid 1."""
    recipe = "from kit.cli import _end_with_the_kernel; _end_with_the_kernel(); import time; time.sleep(120)"
    kernel = ("import os, subprocess, sys, time; from kit.launch.kernel_main import die_with_stand_in; "
              "die_with_stand_in(); p = subprocess.Popen([sys.executable, '-c', sys.argv[1]]); "
              "print(os.getpid(), p.pid, flush=True); time.sleep(120)")
    server = ("import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], "
              "env=dict(os.environ, KIT_STANDIN_PID=str(os.getpid()))); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", server, kernel, recipe], env=kit_env(), stdout=subprocess.PIPE,
                            text=True)
    pids: list[int] = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(process_alive(p) for p in pids)
        time.sleep(0.5)          # the recipe has set its parent-death signal (not a timing assertion)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.time() + 15
        while any(process_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.05)     # polling /proc, not timing anything
        assert [p for p in pids if process_alive(p)] == []
    finally:
        for pid in [proc.pid, *pids]:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sigint_as_a_terminal_leaves_it():
    """Python's own SIGINT handler for the test: a suite started in the background (`make test &` in a
    script, some CI runners) inherits SIGINT ignored, and kit then leaves it ignored
    (kit.env.exit_on_signals), so a raised SIGINT was lost and the test failed (session 30)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _stop_lost_in_a_callback(sig: int) -> None:
    """A signal that arrives while a weakref callback runs: its handler's exception is raised there, and
    Python prints "Exception ignored" and goes on (probe 23: at the distilled student's start)."""
    import weakref

    class Freed:
        pass

    freed = Freed()
    keep = weakref.ref(freed, lambda ref: signal.raise_signal(sig))
    del freed
    assert keep() is None


@pytest.mark.parametrize("sig, stop", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_a_stop_python_loses_in_a_callback_is_raised_at_the_next_safe_point(capsys, sig, stop,
                                                                            sigint_as_a_terminal_leaves_it):
    from kit.env import check_stopped, exit_on_signals

    went_on = False
    with pytest.raises(stop) as raised:
        with exit_on_signals():
            _stop_lost_in_a_callback(sig)
            went_on = True              # Python threw the handler's exception away
            check_stopped()
    assert went_on and "Exception ignored" not in capsys.readouterr().err
    assert stop is KeyboardInterrupt or raised.value.code == 143
    check_stopped()                     # outside the block: nothing is pending any more


def test_a_lost_stop_outlives_an_inner_block_and_a_delivered_one_is_not_raised_again():
    """Probe 25: the member pool's own block (kit.workers) cleared a lost stop at its end, so the recipe
    voted and submitted; and a stop that unwound as usual was raised again by the first log line of the
    handler catching it (the Kaggle launcher's "interrupted: the kernels keep running" went unsaid)."""
    from kit.env import check_stopped, exit_on_signals

    with pytest.raises(SystemExit):
        with exit_on_signals():
            with exit_on_signals():                 # the member pool's, inside main's
                _stop_lost_in_a_callback(signal.SIGTERM)
            check_stopped()
    with exit_on_signals():
        try:
            signal.raise_signal(signal.SIGTERM)     # delivered: it unwinds as usual
        except SystemExit:
            check_stopped()                         # a handler's log line: not raised a second time


def test_a_recipe_stopped_in_a_callback_stops_before_it_submits(tiny_data, tmp_path, capsys, monkeypatch):
    """The recipe's next log line (the vote, the submission) is a safe point: exit 143, nothing sent."""
    import kit.zoo

    from conftest import kit_cli

    report_runs = kit.zoo.report_runs

    def report_then_lost_stop(*args, **kwargs):
        _stop_lost_in_a_callback(signal.SIGTERM)
        return report_runs(*args, **kwargs)

    monkeypatch.setattr(kit.zoo, "report_runs", report_then_lost_stop)
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(["a", "b"], name="r", budget={"quick": {"train.max_steps": 4}},
                                  after={"predict": True, "ensemble": "hard", "submit": True}))
    code, _, err = kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "runs",
                           "--budget", "quick", "--no-progress")
    assert code == 143 and err.strip().endswith("kit: stopped by SIGTERM"), err
    assert "submitting" not in err and not (tmp_path / "submissions" / "ledger.csv").exists()


def test_once_kit_stops_a_second_interrupt_is_ignored_while_it_exits(monkeypatch, capsys):
    """Probe 39: `timeout -s INT` signals the process group too, so kit got SIGINT twice; the second landed
    in torch's exit handler ("Exception ignored in atexit callback ... KeyboardInterrupt") and the exit
    code became -2. Kit now ignores stop signals once it has begun to exit."""
    import atexit

    import kit.cli

    handlers, set_to = [], {}
    monkeypatch.setattr(atexit, "register", handlers.append)
    monkeypatch.setattr(kit.cli, "one_line_errors", lambda run: (_ for _ in ()).throw(KeyboardInterrupt))
    assert kit.cli.main(["data", "info", "."]) == 130 and "kit: interrupted" in capsys.readouterr().err
    monkeypatch.setattr(signal, "signal", lambda signum, handler: set_to.__setitem__(signum, handler))
    for handler in handlers:
        handler()
    assert set_to.get(signal.SIGINT) is signal.SIG_IGN and set_to.get(signal.SIGTERM) is signal.SIG_IGN
