"""Members in worker processes: one per GPU, or one per CPU core on one thread, each running its
commands (train, then predict) in turn; the workers die with the process that started them,
however it ends (signals, exceptions, SIGKILL through PR_SET_PDEATHSIG)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kit.config import dump_toml, to_dict
from kit.env import NEW_PROCESS_GROUP, die_with_parent, exit_on_signals, python_module
from kit.errors import KitError
from kit.fsio import write_text
from kit.infer import source_mode
from kit.rundir import RunDir

if TYPE_CHECKING:
    from kit.timeplan import Deadline


def slots_for(workers: int | None, n_jobs: int) -> list[dict]:
    """Where members train at once: one per GPU when there are several, else one per CPU core
    (each on one thread); a single slot means in-process, one after another."""
    n_gpus = torch.cuda.device_count()
    if n_gpus > 0:
        n = min(workers or n_gpus, n_gpus, n_jobs)
        return [{"CUDA_VISIBLE_DEVICES": str(g), "label": f"GPU {g}"} for g in range(n)]
    n = min(workers or os.cpu_count() or 1, n_jobs)
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "label": f"CPU worker {i}"} for i in range(n)]


def member_task(job, on_cpu: bool, predict: bool, which: str,
                budget: str | None = None) -> tuple[str, Path, list[list[str]]]:
    """The commands a worker runs for one job (name, cfg, run_dir, resume): train it, then (`predict`)
    predict its checkpoint `which`. On a CPU it trains on one thread: one core each."""
    name, cfg, run_dir, resume = job
    if on_cpu:
        cfg.train.cpu_threads = 1           # one core each; more threads only fight each other
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "member.toml", dump_toml(to_dict(cfg)))
    cmds = [[*python_module("kit.train"), "--out", str(run_dir), "--config", str(run_dir / "member.toml"),
             "--no-progress"] + (["--resume"] if resume else []) + (["--budget", budget] if budget else [])]
    if predict:
        mode = source_mode(cfg)
        cmds.append([*python_module("kit"), "predict", str(run_dir), "--which", which]
                    + (["--mode", mode, "--no-compare"] if mode else []))
    return name, run_dir, cmds


def run_parallel(tasks: list[tuple[str, Path, list[list[str]]]], slots: list[dict], log, share=None,
                  deadline: Deadline | None = None) -> None:
    """Run each member's commands (train, then predict) one after another in a worker process
    slot (a GPU, or a CPU core on one thread), several members at once: tiny models scale far
    better this way than with DDP. Output goes to <run_dir>/train.log. The workers die with
    this process, however it ends (see _workers_die_with_us). share(members_left): a member's
    training minutes as it starts (time budgets), passed to its trainer as --minutes."""
    children: list[subprocess.Popen] = []
    with _workers_die_with_us(children):
        run_slots(tasks, slots, log, children, share, deadline)


@contextlib.contextmanager
def _workers_die_with_us(children: list):
    """Stop every worker in `children` on any way out of the block: return, exception, Ctrl-C,
    SIGTERM/SIGHUP (turned into SystemExit 143/129 here). A SIGKILL cannot be caught: each worker
    asked the kernel for its own SIGKILL when this process dies (kit.env.die_with_parent)."""
    with exit_on_signals():
        try:
            yield
        finally:
            _stop_workers(children)


def _stop_workers(children: list, grace: float = 5.0) -> None:
    """SIGTERM each live worker's process group, then SIGKILL what is left after `grace` seconds."""
    live = [p for p in children if p.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
        deadline = time.time() + grace
        for p in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.time()))
        live = [p for p in live if p.poll() is None]
        if not live:
            return


def _after_failure(name: str, run_dir: Path, code: int, running: dict, log) -> None:
    """A member's command failed: a diverged training ends that member alone (its summary.json says
    so; nothing of it is predicted); any other failure stops every worker and the recipe."""
    step = RunDir(run_dir).diverged_at
    if step is not None:
        log(f"{name}: training diverged at step {step}; the other members go on without it "
            f"(log in {run_dir / 'train.log'})")
        return
    for other in running.values():
        if other[3] is not None and other[3].poll() is None:
            other[3].terminate()
    log_path = run_dir / "train.log"
    if code < 0:        # killed: the log's last line is whatever an earlier session wrote last
        raise KitError(f"member {name} failed (killed by signal {-code}, {_signal_name(-code)}); full log: {log_path}")
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
    raise KitError(f"member {name} failed (exit {code}): {' '.join(tail)[:300]} (full log: {log_path})")


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return "an unknown signal"
    return name + ("; out of memory?" if number == signal.SIGKILL else "")


def run_slots(tasks: list[tuple[str, Path, list[list[str]]]], slots: list[dict], log, children: list,
               share=None, deadline: Deadline | None = None) -> None:
    pending = list(tasks)
    running: dict[int, list] = {}          # slot -> [name, run_dir, commands left, process, its log]
    while pending or running:
        for slot in [i for i in range(len(slots)) if i not in running]:
            if not pending:
                break
            name, run_dir, cmds = pending.pop(0)
            if deadline is not None:        # the train command gets its share of what is left, at its start
                limit = deadline.member_minutes(name, log)
                if limit is None:
                    deadline.not_started += [name] + [t[0] for t in pending]
                    pending.clear()
                    break
                cmds = [cmds[0] + ["--max-minutes", repr(limit)]] + cmds[1:]
            if share is not None:
                cmds = [cmds[0] + ["--minutes", f"{share([name] + [t[0] for t in pending]):.4f}"]] + cmds[1:]
            log(f"training {name} -> {run_dir} ({slots[slot]['label']}; log in {run_dir / 'train.log'})")
            running[slot] = [name, run_dir, cmds, None, None]
        for slot, state in list(running.items()):
            name, run_dir, cmds, proc, out = state
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                out.close()
            if proc is not None and proc.returncode != 0:
                _after_failure(name, run_dir, proc.returncode, running, log)   # returns for a divergence
                del running[slot]
                continue
            if not cmds:
                log(f"{name} finished")
                del running[slot]
                continue
            env = {**os.environ, **{k: v for k, v in slots[slot].items() if k != "label"}}
            out = open(run_dir / "train.log", "a")
            proc = subprocess.Popen(cmds[0], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent(), **NEW_PROCESS_GROUP)
            children.append(proc)
            running[slot] = [name, run_dir, cmds[1:], proc, out]
        time.sleep(0.5)   # polling the children, not timing anything
