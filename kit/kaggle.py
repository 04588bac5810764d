"""Kaggle through the official client: download the data, submit with retries, poll, keep the ledger.

Every client call runs in a short-lived worker (`python -m kit.kaggle`), because the `kaggle`
package reads its environment and authenticates once, at import time, and prints to stdout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from kit.errors import KitError
from kit.fsio import atomic_path, file_lock, sha256_file, write_csv, write_json

DEFAULT_COMPETITION = "ml2022spring-hw4"
LEDGER_COLUMNS = ["time", "competition", "file", "sha256", "message", "members", "vote", "ref",
                  "status", "public", "private", "target", "error"]
KAGGLE, STAND_IN = "kaggle", "local stand-in"
RETRY_STATUSES = (429, 500, 502, 503, 504)
CREDENTIALS_HELP = (
    "no Kaggle credentials found: create an API token at https://www.kaggle.com/settings/api and "
    "save it as ~/.kaggle/kaggle.json ({\"username\": ..., \"key\": ...}, chmod 600), or set "
    "KAGGLE_USERNAME and KAGGLE_KEY, or put an access token in KAGGLE_API_TOKEN or ~/.kaggle/access_token")


def _setting(name: str, default: float) -> float:
    """Retry and poll timings, overridable from the environment so tests run in milliseconds."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise KitError(f"environment variable {name}={os.environ[name]!r} is not a number") from None


def backoff() -> float:
    return _setting("KIT_KAGGLE_BACKOFF", 2.0)      # first retry delay; doubles each time


def retries() -> int:
    return int(_setting("KIT_KAGGLE_RETRIES", 5))


def poll_interval() -> float:
    return _setting("KIT_KAGGLE_POLL", 10.0)


def max_retry_after() -> float:
    return _setting("KIT_KAGGLE_MAX_RETRY_AFTER", 120.0)   # bound on a server's Retry-After


# ---------------------------------------------------------------- credentials (never read the secret out)
def credential_source(home: str | None = None) -> str | None:
    """Where the client would find credentials, without importing it; None when there are none."""
    home = Path(home or os.path.expanduser("~"))
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    config_dirs = [Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR") else \
        [home / ".kaggle", Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"]
    for folder in config_dirs:
        if (folder / "kaggle.json").is_file():
            return str(folder / "kaggle.json")
    for name in ("access_token", "access_token.txt", "credentials.json"):
        if (home / ".kaggle" / name).is_file():
            return str(home / ".kaggle" / name)
    return None


def _secrets(env: dict) -> list[str]:
    """Values that must never reach output, logs or the ledger."""
    found = [env.get("KAGGLE_KEY"), env.get("KAGGLE_API_TOKEN")]
    for folder in filter(None, [env.get("KAGGLE_CONFIG_DIR"), os.path.expanduser("~/.kaggle")]):
        try:
            found.append(json.loads((Path(folder) / "kaggle.json").read_text()).get("key"))
        except (OSError, ValueError, AttributeError):
            pass
    return [s for s in found if s and len(s) >= 4]


def _scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


# ---------------------------------------------------------------- talking to the worker
def _endpoint(endpoint: str | None) -> str | None:
    return endpoint or os.environ.get("KIT_KAGGLE_ENDPOINT") or None


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


def _call(op: str, params: dict, endpoint: str | None = None, env: dict | None = None, log=None,
          on_event=None) -> dict:
    """Run one operation in a worker process; its log lines go to `log`, its failure is a KitError.

    `on_event` sees the worker's milestones as they happen (e.g. "submitted", with the ref).
    """
    endpoint = _endpoint(endpoint)
    wenv = _worker_env(endpoint, env)
    secrets = _secrets(wenv)
    log = log or (lambda line: None)
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kit.kaggle"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=wenv)
        proc.stdin.write(json.dumps({"op": op, "params": params}))
        proc.stdin.close()
        result, error = None, None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "log" in msg:
                log(_scrub(msg["log"], secrets))
            if "event" in msg and on_event:
                on_event(msg["event"])
            result, error = msg.get("result", result), msg.get("error", error)
        proc.wait()
        if error is not None:
            raise KitError(_scrub(error, secrets))
        if result is None:
            err.seek(0)
            tail = " | ".join(err.read().strip().splitlines()[-3:])
            raise KitError(_scrub(f"the kaggle client stopped unexpectedly during {op} "
                                  f"(exit {proc.returncode}): {tail or 'no output'}", secrets))
        return result


# ---------------------------------------------------------------- ledger
def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_ledger(path: str | os.PathLike):
    """The ledger as a DataFrame of strings (empty with the right columns when there is none).
    A damaged ledger (a row cut short or with extra fields) is refused naming the row, so no
    rewrite can make the damage permanent."""
    import io

    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=str) for c in LEDGER_COLUMNS})
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KitError(f"{path}: unreadable ledger ({e}); {_LEDGER_FIX.format(name=path.name)}") from None
    _check_ledger_rows(path, text)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise KitError(f"{path}: unreadable ledger ({e}); {_LEDGER_FIX.format(name=path.name)}") from None
    for c in LEDGER_COLUMNS:
        if c not in frame.columns:
            frame[c] = ""
    return frame


_LEDGER_FIX = "fix or remove that row, or restore a backup ({name}.bak-*)"
LEDGER_BACKUPS = 10         # backups kept beside the ledger, newest first


def _check_ledger_rows(path: Path, text: str) -> None:
    """Every row has the header's field count and the file ends with a line break (kit always
    writes one, so a last row without it was cut short)."""
    import csv
    import io

    if not text.strip():
        raise KitError(f"{path}: empty ledger (not even a header); restore a backup ({path.name}.bak-*) "
                       "or move it aside")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        for row in reader:
            if row and len(row) != len(header):
                raise KitError(f"{path}: row {reader.line_num - 1} has {len(row)} fields, the header "
                               f"{len(header)} ({','.join(row)[:80]!r}); {_LEDGER_FIX.format(name=path.name)}")
    except csv.Error as e:
        raise KitError(f"{path}: row {reader.line_num - 1} is malformed ({e}); "
                       f"{_LEDGER_FIX.format(name=path.name)}") from None
    if not text.endswith(("\n", "\r")):
        raise KitError(f"{path}: the last row (line {text.count(chr(10)) + 1}) is cut short (no line end: "
                       f"{text.splitlines()[-1][-60:]!r}); {_LEDGER_FIX.format(name=path.name)}")


def _lock(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _rewrite_ledger(path: Path, old, new) -> None:
    """Back the ledger up (ledger.csv.bak-<time>), then write `new` atomically; refuses a
    rewrite that would drop a column, a row or a non-empty field of `old`."""
    import shutil

    kept = len(new) >= len(old) and set(old.columns) <= set(new.columns) and all(
        (new[c].iloc[:len(old)].to_numpy() != "")[old[c].to_numpy() != ""].all() for c in old.columns)
    if not kept:
        raise KitError(f"{path}: refusing to rewrite the ledger: the new version would lose fields (kit bug)")
    if path.is_file():
        shutil.copy2(path, path.with_name(f"{path.name}.bak-{datetime.now().strftime('%Y%m%dT%H%M%S%f')}"))
        for stale in sorted(path.parent.glob(f"{path.name}.bak-*"), reverse=True)[LEDGER_BACKUPS:]:
            stale.unlink(missing_ok=True)
    write_csv(path, new)


def append_ledger(path: str | os.PathLike, row: dict) -> None:
    """Add one row under an exclusive lock, rewriting the file atomically."""
    import pandas as pd

    path = Path(path)
    with file_lock(_lock(path)):
        frame = read_ledger(path)
        new = pd.DataFrame([{c: "" if row.get(c) is None else str(row.get(c)) for c in frame.columns}])
        _rewrite_ledger(path, frame, pd.concat([frame, new], ignore_index=True) if len(frame) else new)


def update_ledger(path: str | os.PathLike, competition: str, ref, changes: dict) -> None:
    """Set fields of the row with this competition and ref; an empty value never blanks a field."""
    path = Path(path)
    with file_lock(_lock(path)):
        frame = read_ledger(path)
        new = frame.copy()
        hit = (new["competition"] == competition) & (new["ref"] == str(ref))
        for key, value in changes.items():
            if value is not None and str(value) != "":
                new.loc[hit, key] = str(value)
        _rewrite_ledger(path, frame, new)


# ---------------------------------------------------------------- submit
def _manifest(csv_path: Path) -> dict:
    path = csv_path.with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise KitError(f"{path}: malformed manifest JSON ({e})") from None


def submit(csv_path, message: str, competition: str = DEFAULT_COMPETITION, data_dir=None, wait: bool = False,
           ledger="submissions/ledger.csv", endpoint: str | None = None, timeout: float = 1800.0,
           poll: float | None = None, env: dict | None = None, log=None) -> dict:
    """Validate, submit (retrying 429/5xx), optionally wait for the score; returns the ledger row.

    Every submission attempt leaves a ledger row: PENDING/COMPLETE/ERROR with Kaggle's ref, or
    FAILED with the reason. A failed or ERROR-scored submission raises KitError after recording it.
    """
    from kit.submission import require_valid

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise KitError(f"{csv_path}: submission file not found")
    if not message or not message.strip():
        raise KitError(f"{csv_path}: a submission message is required (-m MESSAGE)")
    manifest = _manifest(csv_path)
    data_dir = data_dir or manifest.get("data_dir")
    if not data_dir:
        raise KitError(f"{csv_path}: no manifest {csv_path.with_suffix('.json').name} beside it names the "
                       f"data dir; pass --data DIR so the CSV is checked before it is sent")
    require_valid(csv_path, data_dir)
    read_ledger(ledger)         # a damaged ledger stops us before anything is sent, not after
    members = manifest.get("members") or []
    row = {"time": _now(), "competition": competition, "file": str(csv_path), "sha256": sha256_file(csv_path),
           "message": message, "members": ";".join(map(str, members)), "vote": manifest.get("vote", ""),
           "ref": "", "status": "", "public": "", "private": "",
           "target": STAND_IN if _endpoint(endpoint) else KAGGLE, "error": ""}

    def submitted(event: dict) -> None:     # recorded at once, so a crash while waiting loses nothing
        row.update(ref=str(event["ref"]), status="PENDING")
        append_ledger(ledger, row)

    params = {"competition": competition, "file": str(csv_path.resolve()), "message": message,
              "wait": wait, "timeout": timeout, "poll": poll_interval() if poll is None else poll}
    try:
        done = _call("submit", params, endpoint, env, log, on_event=submitted)
    except KitError as e:
        if row["ref"]:
            raise KitError(f"submission {row['ref']} of {csv_path} was made, but waiting for its score "
                           f"failed: {e} (`kit scores` refreshes it later)") from None
        row.update(status="FAILED", error=str(e))
        append_ledger(ledger, row)
        raise KitError(f"submission of {csv_path} failed: {e} (recorded as FAILED in {ledger}; "
                       f"the CSV is kept)") from None
    if not wait:
        return row
    row.update(status=done["status"], public=done["public"], private=done["private"], error=done["error"])
    update_ledger(ledger, competition, row["ref"], {k: row[k] for k in ("status", "public", "private", "error")})
    if done.get("timed_out"):
        raise KitError(f"submission {row['ref']} of {csv_path} is still PENDING after {timeout:g}s; "
                       f"run `kit scores` later to fetch its score")
    if done["status"] == "ERROR":
        raise KitError(f"Kaggle scored submission {row['ref']} of {csv_path} ERROR: "
                       f"{done['error'] or 'no reason given'} (recorded in {ledger})")
    return row


# ---------------------------------------------------------------- scores
def refresh_ledger(ledger, competition: str | None = None, endpoint: str | None = None, env=None, log=None) -> int:
    """Fetch status and scores of PENDING rows from Kaggle (or the stand-in); returns rows updated."""
    frame = read_ledger(ledger)
    target = STAND_IN if _endpoint(endpoint) else KAGGLE
    pending = frame[(frame["status"] == "PENDING") & (frame["ref"] != "") & (frame["target"] == target)]
    if competition:
        pending = pending[pending["competition"] == competition]
    updated = 0
    for comp, rows in pending.groupby("competition"):
        refs = [int(r) for r in rows["ref"]]
        found = _call("list", {"competition": comp, "refs": refs}, endpoint, env, log)["submissions"]
        for sub in found:
            if str(sub["ref"]) in set(rows["ref"]) and sub["status"] != "PENDING":
                update_ledger(ledger, comp, sub["ref"], {k: sub[k] for k in ("status", "public", "private", "error")})
                updated += 1
    return updated


def score_table(ledger, competition: str | None = None):
    """Ledger rows sorted by public score (best first) with the public-private gap beside them."""
    import pandas as pd

    frame = read_ledger(ledger)
    if competition:
        frame = frame[frame["competition"] == competition]
    frame = frame.copy()
    public = pd.to_numeric(frame["public"], errors="coerce")
    private = pd.to_numeric(frame["private"], errors="coerce")
    frame["gap"] = public - private
    frame["_order"] = public
    return frame.sort_values("_order", ascending=False, na_position="last").drop(columns="_order")


def plot_scores(table, png) -> Path | None:
    """Public vs private accuracy per scored submission, as grouped bars; None if nothing is scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    scored = table[pd.to_numeric(table["public"], errors="coerce").notna()]
    if scored.empty:
        return None
    labels = [f"{Path(f).stem}\n{t[:16]}" for f, t in zip(scored["file"], scored["time"])]
    y = range(len(scored))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.5 * len(scored)))
    ax.barh([i - 0.2 for i in y], pd.to_numeric(scored["public"]), height=0.4, label="public")
    ax.barh([i + 0.2 for i in y], pd.to_numeric(scored["private"], errors="coerce"), height=0.4, label="private")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy")
    ax.set_title("public vs private score per submission (sorted by public)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(png)


# ---------------------------------------------------------------- download
def extract_zip(zip_path, dest) -> int:
    """Unpack safely (no member may land outside dest, no links); skips files already unpacked."""
    dest = Path(dest)
    root = dest.resolve()
    written = 0
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                target = root.joinpath(*parts).resolve() if parts else root
                if (info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0])
                        or (target != root and root not in target.parents)):
                    raise KitError(f"{zip_path}: member {info.filename!r} would land outside {dest}; refusing to unpack")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise KitError(f"{zip_path}: member {info.filename!r} is a symbolic link; refusing to unpack")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if target.is_file() and target.stat().st_size == info.file_size:
                    continue
                with zf.open(info) as src, atomic_path(target) as tmp:
                    with open(tmp, "wb") as out:
                        while block := src.read(1 << 20):
                            out.write(block)
                written += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise KitError(f"{zip_path}: not a valid zip ({e}); delete it and download again") from None
    return written


def find_data_dir(root) -> Path:
    """The shallowest folder under root holding the competition's three json files."""
    from kit.data import LAYOUT_FILES

    root = Path(root)
    found = sorted((p.parent for p in root.rglob("metadata.json")
                    if all((p.parent / n).is_file() for n in LAYOUT_FILES) and ".kit-cache" not in p.parts),
                   key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise KitError(f"{root}: no folder with {', '.join(LAYOUT_FILES)} after unpacking; "
                       f"is this an HW4 speaker-identification competition?")
    return found[0]


def download(competition: str, out, endpoint: str | None = None, env: dict | None = None, log=None,
             progress: bool = False) -> Path:
    """Download the competition zip with the official client, unpack it, validate; returns the data dir."""
    from kit.data import check_data, read_layout

    out = Path(out)
    marker = out / ".kit-download.json"
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
            if done.get("competition") == competition:
                read_layout(done["data_dir"])
                return Path(done["data_dir"])
        except (ValueError, KeyError, KitError):
            pass    # incomplete or stale: fetch and unpack again (finished files are skipped)
    out.mkdir(parents=True, exist_ok=True)
    zip_path = Path(_call("download", {"competition": competition, "path": str(out.resolve())},
                          endpoint, env, log)["zip"])
    extract_zip(zip_path, out)
    data_dir = find_data_dir(out)
    check_data(data_dir, progress=progress)
    write_json(marker, {"competition": competition, "zip": str(zip_path), "sha256": sha256_file(zip_path),
                        "data_dir": str(data_dir), "time": _now()})
    return data_dir


# ---------------------------------------------------------------- the recipes' last step
def recipe_submit(csv_path, message: str, data_dir, competition: str = DEFAULT_COMPETITION,
                  submissions_dir="submissions", log=None) -> dict:
    """Submit at the end of a recipe: real Kaggle with credentials, else the stand-in for synthetic data.

    Returns {status, public, private, ref, target, row, reason}. Never raises for a failed
    submission (status FAILED/ERROR, recorded in the ledger); SKIPPED writes no ledger row.
    """
    ledger = Path(submissions_dir) / "ledger.csv"
    marker = Path(data_dir) / ".kit-synth.json"
    if credential_source() and not _endpoint(None):
        return _recipe_attempt(csv_path, message, data_dir, competition, ledger, None, None, log, KAGGLE)
    if not marker.is_file():
        return {"status": "SKIPPED", "public": None, "private": None, "ref": None, "target": None, "row": None,
                "reason": f"not submitted: {data_dir} is not a synthetic competition, and {CREDENTIALS_HELP}"}
    from kit.kaggle_server import StandIn

    synth = json.loads(marker.read_text())
    comp = synth.get("competition") or competition
    with tempfile.TemporaryDirectory(prefix="kit-rehearsal-") as home:
        # Rehearsal credentials in a private config dir, so nothing of the user's is read or written.
        env = {"KAGGLE_USERNAME": "kit-rehearsal", "KAGGLE_KEY": "local-stand-in", "KAGGLE_CONFIG_DIR": home}
        with StandIn(data_dir, synth["answers"], competition=comp, pending_polls=1) as server:
            return _recipe_attempt(csv_path, message, data_dir, comp, ledger, server.url, env, log, STAND_IN)


def _already_submitted(ledger, csv_path, competition: str, target: str) -> dict | None:
    """The ledger row of an earlier successful submission of the same file bytes, if any: a
    re-run recipe must not spend another of the day's Kaggle submissions on an identical CSV."""
    frame = read_ledger(ledger)
    if not len(frame) or not Path(csv_path).is_file():
        return None
    digest = sha256_file(csv_path)
    same = frame[(frame["sha256"] == digest) & (frame["competition"] == competition) &
                 (frame["target"] == target) & frame["status"].isin(["COMPLETE", "PENDING"])]
    return same.iloc[-1].to_dict() if len(same) else None


def _recipe_attempt(csv_path, message, data_dir, competition, ledger, endpoint, env, log, target) -> dict:
    earlier = _already_submitted(ledger, csv_path, competition, target)
    if earlier is not None:
        return {"status": earlier["status"], "public": earlier.get("public") or None,
                "private": earlier.get("private") or None, "ref": earlier.get("ref") or None,
                "target": target, "row": earlier,
                "reason": f"identical file already submitted at {earlier['time']} (ref {earlier['ref']}); "
                          "not sent again"}
    before = len(read_ledger(ledger))
    # The stand-in scores at once, so poll it briskly; real Kaggle keeps the usual interval.
    poll = None if target == KAGGLE or "KIT_KAGGLE_POLL" in os.environ else 0.2
    try:
        row = submit(csv_path, message, competition, data_dir=data_dir, wait=True, ledger=ledger,
                     endpoint=endpoint, poll=poll, env=env, log=log)
        reason = None
    except KitError as e:
        frame = read_ledger(ledger).iloc[before:]          # only rows this attempt wrote
        mine = frame[(frame["file"] == str(csv_path)) & (frame["competition"] == competition)]
        row = mine.iloc[-1].to_dict() if len(mine) else None
        reason = str(e)
    status = row["status"] if row else "FAILED"
    return {"status": status, "public": (row or {}).get("public") or None,
            "private": (row or {}).get("private") or None, "ref": (row or {}).get("ref") or None,
            "target": target, "row": row, "reason": reason}


# ================================================================ worker side (imports kaggle)
def _worker_retrying(what: str, fn, log):
    """Call fn, retrying 429/5xx and connection errors with capped exponential backoff."""
    import requests

    attempts = retries()
    for attempt in range(attempts + 1):
        try:
            return fn()
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status not in RETRY_STATUSES or attempt == attempts:
                raise KitError(_http_message(what, status, e, attempt)) from None
            delay = _retry_after(e.response) or backoff() * 2 ** attempt
            log(f"Kaggle answered HTTP {status} to {what}; retry {attempt + 1}/{attempts} in {delay:.2g}s")
        except (requests.ConnectionError, requests.Timeout) as e:
            if attempt == attempts:
                host = getattr(getattr(e, "request", None), "url", None) or "Kaggle"
                raise KitError(f"{what}: cannot reach {_host(host)} after {attempts + 1} attempts "
                               f"(connection refused or network down)") from None
            delay = backoff() * 2 ** attempt
            log(f"{what}: connection failed; retry {attempt + 1}/{attempts} in {delay:.2g}s")
        time.sleep(delay)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    proxy = os.environ.get("HTTP_PROXY") if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else None
    return proxy or urlsplit(url).netloc or url


def _retry_after(response) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(max(float(value), 0.0), max_retry_after()) if value is not None else None
    except ValueError:
        return None


def _http_message(what: str, status, e, attempt: int) -> str:
    detail = str(e).split(" for url:")[0]
    if status == 401:
        return (f"Kaggle refused the credentials (HTTP 401) for {what}: check ~/.kaggle/kaggle.json or "
                f"KAGGLE_USERNAME/KAGGLE_KEY (or KAGGLE_API_TOKEN); a regenerated token replaces the old one")
    if status == 403:
        return (f"Kaggle denied {what} (HTTP 403): accept the competition rules on its Kaggle page "
                f"(Rules tab) with the account of these credentials")
    if status == 404:
        return (f"{what}: competition not found (HTTP 404): check the name given to --competition "
                f"(e.g. {DEFAULT_COMPETITION}) and that your Kaggle account has joined it")
    tries = f" after {attempt + 1} attempts" if attempt else ""
    return f"Kaggle answered HTTP {status} to {what}{tries}: {detail}"


def _worker_api(log):
    """The authenticated KaggleApi; importing kaggle already tried once and printed any help to stderr."""
    from kaggle import api

    try:
        _worker_retrying("authentication", api.authenticate, log)
    except SystemExit:
        raise KitError(CREDENTIALS_HELP) from None
    return api


def _sub_dict(s) -> dict:
    return {"ref": s.ref, "status": s.status.name, "public": s.public_score or "", "private": s.private_score or "",
            "error": s.error_description or "", "description": s.description or "", "file": s.file_name or "",
            "date": s.date.isoformat() if s.date else ""}


def _list_submissions(client, competition: str, want: set | None, log, max_pages: int = 20) -> list[dict]:
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    subs, token = {}, ""
    for _ in range(max_pages):
        request = ApiListSubmissionsRequest()
        request.competition_name = competition
        request.page_size = 50
        request.page_token = token
        if not token:
            request.page = 1
        response = _worker_retrying("ListSubmissions", lambda: client.list_submissions(request), log)
        fresh = [s for s in response.submissions if s.ref not in subs]
        subs.update((s.ref, _sub_dict(s)) for s in fresh)
        token = response.next_page_token
        if not fresh or not token or (want and want <= set(subs)):
            break
    return list(subs.values())


def _op_submit(api, p: dict, log, emit) -> dict:
    from kaggle.models.kaggle_models_extended import ResumableUploadResult
    from kagglesdk.competitions.types.competition_api_service import (ApiCreateSubmissionRequest,
                                                                      ApiStartSubmissionUploadRequest)

    path = p["file"]
    with api.build_kaggle_client() as kaggle:
        client = kaggle.competitions.competition_api_client
        start = ApiStartSubmissionUploadRequest()
        start.competition_name = p["competition"]
        start.file_name = os.path.basename(path)
        start.content_length = os.path.getsize(path)
        start.last_modified_epoch_seconds = int(os.path.getmtime(path))
        attempts = retries()
        for attempt in range(attempts + 1):
            upload = _worker_retrying("StartSubmissionUpload", lambda: client.start_submission_upload(start), log)
            # The client reports a failed PUT only as a result code (its CLI then exits 0).
            if api.upload_complete(path, upload.create_url, quiet=True) == ResumableUploadResult.COMPLETE:
                break
            if attempt == attempts:
                raise KitError(f"upload of {os.path.basename(path)} failed {attempts + 1} times "
                               f"(the upload URL refused the file)")
            log(f"upload of {os.path.basename(path)} failed; retry {attempt + 1}/{attempts}")
            time.sleep(backoff() * 2 ** attempt)
        create = ApiCreateSubmissionRequest()
        create.competition_name = p["competition"]
        create.blob_file_tokens = upload.token
        create.submission_description = p["message"]
        response = _worker_retrying("CreateSubmission", lambda: client.create_submission(create), log)
        ref = response.ref
        if not ref:   # older servers answer without a ref: find it by description and file name
            for sub in _list_submissions(client, p["competition"], None, log, max_pages=1):
                if sub["description"] == p["message"] and sub["file"] == start.file_name:
                    ref = sub["ref"]
                    break
        if not ref:
            raise KitError(f"Kaggle did not confirm the submission ({response.message or 'no reference returned'})")
    emit({"event": {"kind": "submitted", "ref": ref, "message": response.message}})
    if not p.get("wait"):
        return {"ref": ref, "message": response.message}
    return _op_wait(api, dict(p, ref=ref), log, emit)


def _op_wait(api, p: dict, log, emit=None) -> dict:
    deadline = time.monotonic() + float(p["timeout"])
    poll = float(p["poll"])
    with api.build_kaggle_client() as kaggle:
        client = kaggle.competitions.competition_api_client
        polls = 0
        while True:
            subs = _list_submissions(client, p["competition"], {p["ref"]}, log)
            sub = next((s for s in subs if s["ref"] == p["ref"]), None)
            if sub is None:
                raise KitError(f"submission {p['ref']} is not in {p['competition']}'s submission list")
            if sub["status"] != "PENDING":
                return sub
            if time.monotonic() + poll > deadline:
                return dict(sub, timed_out=True)
            polls += 1
            if polls == 1 or polls % 6 == 0:
                log(f"submission {p['ref']} is PENDING; polling every {poll:g}s")
            time.sleep(poll)


def _op_list(api, p: dict, log, emit=None) -> dict:
    with api.build_kaggle_client() as kaggle:
        client = kaggle.competitions.competition_api_client
        return {"submissions": _list_submissions(client, p["competition"], set(p.get("refs") or []), log)}


def _op_download(api, p: dict, log, emit=None) -> dict:
    _worker_retrying("DownloadDataFiles", lambda: api.competition_download_files(p["competition"], p["path"],
                                                                                  quiet=True), log)
    # The client names the file <competition>.<extension of the redirect URL>; normally .zip.
    found = sorted((f for f in Path(p["path"]).glob(f"{p['competition']}.*") if "partial" not in f.name),
                   key=lambda f: (f.suffix == ".zip", f.stat().st_mtime))
    if not found:
        raise KitError(f"DownloadDataFiles: the client saved no {p['competition']}.* file in {p['path']}")
    return {"zip": str(found[-1])}


_OPS = {"submit": _op_submit, "wait": _op_wait, "list": _op_list, "download": _op_download}


def _worker_main() -> int:
    """Read {"op", "params"} from stdin; JSON lines on stdout: {"log"}..., then {"result"} or {"error"}."""
    request = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)               # whatever the client prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        api = _worker_api(lambda line: emit({"log": line}))
        emit({"result": _OPS[request["op"]](api, request["params"], lambda line: emit({"log": line}), emit)})
    except KitError as e:
        emit({"error": str(e)})
    except Exception as e:  # the client raises many types; report one line, not a traceback
        emit({"error": f"{request['op']}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
