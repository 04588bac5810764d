"""`kit recipe run --launcher kaggle`: the members train in Kaggle kernels on Kaggle's GPUs, N at
once, pushed, polled and pulled back into RUNS/<recipe>/<member> with the official client.

A kernel that runs out of time (or that kit stopped before its session limit) is continued by a new
version that takes its earlier output as input: kit resumes each member from last.pt. What is
pushed and pulled is kept in RUNS/<recipe>/kaggle-kernels.json, so a re-run picks up kernels still
running instead of pushing them again. Kernel logs go to RUNS/<recipe>/kaggle-logs/.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from kit.errors import KitError
from kit.fsio import file_lock, write_json, write_text
from kit.kaggle.client import KAGGLE, STAND_IN, call, endpoint_or_env, kernel_grace, kernel_poll
from kit.kaggle.credentials import CREDENTIALS_HELP, credential_source
from kit.kaggle.kernel_ops import RUNNING
from kit.kaggle.rehearsal import recipe_competition, rehearsal_stand_in
from kit.launch.common import MAX_ROUNDS, member_args
from kit.launch.kernel_package import kernel_slug, write_kernel
from kit.launch.kernel_pull import Kernel, adopt, last_error, log_text
from kit.layout import synth_marker
from kit.rundir import RunDir
from kit.timeplan import time_limits

STATE, LOGS, PULLS = "kaggle-kernels.json", "kaggle-logs", ".kaggle-pull"
LOCK = ".kaggle-kernels.lock"           # held by the one recipe run that pushes and follows the kernels
SESSION_HOURS = 12.0                 # Kaggle's limit on one GPU session
LEFT_BEHIND = [".lock", ".*.tmp"]    # never pulled back: a dead trainer's lock, a killed save's temp file
# a session's time spent: never a memory, disk or output limit (probe 37: "exceeded the allowed memory" was
# read as out of time, and the same failing kernel was pushed three times more)
RAN_OUT = re.compile(r"time ?out|timed out|out of time|time limit|maximum .*time|exceeded .*time|time .*exceeded",
                     re.I)


class KaggleLauncher:
    """Options of `--launcher kaggle`; train() is what run_recipe calls."""

    def __init__(self, kernels: int = 2, competition: str | None = None, endpoint: str | None = None):
        self.kernels, self.competition, self.endpoint = kernels, competition, endpoint

    def train(self, recipe, names: list[str], root: Path, budget: str, data_dir: Path, log,
              minutes: float | None = None, per_member_minutes: float | None = None,
              max_hours: float | None = None, fresh: bool = False) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)

        def busy() -> None:
            raise KitError(f"{root}: another `kit recipe run --launcher kaggle` is pushing and following these "
                           "kernels now; let it finish (or stop it) and re-run: each kernel would be pushed twice")

        with (file_lock(Path(root) / LOCK, busy=busy),
              kaggle_target(data_dir, self.endpoint, self.competition) as target):
            run = KernelRun(self, target, recipe, Path(root), budget, log, minutes, per_member_minutes, max_hours,
                            Path(data_dir))
            try:
                run.go(names, fresh)
            except (KeyboardInterrupt, SystemExit):     # Ctrl-C, or SIGTERM/SIGHUP (kit.env.exit_on_signals)
                if target["name"] == "kaggle":
                    log(f"interrupted: the kernels keep running on Kaggle; re-run the same command to pick "
                        f"them up ({root / STATE})")
                raise
            except KitError as e:       # an outage longer than the retries, mid-wait: the kernels go on
                waiting = [k.ref for k in run.state.values() if k.pending]
                if waiting and "re-run the same command" not in str(e):
                    raise KitError(f"{e}; kernel(s) {', '.join(waiting)} keep running on Kaggle: re-run the same "
                                   "command to pick them up") from None
                raise


@contextlib.contextmanager
def kaggle_target(data_dir: Path, endpoint: str | None, competition: str | None):
    """Where the kernels go: a stand-in at `endpoint` (or KIT_KAGGLE_ENDPOINT); for a synthetic
    competition, a stand-in started for the block, credentials or not (Kaggle's kernels would train
    on the real competition's data, and their runs would not fit this data); else Kaggle itself."""
    synth = synth_marker(data_dir) or {}
    competition = recipe_competition(data_dir, competition)
    if endpoint_or_env(endpoint):
        yield {"endpoint": endpoint_or_env(endpoint), "env": None, "competition": competition, "name": STAND_IN}
    elif synth:
        with rehearsal_stand_in(data_dir, competition) as (server, env):
            yield {"endpoint": server.url, "env": env, "competition": server.competition, "name": STAND_IN}
    elif credential_source():
        yield {"endpoint": None, "env": None, "competition": competition, "name": KAGGLE}
    else:
        raise KitError(f"--launcher kaggle: {CREDENTIALS_HELP}")


class KernelRun:
    """One `kit recipe run --launcher kaggle`: plan the kernels, push, wait, pull, continue."""

    def __init__(self, options: KaggleLauncher, target: dict, recipe, root: Path, budget: str, log,
                 minutes, per_member_minutes, max_hours, data_dir: Path | None = None):
        self.options, self.target, self.recipe, self.root, self.budget = options, target, recipe, root, budget
        self.data_dir = data_dir
        self.log = log
        self.timing = (minutes, per_member_minutes, max_hours)
        self.state = self._load_state()
        self.user = ""
        self.hours: float = SESSION_HOURS
        self.inner_hours: float | None = None       # --max-hours inside a kernel

    # -- the whole run
    def go(self, names: list[str], fresh: bool) -> None:
        from kit.cost import projection_line  # torch: imported only when kernels are pushed

        quota = self._quota()
        self.user = quota["user"]
        kernels = self.plan(names, fresh)
        most = max(len(k.members) for k in kernels)
        self.hours, self.inner_hours = time_limits(self.recipe, self.budget, most, SESSION_HOURS, *self.timing)
        new = [k for k in kernels if not k.pending]
        if new:
            self.check_free(new)
            projected = projection_line(self.recipe, self.budget, [m for k in new for m in k.members])
            if projected:
                self.log(projected)
            self.check_quota(len(new), quota)
        for k in kernels:
            if k.pending:
                self.log(f"{k.ref} version {k.version} was pushed earlier ({', '.join(k.members)}): waiting for it")
            else:
                self.push(k, earlier=k.version > 0 and not fresh)
        failures = self.follow({k.ref: k for k in kernels})
        if failures:
            more = f" (and {len(failures) - 1} more kernel(s) failed, see {self.root / LOGS})" if failures[1:] else ""
            raise KitError(f"{failures[0]}{more}; run dirs pulled back are kept in {self.root}: re-run the "
                           "same command to continue")

    def follow(self, active: dict) -> list[str]:
        """Wait for the kernels; pull each one's output as it ends; continue it with a new version when
        it ran out of time. Returns one line per kernel that failed."""
        failures = []
        while active:
            for ref, end in self.wait(list(active)).items():
                k = active.pop(ref)
                k.status, k.pending = end["status"], False
                before = [RunDir.of(self.root / m).progress() for m in k.members]
                unpulled = self.pull(k) if end["status"] != "GONE" else ""
                if unpulled:                # pulled again by a re-run, never trained again (probe 37)
                    k.pending = True
                    failures.append(unpulled)
                    self._save_state()
                    continue
                progressed = before != [RunDir.of(self.root / m).progress() for m in k.members]
                verdict = self.verdict(k, end, progressed)
                if verdict == "again":
                    try:
                        self.check_quota(1, self._quota())
                        self.push(k, earlier=end["status"] != "GONE")
                        active[ref] = k
                    except KitError as e:
                        failures.append(str(e))
                elif verdict != "done":
                    failures.append(verdict)
                self._save_state()
        return failures

    # -- planning and quota
    def plan(self, names: list[str], fresh: bool) -> list[Kernel]:
        """Kernels still running from an earlier call are waited for, not pushed again. Each other
        member goes to the kernel that trained it before (its output is where it continues from),
        else to the least loaded of kit-<recipe>-1 ... -N that is not still running."""
        known = {} if fresh else {r: k for r, k in self.state.items() if r.startswith(self.user + "/")}
        pending = [k for k in known.values() if k.pending]
        busy = {k.ref for k in pending}
        taken = {m for k in pending for m in k.members}
        before = {m: k.ref for k in known.values() if not k.pending for m in k.members}
        free: list[str] = []
        i = 0
        while len(free) < self.options.kernels:
            i += 1
            ref = f"{self.user}/{kernel_slug(self.recipe.name, i)}"
            if ref not in busy:
                free.append(ref)
        groups: dict[str, list[str]] = {ref: [] for ref in free}
        for m in names:
            if m not in taken:
                ref = before.get(m) or min(free, key=lambda r: (len(groups[r]), free.index(r)))
                groups.setdefault(ref, []).append(m)
        made = [Kernel(ref, members, version=self.state[ref].version if ref in self.state else 0)
                for ref, members in groups.items() if members]
        for k in pending + made:
            self.state[k.ref] = k
        return pending + made

    def check_free(self, kernels: list[Kernel]) -> None:
        """Refuse, before anything is pushed, a kernel whose latest version this run did not push and
        that still runs: the same recipe launched with another --runs, from another clone or machine
        (a kernel is named by account and recipe). A push would start a new version over it, and
        each would pull back the other's output: two sessions and their GPU hours for nothing."""
        status = self._call("kernels_status", {"refs": [k.ref for k in kernels]})["status"]
        running = [f"{ref} ({st})" for ref, st in status.items() if st in RUNNING]
        if running:
            raise KitError(f"kernel {running[0]} is running a version this run did not push (the same recipe from "
                           f"another --runs, clone or machine; {self.root / STATE} does not list it): nothing was "
                           "pushed; wait for it to end (or stop it on Kaggle), or copy the recipe under another name")

    def _quota(self) -> dict:
        return self._call("quota", {})

    def check_quota(self, n: int, quota: dict) -> None:
        """One line: the weekly GPU quota left and what the kernels about to be pushed may take;
        a KitError, before anything is pushed, when that is more than what is left."""
        need = n * self.hours
        where = "" if self.target["name"] == "kaggle" else f" ({self.target['name']})"
        plan = f"{n} kernel(s) x at most {self.hours:.2f} h = {need:.2f} GPU hours"
        if not quota["known"]:
            self.log(f"Kaggle did not say how much GPU quota is left{where}; this run: {plan}")
            return
        left = quota["total"] - quota["used"] - quota["reserved"]
        refresh = quota["refresh"].replace("T", " ")[:16] or "unknown"
        self.log(f"Kaggle GPU quota{where}: {max(left, 0):.1f} h of {quota['total']:.0f} h left this week "
                 f"(refreshes {refresh} UTC); this run: {plan}")
        if left < need:
            raise KitError(f"not enough Kaggle GPU quota: {max(left, 0):.1f} h left this week (refreshes {refresh} "
                           f"UTC), the kernels to push need up to {need:.2f} h ({plan}); nothing was pushed: use "
                           "fewer --kernels or a shorter --max-hours, or wait for the refresh")

    # -- one kernel
    def push(self, k: Kernel, earlier: bool) -> None:
        args = member_args("@RECIPE", k.members, self.budget, "@RUNS", minutes=self.timing[0],
                           per_member_minutes=self.timing[1], max_hours=self.inner_hours)
        was = (k.status, k.pending, k.version)
        # a kill mid-push: the re-run waits for what it made, and knows there is a version to continue from
        # (probe 39: version 0 stayed, and the next version was pushed without the earlier output)
        k.status, k.pending, k.version = "PUSHING", True, k.version + 1
        self._save_state()
        try:
            with tempfile.TemporaryDirectory(prefix="kit-kernel-") as folder:
                write_kernel(Path(folder), k.ref, Path(self.recipe.path), self.recipe.name, k.members, args,
                             self.target["competition"], earlier)
                pushed = self._call("kernel_push", {"folder": folder, "ref": k.ref, "timeout": self.hours * 3600})
        except KitError:                            # refused: nothing was pushed
            k.status, k.pending, k.version = was
            self._save_state()
            raise
        k.version, k.url, k.status, k.pending = pushed["version"] or k.version, pushed["url"], "QUEUED", True
        k.rounds += 1
        self._save_state()
        self.log(f"pushed {k.ref} version {k.version}: {', '.join(k.members)}"
                 + (" (continuing from its earlier output)" if earlier else "") + (f"; {k.url}" if k.url else ""))

    def wait(self, refs: list[str]) -> dict:
        def seen(event: dict) -> None:
            if event.get("kind") == "status":
                message = f" ({event['message']})" if event.get("message") else ""
                self.log(f"{event['ref']}: {event['status']}{message}")
                self.state[event["ref"]].status = event["status"]

        poll = kernel_poll(self.target["name"] != "kaggle")
        known = {ref: self.state[ref].status for ref in refs}
        # every kernel waited for was pushed, by this command or one a kill cut short: a 404 is given the
        # grace of an index that lags (probe 38: the re-run after a kill pushed both kernels again)
        grace = kernel_grace()
        waited = self._call("kernels_wait", {"refs": refs, "poll": poll, "seen": known, "pushed": refs,
                                             "limit": self.hours * 3600 + grace}, on_event=seen)
        if waited.get("overdue"):       # never ended: Kaggle stops a session at its limit (probe 37: QUEUED for ever)
            late = ", ".join(f"{ref} ({status})" for ref, status in waited["overdue"].items())
            raise KitError(f"kernel(s) {late} not ended {self.hours:g} h (their session limit) plus {grace / 60:g} "
                           f"min after kit began waiting: kit stops waiting; on Kaggle they stay as they are: stop "
                           "them there, or re-run the same command to wait again")
        return waited["ended"]

    def pull(self, k: Kernel) -> str:
        """The kernel's output for its members into their run dirs, and its log into kaggle-logs/;
        '' when pulled, else the line saying why not (local run dirs stay as they were, and the kernel
        stays pending: a re-run pulls it again, never pushes it again)."""
        slug = k.ref.split("/")[1]
        staging = self.root / PULLS / f"{slug}-v{k.version}"
        shutil.rmtree(staging, ignore_errors=True)        # what a pull cut short left
        prefixes = [f"runs/{self.recipe.name}/{m}/" for m in k.members]
        try:
            got = self._call("kernel_output", {"ref": k.ref, "path": str(staging), "prefixes": prefixes,
                                               "skip": LEFT_BEHIND})
            write_text(self.log_path(k), log_text(staging / "kernel.log"))
            for m in k.members:
                adopt(staging / "runs" / self.recipe.name / m, self.root / m, k, self.log, self.data_dir)
        except KitError as e:
            return (f"{k.ref} version {k.version} ({k.status}): its output could not be pulled back ({e}); local "
                    "run dirs kept as they were; re-run the same command to pull it again")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):      # empty once the last pull is done
                (self.root / PULLS).rmdir()
        states = ", ".join(f"{m} {RunDir.of(self.root / m).progress()}" for m in k.members)
        self.log(f"{k.ref} version {k.version} {k.status}: pulled back {got['files']} file(s); {states}")
        return ""

    def verdict(self, k: Kernel, end: dict, progressed: bool = True) -> str:
        """"done", "again" (a new version continues it) or the line saying why it failed. A version
        that ended COMPLETE with nothing new, or that Kaggle no longer knows though this command
        pushed it, is not pushed again (probe 37: versions that could only fail the same way)."""
        if all(RunDir.of(self.root / m).finished for m in k.members):
            return "done"
        status, message = end["status"], end["message"]
        last = " ".join(filter(None, [status, message]))
        if (status == "COMPLETE" or RAN_OUT.search(message or "")) and not progressed:    # out of time too
            tail = last_error(self.log_path(k))
            return (f"kernel {k.ref} version {k.version} ended {status} but brought back nothing new for "
                    f"{', '.join(k.members)}" + (f": {tail}" if tail else "") + f"; its log: {self.log_path(k)}")
        if status == "GONE" and k.rounds:
            return (f"{k.ref}: Kaggle does not know the kernel this run pushed (version {k.version}); "
                    "look at it on Kaggle")
        if status == "COMPLETE" or status == "GONE" or RAN_OUT.search(message or ""):
            if k.rounds >= MAX_ROUNDS:
                return f"{k.ref}: members still unfinished after {k.rounds} versions in this run (last: {last})"
            why = "is unknown to Kaggle now" if status == "GONE" else "ran out of time" if status != "COMPLETE" \
                else "stopped before its session limit"
            self.log(f"{k.ref} version {k.version} {why}: pushing a new version to continue")
            return "again"
        tail = last_error(self.log_path(k))
        return (f"kernel {k.ref} version {k.version} failed ({status}: {message or 'no message'})"
                + (f": {tail}" if tail else "") + f"; its log: {self.log_path(k)}")

    def log_path(self, k: Kernel) -> Path:
        return self.root / LOGS / f"{k.ref.split('/')[1]}-v{k.version}.log"

    # -- plumbing
    def _call(self, op: str, params: dict, on_event=None) -> dict:
        return call(op, params, self.target["endpoint"], self.target["env"], self.log, on_event=on_event)

    def _load_state(self) -> dict[str, Kernel]:
        path = self.root / STATE
        try:
            saved = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            raise KitError(f"{path}: unreadable; move it away to start the kernels afresh") from None
        if saved.get("target") != self.target["name"] or saved.get("competition") != self.target["competition"]:
            return {}
        return {ref: Kernel(**{k: v for k, v in value.items() if k != "rounds"})
                for ref, value in saved.get("kernels", {}).items()}

    def _save_state(self) -> None:
        kernels = {ref: {k: v for k, v in asdict(kernel).items() if k != "rounds"}
                   for ref, kernel in self.state.items()}
        write_json(self.root / STATE, {"target": self.target["name"], "competition": self.target["competition"],
                                       "kernels": kernels})
