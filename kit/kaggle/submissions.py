"""Sending a submission: validate the CSV, submit it through the worker (retrying 429/5xx), wait for
its score, and record every attempt in the ledger; `refresh_ledger` fetches scores still pending.
"""
from __future__ import annotations

from pathlib import Path

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle.client import call, poll_interval, target
from kit.kaggle.ledger import append_ledger, now, read_ledger, update_ledger
from kit.records import SubmissionManifest


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
    manifest = SubmissionManifest.beside(csv_path) or SubmissionManifest()
    data_dir = data_dir or manifest.data_dir
    if not data_dir:
        raise KitError(f"{csv_path}: no manifest {csv_path.with_suffix('.json').name} beside it names the "
                       f"data dir; pass --data DIR so the CSV is checked before it is sent")
    require_valid(csv_path, data_dir)
    read_ledger(ledger)         # a damaged ledger stops us before anything is sent, not after
    row = {"time": now(), "competition": competition, "file": str(csv_path), "sha256": sha256_file(csv_path),
           "message": message, "members": ";".join(map(str, manifest.members or [])), "vote": manifest.vote or "",
           "ref": "", "status": "", "public": "", "private": "",
           "target": target(endpoint), "error": ""}

    def submitted(event: dict) -> None:     # recorded at once, so a crash while waiting loses nothing
        row.update(ref=str(event["ref"]), status="PENDING")
        append_ledger(ledger, row)

    params = {"competition": competition, "file": str(csv_path.resolve()), "message": message,
              "wait": wait, "timeout": timeout, "poll": poll_interval() if poll is None else poll}
    try:
        done = call("submit", params, endpoint, env, log, on_event=submitted)
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


def refresh_ledger(ledger, competition: str | None = None, endpoint: str | None = None, env=None, log=None) -> int:
    """Fetch status and scores of PENDING rows from Kaggle (or the stand-in); returns rows updated."""
    frame = read_ledger(ledger)
    pending = frame[(frame["status"] == "PENDING") & (frame["ref"] != "") & (frame["target"] == target(endpoint))]
    if competition:
        pending = pending[pending["competition"] == competition]
    updated = 0
    for comp, rows in pending.groupby("competition"):
        refs = [int(r) for r in rows["ref"]]
        found = call("list", {"competition": comp, "refs": refs}, endpoint, env, log)["submissions"]
        for sub in found:
            if str(sub["ref"]) in set(rows["ref"]) and sub["status"] != "PENDING":
                update_ledger(ledger, comp, sub["ref"], {k: sub[k] for k in ("status", "public", "private", "error")})
                updated += 1
    return updated
