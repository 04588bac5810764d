"""The local stand-in's kernels (kernels.KernelsApiService, as the official client calls it): a pushed
script really runs, in a subprocess of this interpreter, with the competition mounted under its
<root>/input and a working dir whose files become the kernel's output; plus a weekly GPU quota.

KIT_KAGGLE_ROOT tells the script (and kit.env) where its /kaggle is. Faults for tests and rehearsals:
`fail_next` (a session that errors), `time_out_next` (one that runs out of time), a quota used up.
"""
from __future__ import annotations

import email.utils
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

from kit.env import NEW_PROCESS_GROUP
from kit.kaggle.server_competitions import ZIP_FOLDER, _ApiError

SERVICE = "kernels.KernelsApiService"
METHODS = ("SaveKernel", "GetKernelSessionStatus", "ListKernelSessionOutput", "DownloadKernelOutput",
           "GetAcceleratorQuotaStatistics")      # what `Kernels.handle` answers
KERNEL_OUTPUT = "kernel-output"        # fault target: the GET of one output file
OUTPUT_PATH = "/kernels-output/"       # /kernels-output/<owner>/<slug>/<version>/<file>
ENDED = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED")
GPU_HOURS, TPU_HOURS = 30.0, 20.0      # Kaggle's weekly quotas
TIMED_OUT = "Kernel ran out of time: it ran longer than its session limit of {:g} s and was stopped"
# The kernel sees none of the caller's Kaggle credentials, proxies or kit locations.
HIDDEN_ENV = ("PYTHONPATH", "HTTP_PROXY", "http_proxy", "KIT_CACHE", "KIT_KAGGLE_INPUT", "KIT_KAGGLE_WORKING",
              "KIT_KAGGLE_ENDPOINT", "KIT_KAGGLE_ROOT")


@dataclass
class Session:
    """One version of a kernel, run once."""
    ref: str                  # owner/slug
    number: int
    root: Path                # its /kaggle: input/, working/, tmp/
    gpu: bool
    timeout: float | None     # seconds
    fault: tuple | None = None
    status: str = "QUEUED"
    message: str = ""
    started: float | None = None
    ended: float | None = None
    proc: subprocess.Popen | None = None
    mounts: list = field(default_factory=list)      # the read-only folders of its input
    done: threading.Event = field(default_factory=threading.Event)     # set when it has ended

    @property
    def working(self) -> Path:
        return self.root / "working"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"


class Kernels:
    """Every kernel pushed to one StandIn; sessions run `slots` at a time, each in a thread."""

    def __init__(self, standin, slots: int = 2, gpu_used_hours: float = 0.0, session_limit: float | None = None):
        self.standin = standin
        self.lock = threading.Lock()
        self.sessions: dict[str, list[Session]] = {}
        self.gpu_used = gpu_used_hours * 3600.0          # seconds
        self.session_limit = session_limit                # seconds, every session (Kaggle: 12 h)
        self.faults: list[tuple] = []
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self._stopping = False

    # -- faults
    def fail_next(self, count: int = 1, message: str = "Kernel failed: exit code 1 (injected by the stand-in)"):
        """The next `count` sessions end ERROR at their start, with no output."""
        with self.lock:
            self.faults += [("error", message)] * count

    def time_out_next(self, count: int = 1, when_file: str | None = "last.pt", seconds: float | None = None):
        """The next `count` sessions are stopped as out of time once a file named `when_file` appears in
        their working dir (their first checkpoint) or after `seconds`, whichever comes first."""
        with self.lock:
            self.faults += [("timeout", when_file, seconds)] * count

    # -- RPCs
    def handle(self, handler, method: str, request: dict, user: str) -> None:
        host = handler.headers.get("Host") or f"127.0.0.1:{self.standin.port}"
        if method == "SaveKernel":
            handler._json(self.save(request, user, host))
        elif method == "GetKernelSessionStatus":
            s = self._latest(f"{request.get('userName')}/{request.get('kernelSlug')}", user)
            handler._json({"status": s.status, **({"failureMessage": s.message} if s.message else {})})
        elif method == "ListKernelSessionOutput":
            handler._json(self.list_output(request, user, host))
        elif method == "DownloadKernelOutput":
            s = self._latest(f"{request.get('ownerSlug')}/{request.get('kernelSlug')}", user, ended=True)
            name = request.get("filePath") or ""
            handler._send(302, headers={"Location": self._url(host, s, name)})
        elif method == "GetAcceleratorQuotaStatistics":
            handler._json(self.quota())
        else:
            raise _ApiError(404, f"{method} is not served by the stand-in")

    def save(self, request: dict, user: str, host: str) -> dict:
        ref = request.get("slug") or ""
        owner, _, slug = ref.partition("/")
        if not slug:
            ref, owner, slug = f"{user}/{ref}", user, ref
        if owner != user:
            return {"error": f"Kernel {ref} belongs to another user"}
        if request.get("language") != "python" or request.get("kernelType") != "script":
            return {"error": "the local stand-in runs python scripts only (kernel_type script)"}
        if request.get("enableGpu") and self.gpu_left() <= 0:
            return {"error": "You have used up your weekly GPU quota"}
        comps = request.get("competitionDataSources") or []
        bad_comps = [c for c in comps if c != self.standin.competition]
        with self.lock:
            sources = {r: self._ended(r) for r in request.get("kernelDataSources") or []}
            number = len(self.sessions.get(ref, [])) + 1
            timeouts = [t for t in (request.get("sessionTimeoutSeconds"), self.session_limit) if t]
            s = Session(ref, number, self.standin._tmp / "kernels" / owner / slug / f"v{number}",
                        bool(request.get("enableGpu")), float(min(timeouts)) if timeouts else None,
                        self.faults.pop(0) if self.faults else None)
            self.sessions.setdefault(ref, []).append(s)
        s.working.mkdir(parents=True)
        (s.root / "tmp").mkdir()
        (s.root / f"{slug}.py").write_text(request.get("text") or "")
        self._mount(s, [c for c in comps if c not in bad_comps], {r: v for r, v in sources.items() if v})
        threading.Thread(target=self._run, args=(s,), name=f"kit-standin-kernel-{slug}", daemon=True).start()
        return {"ref": f"/code/{ref}", "url": f"http://{host}/code/{ref}", "versionNumber": number,
                "kernelId": abs(hash(ref)) % 10**6, "invalidCompetitionSources": bad_comps,
                "invalidKernelSources": [r for r, v in sources.items() if not v]}

    def list_output(self, request: dict, user: str, host: str) -> dict:
        s = self._latest(f"{request.get('userName')}/{request.get('kernelSlug')}", user, ended=True)
        names = sorted(str(p.relative_to(s.working)) for p in s.working.rglob("*") if p.is_file())
        size = int(request.get("pageSize") or 20)
        start = int(request.get("pageToken") or 0)
        page = names[start:start + size]
        log = [{"stream_name": "stdout", "time": 0.0, "data": line}
               for line in s.log.read_text(errors="replace").splitlines(keepends=True)] if s.log.is_file() else []
        return {"files": [{"fileName": n, "url": self._url(host, s, n)} for n in page], "log": json.dumps(log),
                "nextPageToken": str(start + size) if start + size < len(names) else ""}

    def quota(self) -> dict:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        refresh = (now + timedelta(days=(5 - now.weekday()) % 7 or 7)).replace(hour=0, minute=0, second=0,
                                                                            microsecond=0)
        with self.lock:
            used = self.gpu_used + sum(time.time() - s.started for runs in self.sessions.values() for s in runs
                                       if s.gpu and s.started and not s.ended)

        def hours(total: float, spent: float) -> dict:
            return {"timeUsed": f"{int(spent)}s", "timeReserved": "0s", "totalTimeAllowed": f"{int(total * 3600)}s",
                    "minimumTimeAllowed": f"{int(total * 3600)}s", "isPayToScaleEnabled": False, "hasEverRun": True}

        return {"quotaRefreshTime": refresh.isoformat(timespec="milliseconds") + "Z",
                "gpuQuota": hours(GPU_HOURS, used), "tpuQuota": hours(TPU_HOURS, 0)}

    def gpu_left(self) -> float:
        used = self.quota()["gpuQuota"]["timeUsed"]
        return GPU_HOURS - float(used.rstrip("s")) / 3600

    # -- output files
    def serve_file(self, handler, path: str) -> None:
        owner, slug, number, name = (unquote(p) for p in path[len(OUTPUT_PATH):].split("/", 3))
        handler._fault(KERNEL_OUTPUT)
        with self.lock:
            runs = self.sessions.get(f"{owner}/{slug}", [])
            s = runs[int(number) - 1] if number.isdigit() and 0 < int(number) <= len(runs) else None
        target = (s.working / name).resolve() if s else None
        if s is None or target is None or s.working.resolve() not in target.parents or not target.is_file():
            raise _ApiError(404, f"Not found: {path}")
        handler._send(200, target.read_bytes(), "application/octet-stream",
                      {"Last-Modified": email.utils.formatdate(target.stat().st_mtime, usegmt=True)})

    def _url(self, host: str, s: Session, name: str) -> str:
        return f"http://{host}{OUTPUT_PATH}{quote(s.ref)}/{s.number}/{quote(name)}"

    # -- sessions
    def _latest(self, ref: str, user: str, ended: bool = False) -> Session:
        with self.lock:
            runs = [s for s in self.sessions.get(ref, []) if not ended or s.status in ENDED]
        if not runs or ref.partition("/")[0] != user:
            raise _ApiError(404, f"Kernel {ref} not found" + (" or it has no finished version" if ended else ""))
        return runs[-1]

    def _ended(self, ref: str) -> Session | None:
        runs = [s for s in self.sessions.get(ref, []) if s.status in ENDED]
        return runs[-1] if runs else None

    def _mount(self, s: Session, competitions: list[str], sources: dict[str, Session]) -> None:
        """The competition under input/<name>/Dataset (its files hard-linked or copied, as in the zip:
        kit refuses feature files that resolve outside their data dir), each kernel
        source's latest finished output under input/<slug>; the folders read-only."""
        inp = s.root / "input"
        inp.mkdir()
        for comp in competitions:
            data = inp / comp / ZIP_FOLDER
            data.mkdir(parents=True)
            s.mounts += [data, data.parent]
            for f in self.standin.data_dir.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    _link_or_copy(f, data / f.name)
        for ref, source in sources.items():
            (inp / ref.partition("/")[2]).symlink_to(source.working.resolve(), target_is_directory=True)
        s.mounts.append(inp)
        for d in s.mounts:
            d.chmod(0o555)

    def _run(self, s: Session) -> None:
        with self._slots:
            with self.lock:
                if self._stopping:
                    return
                s.status, s.started = "RUNNING", time.time()
            if s.fault and s.fault[0] == "error":
                return self._end(s, "ERROR", s.fault[1])
            env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and k not in HIDDEN_ENV}
            env.update(KIT_KAGGLE_ROOT=str(s.root), TMPDIR=str(s.root / "tmp"), KAGGLE_KERNEL_RUN_TYPE="Batch",
                       PYTHONUNBUFFERED="1", KIT_STANDIN_PID=str(os.getpid()))   # the kernel ends with us
            with open(s.log, "w") as out:
                s.proc = subprocess.Popen([sys.executable, str(s.root / f"{s.ref.partition('/')[2]}.py")],
                                          cwd=s.working, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          **NEW_PROCESS_GROUP)
                while s.proc.poll() is None:
                    limit = self._out_of_time(s)
                    if limit is not None:
                        _kill(s.proc)
                        return self._end(s, "ERROR", TIMED_OUT.format(limit))
                    time.sleep(0.2)        # watching the script, not timing anything
            code = s.proc.returncode
            self._end(s, "COMPLETE" if code == 0 else "ERROR", "" if code == 0 else f"Kernel exited with code {code}")

    def _out_of_time(self, s: Session) -> float | None:
        """The session limit (seconds) it has run past, or None while it may go on."""
        assert s.started is not None                # set as it starts running
        elapsed = time.time() - s.started
        if s.timeout is not None and elapsed > s.timeout:
            return s.timeout
        if s.fault and s.fault[0] == "timeout":
            _, when_file, seconds = s.fault
            if (seconds is not None and elapsed > seconds) or (when_file and any(s.working.rglob(when_file))):
                return round(elapsed, 1)
        return None

    def _end(self, s: Session, status: str, message: str) -> None:
        with self.lock:
            s.status, s.message, s.ended = status, message, time.time()
            if s.gpu and s.started:
                self.gpu_used += s.ended - s.started
        s.done.set()

    def stop(self) -> None:
        """Stop every session still running and make the mounts removable again."""
        with self.lock:
            self._stopping = True
            running = [s.proc for runs in self.sessions.values() for s in runs if s.proc and s.proc.poll() is None]
        for proc in running:
            _kill(proc)
        for runs in self.sessions.values():
            for s in runs:
                for d in s.mounts:
                    d.chmod(0o755)


def _kill(proc: subprocess.Popen) -> None:
    """The whole session at once, as when Kaggle's machine goes away (kit's workers follow their
    parent: they asked for SIGKILL on its death)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:                  # another file system
        shutil.copy2(source, target)
