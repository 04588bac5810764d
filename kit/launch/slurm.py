"""`kit recipe run --launcher slurm`: one submitit job per member, run dirs on the shared file
system, then the recipe's after stages here. `--submitit-cluster local` runs the same jobs on this
machine through submitit's LocalExecutor (a rehearsal; what the tests use).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import torch

from kit.cli import main
from kit.errors import KitError
from kit.fsio import process_alive
from kit.launch.common import MAX_ROUNDS, member_args
from kit.rundir import RunDir
from kit.timeplan import time_limits

FOLDER = ".submitit"          # RUNS/<recipe>/.submitit: submitit's job files and logs
LONGEST_HOURS = 12.0          # a job's time limit when neither the recipe nor --max-hours gives one
RAN_OUT = re.compile(r"time ?out|timed out|TIMEOUT|preempt", re.I)


def run_member(argv: list[str], launched_by: int | None = None) -> int:
    """What a job runs: the `kit` command with argv, in the job's own process (its exit code).
    launched_by (a local job): the recipe's pid; the job stops as SIGTERM stops it when that process
    is gone (a SIGKILLed recipe; submitit's local controller would run on under pid 1)."""
    if launched_by is not None:
        if not process_alive(launched_by):
            return 128 + signal.SIGTERM             # gone before this job began: nothing to train for
        submitits = signal.getsignal(signal.SIGTERM)
        threading.Thread(target=_end_with, args=(launched_by, submitits), daemon=True).start()
    return main(argv)


def _end_with(pid: int, submitits, every: float = 2.0) -> None:
    """SIGTERM this process once `pid` has ended (polled: the recipe is no parent of the job), when kit's
    own handler is in place: submitit's job handler only logs "Bypassing signal SIGTERM"."""
    while process_alive(pid):
        time.sleep(every)
    while signal.getsignal(signal.SIGTERM) is submitits:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)


def _submitit():
    try:
        # deferred: optional: submitit is needed only to submit to Slurm
        import submitit
    except ImportError:
        raise KitError("--launcher slurm needs submitit: pip install submitit") from None
    return submitit


class SlurmLauncher:
    """Options of `--launcher slurm`; train() is what run_recipe calls."""

    def __init__(self, partition: str | None = None, cluster: str = "slurm"):
        self.partition, self.cluster = partition, cluster

    def train(self, recipe, names: list[str], root: Path, budget: str, data_dir: Path, log,
              minutes: float | None = None, per_member_minutes: float | None = None,
              max_hours: float | None = None, fresh: bool = False) -> None:
        hours, inner = time_limits(recipe, budget, 1, LONGEST_HOURS, minutes, per_member_minutes, max_hours)
        executor = self.executor(Path(root), recipe.name, hours)
        todo = list(names)
        for round_ in range(1, MAX_ROUNDS + 1):
            args = {m: member_args(str(Path(recipe.path).resolve()), [m], budget, str(Path(root).parent.resolve()),
                                   data=str(Path(data_dir).resolve()), minutes=minutes,
                                   per_member_minutes=per_member_minutes, max_hours=inner) for m in todo}
            failures = self.run_round(executor, args, Path(root), log)
            todo = [m for m in todo if not RunDir.of(Path(root) / m).finished]
            if failures:
                raise KitError(f"{failures[0]}" + (f" (and {len(failures) - 1} more)" if failures[1:] else "")
                               + "; finished members are kept: re-run the same command to continue")
            if not todo:
                return
            log(f"{', '.join(todo)}: stopped at the job's time limit; continuing in new jobs (round {round_ + 1})")
        raise KitError(f"{', '.join(todo)}: still unfinished after {MAX_ROUNDS} rounds of jobs; re-run the same "
                       "command to continue")

    def executor(self, root: Path, recipe_name: str, hours: float):
        submitit = _submitit()
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise KitError("--launcher slurm: no Slurm here (sbatch not found); run on the cluster's login node, or "
                           "add --submitit-cluster local to run the jobs on this machine through submitit")
        executor = submitit.AutoExecutor(folder=root / FOLDER, cluster=self.cluster)
        params = {"name": f"kit-{recipe_name}", "timeout_min": max(1, int(hours * 60)), "tasks_per_node": 1,
                  "gpus_per_node": 1 if self.cluster == "slurm" else _local_gpus()}
        if self.partition:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        return executor

    def run_round(self, executor, args: dict[str, list[str]], root: Path, log) -> list[str]:
        """Submit one job per member, wait for all; one line per job that failed (not one that ran out
        of time: its member is continued by the next round). Jobs still running when this is left
        (an error, Ctrl-C) are cancelled, so no job outlives its recipe."""
        jobs = {}
        try:
            for member, argv in args.items():
                jobs[member] = executor.submit(run_member, argv, os.getpid() if self.cluster == "local" else None)
                log(f"{member}: submitted as job {jobs[member].job_id} ({self.cluster}; logs in {root / FOLDER})")
            return [line for line in (self._outcome(m, job, root, log) for m, job in jobs.items()) if line]
        finally:
            for job in jobs.values():
                if not job.done():
                    self._cancel(job)

    def _cancel(self, job) -> None:
        """Stop a job still running: scancel on Slurm. A local job's cancel is a SIGINT to its controller,
        which a kit started in the background (`&`, nohup) passes on ignored; its controller forwards a
        SIGTERM to the member, which then checkpoints and stops (the local job id is its pid)."""
        job.cancel(check=False)
        if self.cluster == "local" and str(job.job_id).isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(job.job_id), signal.SIGTERM)

    def _outcome(self, member: str, job, root: Path, log) -> str | None:
        try:
            code = job.result()
        except Exception as e:            # submitit's job errors: the job died, was cancelled or timed out
            text = str(e).strip().splitlines()
            if RAN_OUT.search(f"{job.state} {' '.join(text[-3:])}"):
                log(f"{member}: job {job.job_id} reached its time limit ({RunDir.of(root / member).progress()})")
                return None
            return f"member {member}: job {job.job_id} failed ({job.state}): {text[-1] if text else 'no message'}"
        if code:
            reason = _last_error(job)
            return f"member {member}: job {job.job_id} failed (exit {code}){': ' + reason if reason else ''}"
        log(f"{member}: job {job.job_id} done ({RunDir.of(root / member).progress()})")
        return None


def _last_error(job) -> str:
    """A failed job's own one-line reason: the last `kit: error:` line of its stderr."""
    try:
        lines = (job.stderr() or "").splitlines()
    except OSError:
        return ""
    errors = [ln.strip() for ln in lines if ln.startswith("kit: error:")]
    return errors[-1][:300] if errors else ""


def _local_gpus() -> int:
    return min(1, torch.cuda.device_count())
