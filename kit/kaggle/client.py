"""The caller's side of the Kaggle worker: each client call runs in a short-lived `python -m
kit.kaggle.worker`, because the `kaggle` package authenticates once at import and prints to stdout.

Also the retry and poll timings both sides read, overridable from the environment for tests.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import threading
import urllib.parse
from secrets import token_hex

from kit.env import check_stopped, die_with_parent, python_module
from kit.errors import KitError
from kit.kaggle.credentials import scrub, secrets

KAGGLE, STAND_IN = "kaggle", "local stand-in"       # a ledger row's target
RETRY_STATUSES = (429, 500, 502, 503, 504)


def _setting(name: str, default: float, most: float, least: float = 0.0, above: bool = False) -> float:
    """A timing setting from the environment: a number from `least` (or, `above`, over it) to `most`
    (KitError naming it): a poll of 0 would ask Kaggle without a pause, a backoff of 1e300 overflows."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        raise KitError(f"environment variable {name}={os.environ[name]!r} is not a number") from None
    if not (math.isfinite(value) and (value > least if above else value >= least) and value <= most):
        low = f"above {least:g}" if above else f"{least:g}"
        raise KitError(f"environment variable {name}={os.environ[name]!r}: must be a number from {low} to {most:g}")
    return value


def backoff() -> float:
    return _setting("KIT_KAGGLE_BACKOFF", 2.0, most=600.0)     # first retry delay; doubles each time


def retries() -> int:
    return int(_setting("KIT_KAGGLE_RETRIES", 5, most=20))


def poll_interval() -> float:
    return _setting("KIT_KAGGLE_POLL", 10.0, most=600.0, above=True)


def kernel_poll(stand_in: bool) -> float:
    """Seconds between checks of a kernel's status: a minute on Kaggle (sessions last hours), a second
    on a local stand-in; KIT_KAGGLE_KERNEL_POLL decides instead."""
    return _setting("KIT_KAGGLE_KERNEL_POLL", 1.0 if stand_in else 60.0, most=600.0, above=True)


def kernel_grace() -> float:
    """Seconds past a kernel's session limit that kit still waits for it (QUEUED, or a status that never
    ends) before it stops waiting with one line (probe 37: a kernel left QUEUED was polled for ever);
    KIT_KAGGLE_KERNEL_GRACE decides instead."""
    return _setting("KIT_KAGGLE_KERNEL_GRACE", 3600.0, most=7 * 86400.0)


def max_retry_after() -> float:
    return _setting("KIT_KAGGLE_MAX_RETRY_AFTER", 120.0, most=3600.0)   # bound on a server's Retry-After


def check_timing() -> None:
    """Every timing setting read now (KitError naming a bad one), not when a retry first needs it: a
    submission must not be sent under a setting that then fails its wait."""
    backoff(), retries(), poll_interval(), max_retry_after()


def endpoint_or_env(endpoint: str | None) -> str | None:
    """The stand-in URL to talk to: the one given, else KIT_KAGGLE_ENDPOINT; None means Kaggle.
    Not an http URL with a host: one line (the client would retry it for a minute)."""
    url = endpoint or os.environ.get("KIT_KAGGLE_ENDPOINT") or None
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            where = "--endpoint" if endpoint else "KIT_KAGGLE_ENDPOINT"
            raise KitError(f"{where} {url!r}: not a stand-in URL such as http://127.0.0.1:8765")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            where = "--endpoint" if endpoint else "KIT_KAGGLE_ENDPOINT"     # probe 51, 52: printed, kept in ledgers
            shown = urllib.parse.urlunsplit(parts._replace(netloc=f"***@{parts.netloc.rsplit('@', 1)[-1]}"
                                                           if "@" in parts.netloc else parts.netloc,
                                                           query="***" if parts.query else "", fragment=""))
            raise KitError(f"{where} {shown}: a stand-in URL with a user, password or query in it; kit's stand-in "
                           "asks for none, and kit would print it and keep it in the ledger: give the URL without it")
        url = url.rstrip("/")           # one server, one spelling: a ledger row's target names it
    return url


def target(endpoint: str | None) -> str:
    """What a ledger row records as where the submission went: Kaggle, or the named stand-in with its URL
    (refs are only unique per server, so `kit scores` refreshes a row only from where it was sent). A
    recipe's temporary rehearsal stand-in is STAND_IN alone (kit.kaggle.rehearsal): it is gone after."""
    url = endpoint_or_env(endpoint)
    return f"{STAND_IN} at {url}" if url else KAGGLE


def stand_in_url(where: str) -> str | None:
    """The URL of the stand-in a ledger row's target names (target's inverse): the `--endpoint` that asks
    it again; None for Kaggle, a recipe's rehearsal stand-in (gone with it) or an unrecorded target."""
    prefix = f"{STAND_IN} at "
    return where[len(prefix):] if where.startswith(prefix) else None


def _worker_env(endpoint: str | None, overrides: dict | None) -> dict:
    env = dict(os.environ)
    env.update(overrides or {})
    if endpoint:
        # The client only knows prod and http://localhost:80; the stand-in answers as its proxy.
        env["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"
        env["HTTP_PROXY"] = env["http_proxy"] = endpoint
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(name, None)   # a no_proxy of "localhost" would bypass the stand-in
    env["PYTHONUNBUFFERED"] = "1"
    return env


STALLED = 120.0     # seconds past a wait's --timeout after which a worker stuck in one HTTP call is stopped
MAYBE_MADE = "it may have been made"     # in a failed send's error: a re-run looks it up before sending again
MESSAGE_SENT = 200      # characters of the message a description carries (the ledger keeps it whole)
# where a send id is read: kit's (first) and an older kit's (last), bracketed before bare (a server may strip the
# brackets: probe 38); never from the middle, where a message's own "kit 2026120601" is (probe 39)
_SEND_TAGS = [re.compile(p) for p in (r"^\[kit ([0-9a-f]{10})\]", r"\[kit ([0-9a-f]{10})\]$",
                                      r"^kit ([0-9a-f]{10})\b", r"\bkit ([0-9a-f]{10})$")]
_TAG_AROUND = re.compile(r"^\[kit [0-9a-f]{10}\] | \[kit [0-9a-f]{10}\]$")   # kit's (first) or an older kit's (last)


def tagged(message: str) -> str:
    """The description a send carries to Kaggle: the send's own id, `[kit <10 hex>]`, random (the
    note beside the CSV keeps it: kit.kaggle.notes.sent_as), then the user's message. A send whose
    answer was lost, or that a kill cut off, is found in the competition's list by it: never a
    teammate's or an earlier send of the same bytes and message, whatever the clocks say. The id
    goes first, so a server that cuts descriptions short keeps it (probe 35: one that kept 30
    characters cut an id at the end, and the lost send was sent again); a message longer than
    MESSAGE_SENT is cut there (kit's ledger keeps it whole)."""
    text = message.strip()
    if len(text) > MESSAGE_SENT:
        text = text[:MESSAGE_SENT - 3].rstrip() + "..."
    return f"[kit {token_hex(5)}] {text}"


def untagged(description: str) -> str:
    """The user's message of a description `tagged` made, or an older kit's (id last); any other as it is."""
    return _TAG_AROUND.sub("", description, count=1)


def is_tagged(description: str) -> bool:
    return send_id(description) is not None


def send_id(description) -> str | None:
    """The send id a description carries (kit's, first, or an older kit's, last); None."""
    text = description.strip() if isinstance(description, str) else ""
    found = next((m for tag in _SEND_TAGS if (m := tag.search(text))), None)
    return found.group(1) if found else None


def same_send(sent: str, listed) -> bool:
    """Whether a listed submission's description is the send whose description was `sent`: by its id
    when `sent` has one; an older kit's untagged send by its whole message."""
    tag = send_id(sent)
    listed = listed if isinstance(listed, str) else ""
    return send_id(listed) == tag if tag else listed == sent


def cut_short(sent: str, listed) -> bool:
    """Whether a listed description could be `sent` cut short by a server (its id gone with it): empty,
    or the start of `sent`, and carrying no send id of its own. Such a new submission might be the
    send whose answer was lost: kit cannot tell, so it does not send again."""
    listed = (listed if isinstance(listed, str) else "").strip()
    return send_id(listed) is None and sent.startswith(listed)


def may_be_cut_short(sent: str, sub: dict, file_name: str, user: str = "") -> bool:
    """Whether a listed submission (kit.kaggle.worker's dict) could be the send `sent` with its id cut
    off: its description `cut_short`, of that file (a server may leave the name out), and not by
    another account when `user` and the list both name one (a teammate's is not ours)."""
    return (cut_short(sent, sub["description"]) and sub["file"] in ("", file_name)
            and (not user or sub.get("by") in ("", None, user)))


def call(op: str, params: dict, endpoint: str | None = None, env: dict | None = None, log=None,
         on_event=None) -> dict:
    """Run one operation in a worker process; its log lines go to `log`, its failure is a KitError.

    `on_event` sees the worker's milestones as they happen (e.g. "submitted", with the ref).
    """
    check_stopped()             # nothing is sent after a stop, even one Python lost in a callback
    endpoint = endpoint_or_env(endpoint)
    check_timing()
    wenv = _worker_env(endpoint, env)
    hidden = secrets(wenv)
    log = log or (lambda line: None)
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(python_module("kit.kaggle.worker"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=wenv,
                                preexec_fn=die_with_parent())     # killed with us: no unrecorded submission
        assert proc.stdin is not None and proc.stdout is not None     # both PIPE
        proc.stdin.write(json.dumps({"op": op, "params": params}))
        proc.stdin.close()
        result, error = None, None
        # A wait is bounded by its timeout even while one HTTP call hangs (the client sets no timeout of
        # its own): the worker is stopped STALLED seconds after it, and the row stays as it was; a list
        # (`kit scores`) after 5 x STALLED.
        limit = float(params["timeout"]) + STALLED if op in ("submit", "wait") else 5 * STALLED if op == "list" \
            else None
        watchdog = threading.Timer(limit, proc.kill) if limit is not None else None
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "log" in msg:
                log(scrub(msg["log"], hidden))
            if "event" in msg and on_event:
                on_event(msg["event"])
            result, error = msg.get("result", result), msg.get("error", error)
        proc.wait()
        if watchdog is not None:
            watchdog.cancel()
            if result is None and error is None and proc.returncode == -9:
                within = f"--timeout {float(params['timeout']):g}s (and {STALLED:g}s more)" if "timeout" in params \
                    else f"{limit:g}s"
                made = f"; {MAYBE_MADE}: look at the competition's submissions" if op == "submit" else ""
                raise KitError(f"{op}: Kaggle did not answer within {within}; stopped waiting{made}")
        if error is not None:
            raise KitError(scrub(error, hidden))
        if result is None:
            err.seek(0)
            tail = " | ".join(err.read().strip().splitlines()[-3:])
            raise KitError(scrub(f"the kaggle client stopped unexpectedly during {op} "
                                 f"(exit {proc.returncode}): {tail or 'no output'}", hidden))
        return result
