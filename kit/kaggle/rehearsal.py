"""A recipe's last step: submit to the stand-in the user named, else rehearse on a local stand-in when the
data is a synthetic competition (its answer key scores the CSV; credentials or not: Kaggle could only
refuse its ids, and count the try), else to Kaggle when there are credentials, else skip.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import urllib.parse
from pathlib import Path

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle.client import KAGGLE, STAND_IN, endpoint_or_env
from kit.kaggle.client import target as named_target
from kit.kaggle.credentials import CREDENTIALS_HELP, credential_source, kaggle_json_problem
from kit.kaggle.cutoffs import find_cut_off, look_up_earlier_versions
from kit.kaggle.ledger import ledger_problem, read_ledger, sending, update_ledger
from kit.kaggle.notes import find_submitted, index_problem, index_sent, indexed_csvs, interrupted_send
from kit.kaggle.pending import kept_rows, merge_pending, restore_noted
from kit.kaggle.server import StandIn
from kit.kaggle.submissions import await_score, submit
from kit.layout import SYNTH_MARKER, data_competition, is_synthetic, synth_marker
from kit.submission import refuse_ledger


def recipe_competition(data_dir, competition: str | None = None) -> str:
    """Where a recipe on data_dir submits: `competition` when given, else the synthetic data's, else the
    one `kit data download` fetched it from (the 2021 and 2023 editions too), else ml2022spring-hw4."""
    return competition or data_competition(data_dir) or DEFAULT_COMPETITION


VOTES_SENT = ".votes.sent"     # in a recipe's runs folder: the CSVs its votes were sent as, one path a line


def recipe_submit(csv_path, message: str, data_dir, competition: str | None = None,
                  submissions_dir="submissions", log=None, endpoint: str | None = None, recipe_root=None) -> dict:
    """Submit at the end of a recipe to `competition` (recipe_competition): to the stand-in at `endpoint`
    (or KIT_KAGGLE_ENDPOINT) when one is named, the one the kernels used; else real Kaggle with
    credentials, else a stand-in for synthetic data.

    Returns {status, public, private, ref, target, row, reason, recorded} (_result). Never raises for a failed
    submission (status FAILED/ERROR, recorded in the ledger); SKIPPED writes no ledger row. From the
    check for an earlier submission of these bytes until the attempt's row is written, the ledger's
    sending lock is held: two recipes sharing a ledger send a file once. recipe_root: the recipe's runs
    folder (RUNS/NAME), whose VOTES_SENT lists the CSVs its votes were sent as (kit.kaggle.notes.index_sent):
    a vote of the same bytes sent from another working folder (another submissions/, probe 47) counts as sent.
    """
    ledger = Path(submissions_dir) / "ledger.csv"
    competition = recipe_competition(data_dir, competition)
    if not (endpoint_or_env(endpoint) or is_synthetic(data_dir) or credential_source()):
        return _result("SKIPPED", None, None,
                       f"not submitted: {data_dir} is not a synthetic competition, and {CREDENTIALS_HELP}")
    if not endpoint_or_env(endpoint) and is_synthetic(data_dir) and missing_answers(data_dir):
        return _result("SKIPPED", None, None, f"not submitted: {missing_answers(data_dir)}")
    problem = ledger_problem(ledger)
    if problem:
        return _result("FAILED", None, None, f"{problem}; nothing was sent", recorded=False)
    votes = Path(recipe_root) / VOTES_SENT if recipe_root else None
    with sending(ledger, log):        # ledger_problem made its folder; the index is read and written under it
        if votes and index_problem(votes) and log:         # probe 50: passed over without a word
            log(f"note: {index_problem(votes)} (the CSVs this recipe's votes were sent as): a send of this vote "
                "from another working folder may not be found")
        also = indexed_csvs(votes) if votes else []
        if votes:
            index_sent(votes, csv_path, log)
        return _send(csv_path, message, data_dir, competition, ledger, log, endpoint, also)


def _send(csv_path, message, data_dir, competition, ledger, log, endpoint, also) -> dict:
    # Rows only the pending file holds count as submitted (or lost) too; one that cannot be merged
    # stops submit() before it sends.
    with contextlib.suppress(KitError):
        merge_pending(ledger)
    if endpoint_or_env(endpoint):
        # A rehearsal against `kit kaggle serve` must never spend a real submission, credentials or not.
        # (competition: recipe_competition's, --competition first, then the synthetic data's.)
        return _recipe_attempt(csv_path, message, data_dir, competition, ledger, endpoint_or_env(endpoint), None,
                               log, named_target(endpoint), also)
    if is_synthetic(data_dir):
        with rehearsal_stand_in(data_dir, competition) as (server, env):
            _mark_lost(ledger, csv_path, server.competition)
            return _recipe_attempt(csv_path, message, data_dir, server.competition, ledger, server.url, env,
                                   log, STAND_IN, also)
    return _recipe_attempt(csv_path, message, data_dir, competition, ledger, None, None, log, KAGGLE, also)


def _result(status: str, target: str | None, row: dict | None, reason: str | None, recorded: bool = True) -> dict:
    """recipe_submit's record; `recorded` is False when the ledger could not take the attempt's row."""
    return {"status": status, "public": (row or {}).get("public") or None,
            "private": (row or {}).get("private") or None, "ref": (row or {}).get("ref") or None,
            "target": target, "row": row, "reason": reason, "recorded": recorded}


def check_recipe_submissions(submissions_dir, name: str, after: dict, running_after: bool,
                             data_dir=None, endpoint: str | None = None, log=None) -> None:
    """Before a recipe trains: the folder its vote's CSV (NAME.csv) and ledger go to can take them, and a
    recipe that submits can read its ledger and has the credentials its submission needs, so a long run
    does not end on what could be fixed at its start. after: the recipe's [after] table; running_after:
    False when the recipe stops after training; endpoint: the stand-in the recipe submits to, if any."""
    if not running_after or after["ensemble"] == "none":
        return
    ledger = Path(submissions_dir) / "ledger.csv"
    problem = ledger_problem(ledger)            # its disk's free space too
    csv = Path(submissions_dir) / f"{name}.csv"
    if problem is None and csv.exists() and not csv.is_file():
        problem = f"{csv}: is a folder, where the vote's CSV goes"
    refuse_ledger(csv, "the recipe's vote")         # one kept under the recipe's name, before any training
    if problem:
        raise KitError(f"{problem}: the recipe writes its vote and ledger in {submissions_dir}/ (run it from a "
                       f"folder you can write); nothing was trained")
    if after["submit"]:
        read_ledger(ledger)         # a damaged ledger is one line now, not after the training
        _check_credentials(data_dir, endpoint, log or (lambda message: None))


def _check_credentials(data_dir, endpoint: str | None, log) -> None:
    """The user's credentials, where the recipe's submission will use them: on a stand-in named by
    --endpoint or KIT_KAGGLE_ENDPOINT (it takes any, but the client needs some), and on Kaggle when
    there are some (none there: the recipe trains and skips the submission, and says so now). A
    synthetic competition with no endpoint rehearses with credentials of its own."""
    url = endpoint_or_env(endpoint)
    if url is None and data_dir is not None and is_synthetic(data_dir):
        if missing_answers(data_dir):
            log(f"{missing_answers(data_dir)}: the recipe's submission will be skipped")
        return
    source = credential_source()
    if url is None and source is None:
        log(f"{CREDENTIALS_HELP}; the recipe trains and votes, and its submission will be skipped (add them "
            "before it ends, or send the CSV later with `kit submit`)")
    if url and source is None:
        raise KitError(f"{CREDENTIALS_HELP} (the stand-in at {url} takes any, e.g. KAGGLE_USERNAME=rehearsal "
                       f"KAGGLE_KEY=anything); nothing was trained")
    # Only kaggle.json itself must hold the key: with the key in the environment, a token-only one is fine.
    problem = kaggle_json_problem(os.environ, need_key=source.endswith("kaggle.json")) if source else None
    if problem:
        raise KitError(f"{problem}; nothing was trained")
    if url:
        _check_listening(url)


def _check_listening(url: str) -> None:
    """Something listens at the stand-in's address (a typo in its port, or `kit kaggle serve` not
    started, was found only after the whole budget, and a minute of retries)."""
    why = not_listening(url)
    if why:
        raise KitError(f"nothing answers at {url} ({why}): start `kit kaggle serve` there first, or fix "
                       "--endpoint / KIT_KAGGLE_ENDPOINT; nothing was trained")


def not_listening(url: str) -> str | None:
    """Why nothing answers at URL's host and port (connection refused, no such host), or None when
    something does: a stand-in not started is said at once, not after a minute of retries."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=10):
            return None
    except (OSError, ValueError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__


def missing_answers(data_dir) -> str | None:
    """Why a synthetic competition's own stand-in cannot score it (its answer key is not where its marker
    says: moved, deleted, or data fetched from someone's stand-in), or None."""
    answers = (synth_marker(data_dir) or {}).get("answers")
    if answers and Path(answers).is_file():
        return None
    return (f"{Path(data_dir) / SYNTH_MARKER} names no answer key that is there ({answers or 'none'}), so the "
            "recipe's own stand-in cannot score its vote (send it to a stand-in: KIT_KAGGLE_ENDPOINT=URL)")


@contextlib.contextmanager
def rehearsal_stand_in(data_dir, competition: str | None = None, **options):
    """A stand-in serving the synthetic competition in data_dir (scored by the answer key its synth
    marker names) for the block, as `competition` when given (else the synthetic data's name), and the
    environment the worker needs to reach it: rehearsal credentials in a private config dir, so nothing
    of the user's is read or written."""
    if missing_answers(data_dir):           # a stand-in cannot score without it: one line, not a traceback
        raise KitError(missing_answers(data_dir))
    synth = synth_marker(data_dir) or {}
    comp = competition or synth.get("competition") or DEFAULT_COMPETITION
    with tempfile.TemporaryDirectory(prefix="kit-rehearsal-") as home:
        env = {"KAGGLE_USERNAME": "kit-rehearsal", "KAGGLE_KEY": "local-stand-in", "KAGGLE_CONFIG_DIR": home}
        with StandIn(data_dir, synth["answers"], competition=comp, pending_polls=1, **options) as server:
            yield server, env


LOST = "its rehearsal stand-in stopped before scoring it (the recipe was stopped); sent again on the re-run"


def _mark_lost(ledger: Path, csv_path, competition: str) -> None:
    """A PENDING row of this CSV's bytes on a rehearsal stand-in can never be scored: that stand-in
    lived as long as the recipe that started it, which was stopped before the score came back. The
    row is marked FAILED (LOST), so the file is sent to this run's stand-in rather than taken as
    submitted."""
    if not Path(csv_path).is_file() or not ledger.is_file():
        return
    frame = read_ledger(ledger)
    lost = frame[(frame["sha256"] == sha256_file(csv_path)) & (frame["competition"] == competition)
                 & (frame["target"] == STAND_IN) & (frame["status"] == "PENDING")]
    for ref in sorted(set(lost["ref"]) - {""}):     # a row without a ref was never accepted
        update_ledger(ledger, competition, ref, {"status": "FAILED", "error": LOST}, target=STAND_IN)


def _score_of_earlier(earlier: dict, said: str, ledger: Path, endpoint, env, log, poll):
    """The earlier send's score, waited for as a recipe's send is (a re-run after a kill during the wait
    showed it PENDING for ever, without a word). A rehearsal's own stand-in's PENDING rows are LOST
    before this (_mark_lost): it died with its run."""
    try:
        return await_score(earlier, earlier.get("ledger") or ledger, endpoint, env, log, poll), said
    except KitError as e:
        return earlier, said + f"; waiting for its score failed ({e}): `kit scores` fetches it later"


def _found_cut_off(csv_path, cut: dict, found: dict, ledger: Path, endpoint, env, log, poll) -> dict:
    """A cut-off send found in the competition's list (now in the ledger): not sent again; waited for
    until scored, as any recipe send is (a failed wait leaves its PENDING row for `kit scores`)."""
    said = (f"the send of these same bytes at {cut['time']}, cut off before its answer, reached Kaggle (ref "
            f"{found['ref']}, found in the competition's submissions and now in {ledger}); not sent again")
    log(f"not submitting {csv_path}: {said}")
    if found["status"] == "PENDING":
        try:
            found = await_score(found, ledger, endpoint, env, log, poll)
        except KitError as e:
            said += f"; waiting for its score failed ({e}): `kit scores` fetches it later"
    return _result(found["status"], found["target"], found, said)


def _recipe_attempt(csv_path, message, data_dir, competition, ledger, endpoint, env, log, target, also=()) -> dict:
    log = log or (lambda line: None)
    if target != STAND_IN:          # a row deleted by hand: sent all the same (a rehearsal's stand-in is gone)
        restore_noted(ledger, csv_path, competition, target, log)
    earlier = find_submitted(ledger, csv_path, competition, target, also)
    # The stand-in scores at once, so poll it briskly; real Kaggle keeps the usual interval.
    poll = None if target == KAGGLE or "KIT_KAGGLE_POLL" in os.environ else 0.2
    cut = interrupted_send(ledger, csv_path, competition, target) if target != STAND_IN else None
    if target != STAND_IN:      # the sends of the CSV's earlier versions cut off before their answer (probe 46)
        look_up_earlier_versions(csv_path, competition, ledger, endpoint, env, log, target)
    if cut is not None:         # (a rehearsal's own stand-in died with the recipe: sent again, as a LOST row is)
        try:                    # looked up even beside an earlier send of these bytes: made, it is recorded
            found = find_cut_off(csv_path, cut, competition, ledger, endpoint, env, log, target)
        except KitError as e:
            log(f"a send of {csv_path} at {cut['time']} was cut off before its answer, and kit could not tell "
                f"whether it was made ({e}): look at the competition's submissions")
            if earlier is None:
                return _result("FAILED", target, None,
                               f"a send of these same bytes at {cut['time']} was cut off before the answer came "
                               f"back, so it may have been made (and counted against the day's submissions), and "
                               f"kit could not tell ({e}); not sent again: look at the competition's submissions, "
                               f"and if it is not there send it with `kit submit {csv_path} -m ...`", recorded=False)
            found = None
        if found is not None:
            return _found_cut_off(csv_path, cut, found, ledger, endpoint, env, log, poll)
        if earlier is None:
            log(f"the send of {csv_path} at {cut['time']}, cut off before its answer, is not in the competition's "
                "submissions: it never arrived, so it is sent now")
    if earlier is not None:
        other = f", recorded in {earlier['ledger']}" if earlier.get("ledger") else ""    # another folder's ledger
        said = f"identical file already submitted at {earlier['time']} (ref {earlier['ref']}{other}); not sent again"
        log(f"not submitting {csv_path}: {said}")
        if earlier["status"] == "PENDING" and earlier["ref"]:     # a kill cut its wait short (probe 39)
            earlier, said = _score_of_earlier(earlier, said, ledger, endpoint, env, log, poll)
        return _result(earlier["status"], target, earlier, said)
    before = len(read_ledger(ledger))
    kept_before = {row["ref"] for row in kept_rows(ledger)}
    try:
        row = submit(csv_path, message, competition, data_dir=data_dir, wait=True, ledger=ledger, endpoint=endpoint,
                     poll=poll, env=env, log=log, where=target, note=f"submitting {csv_path}")
        return _result(row["status"], target, row, None)
    except KitError as e:
        reason = str(e)
    frame = read_ledger(ledger).iloc[before:]          # only rows this attempt wrote
    mine = frame[(frame["file"] == str(csv_path)) & (frame["competition"] == competition)].to_dict("records")
    if mine:
        return _result(mine[-1]["status"], target, mine[-1], reason)
    # Made, but the ledger could not take its row: it waits in a pending file (kit.kaggle.pending).
    kept = [row for row in kept_rows(ledger) if row["file"] == str(csv_path) and row["competition"] == competition
            and row["ref"] and row["ref"] not in kept_before]
    if kept:
        return _result(kept[-1]["status"], target, kept[-1], reason, recorded=False)
    return _result("FAILED", target, None, reason, recorded=False)
