"""Refreshing the ledger from the competition's list (`kit scores`): scores still owed, and FAILED sends
that may have been made, settled by their send id.
"""
from __future__ import annotations

from pathlib import Path

from kit.kaggle.client import KAGGLE, call, is_tagged, same_send, stand_in_url, target
from kit.kaggle.cutoffs import settle_cut_off
from kit.kaggle.ledger import maybe_made, merge_rows, read_ledger, resolve_failed, sending
from kit.kaggle.notes import cut_off_sends, index_problem, indexed_csvs, noted_sends, sent_as, sent_index
from kit.kaggle.pending import merge_pending
from kit.kaggle.submissions import note_accepted
from kit.submission import submitted_note


def owed_scores(frame):
    """Which ledger rows still await something from Kaggle: PENDING ones, and COMPLETE ones without a
    public or private score (Kaggle hides the private score until the competition ends)."""
    scored = frame["status"] == "COMPLETE"
    return (frame["ref"] != "") & ((frame["status"] == "PENDING") |
                                   (scored & ((frame["public"] == "") | (frame["private"] == ""))))


def refresh_ledger(ledger, competition: str | None = None, endpoint: str | None = None, env=None, log=None) -> int:
    """Merge rows a failed recording left pending (kit.kaggle.pending), then fetch status and scores
    of the rows owed them (owed_scores) from Kaggle (or the stand-in), and look up each FAILED send
    that may have been made (its answer lost: found by its send id, it becomes the submission's row);
    returns rows updated."""
    merge_pending(ledger)
    frame = read_ledger(ledger)
    where = target(endpoint)
    here = frame["target"] == where
    if competition:
        here &= frame["competition"] == competition
    owed, unsure = frame[owed_scores(frame) & here], frame[maybe_made(frame) & here]
    updated = 0
    for comp in sorted(set(owed["competition"]) | set(unsure["competition"])):
        rows = owed[owed["competition"] == comp]
        refs = [int(r) for r in rows["ref"]]
        found = call("list", {"competition": comp, "refs": [] if comp in set(unsure["competition"]) else refs},
                     endpoint, env, log)["submissions"]
        _say_unlisted(rows, found, comp, where, ledger, log)
        had = {r["ref"]: r for r in rows.to_dict("records")}
        news = []           # one rewrite of the ledger for them all (each rewrite keeps a backup)
        for sub in found:
            row = had.get(str(sub["ref"]))
            if row is None or sub["status"] == "PENDING":
                continue
            fill = {k: sub[k] for k in ("status", "public", "private", "error") if sub[k] != "" and sub[k] != row[k]}
            if fill:
                news.append({**row, **fill})
        if news:
            merge_rows(ledger, news)        # fills empty fields, replaces PENDING: never takes a score back
            updated += len(news)
        updated += _resolve_maybe_made(ledger, unsure[unsure["competition"] == comp], found, set(frame["ref"]), log)
    return updated


def _say_unlisted(rows, found, comp: str, where: str, ledger, log) -> None:
    """One line for the rows owed a score that the list kit read does not hold: PENDING ones a stand-in
    started again forgot (never scored there), scored ones older than the newest it reads."""
    listed = {str(sub["ref"]) for sub in found}
    missing = rows[~rows["ref"].isin(listed)]
    if not log or missing.empty:
        return
    pending = sorted(missing[missing["status"] == "PENDING"]["ref"], key=int)
    if pending:
        log(f"{comp}: {where} does not list submission(s) {', '.join(pending)}; they stay PENDING in {ledger}")
    older = sorted(missing[missing["status"] != "PENDING"]["ref"], key=int)
    if older:
        log(f"{comp}: submission(s) {', '.join(older)} are not among the {len(found)} listed by {where} "
            f"(the newest): their scores in {ledger} stay as they are")


def _sent_as(ledger, row: dict) -> tuple[str, Path] | tuple[None, None]:
    """The description the row's send carried, from the note beside its CSV, and that CSV: the file as
    `kit submit` was given it, from this folder, else from the ledger's folder or its parent (as
    written, and with links followed: `kit scores --ledger` run elsewhere)."""
    file = Path(row["file"])
    books = dict.fromkeys([Path(ledger).absolute(), Path(ledger).resolve()])
    near = [f for b in books for f in (b.parent, b.parent.parent)]
    folders = [Path.cwd()] if file.is_absolute() else [Path.cwd(), *near]
    for folder in folders:
        sent = sent_as(folder / file, row["sha256"], row["time"])
        if sent:
            return sent, folder / file
    return None, None


def _resolve_maybe_made(ledger, rows, found: list[dict], known: set, log) -> int:
    """The FAILED sends that may have been made (`rows`) whose send id (from the note beside the CSV,
    kit.kaggle.notes.sent_as) one listed submission carries: each row becomes that submission's, or,
    when another row already holds its ref (a re-run found it), says so and no longer asks. Returns
    how many rows changed."""
    resolved = 0
    for row in rows.to_dict("records"):
        sent, csv = _sent_as(ledger, row)
        if not sent or not is_tagged(sent):         # no note, or an older kit's: nothing to find it by
            continue
        hits = [sub for sub in found if sub["ref"] and same_send(sent, sub["description"])]
        if len(hits) != 1:
            continue
        sub, ref = hits[0], str(hits[0]["ref"])
        if ref in known:
            resolve_failed(ledger, row, {"error": f"made: submission {ref}, recorded in its own row"})
            resolved += 1
            continue
        made = {"ref": ref, **{k: sub[k] for k in ("status", "public", "private", "error")}}
        resolve_failed(ledger, row, made)
        known.add(ref)
        note_accepted(csv or Path(row["file"]), {**row, **made}, ledger, log)
        if log:
            log(f"the send of {row['file']} at {row['time']} that may have been made was made: "
                f"submission {ref} ({made['status']}), now in {ledger}")
        resolved += 1
    return resolved


def settle_cut_offs(ledger, competition: str | None = None, endpoint: str | None = None, env=None, log=None) -> None:
    """The sends noted beside the CSVs in the ledger's folder (`.NAME.csv.submitted`), and beside those
    its sent_index lists (sent from elsewhere: probe 48), that were cut off
    before their answer, each looked up in its competition's list by its send id and recorded when found
    (probe 47: `kit scores` showed no trace of one; it was found only when that CSV was sent again, and
    never once the CSV was gone). One line each; KitError only for an endpoint that is not one."""
    if index_problem(sent_index(ledger)) and log:        # probe 50: passed over without a word
        log(f"note: {index_problem(sent_index(ledger))} (the CSVs sent with {ledger}): a cut-off send of one "
            "sent from another folder may not be found")
    here_csvs = [note.with_name(note.name[1:-len(".submitted")]) for note in
                 sorted(Path(ledger).parent.glob(".*.csv.submitted"))]
    csvs = list({c.absolute(): c for c in [*indexed_csvs(sent_index(ledger)), *here_csvs]
                 if submitted_note(c).is_file()}.values())    # each once, as the folder's glob names it
    if not csvs:
        return
    where, log = target(endpoint), log or (lambda line: None)
    with sending(ledger, log):          # a send in flight holds it until its row is written: not taken for cut off
        for csv_path in csvs:
            cuts = _our_cut_offs(csv_path, ledger, competition)
            for comp, _, cut in (c for c in cuts if c[1] == where):
                settle_cut_off(csv_path, cut, comp, ledger, endpoint, env, log, where,
                               f"a send of {csv_path} at {cut['time']}, cut off before its answer,")
            for _, there, cut in (c for c in cuts if c[1] != where):     # probe 48: passed over without a word
                look = "kit scores" if there == KAGGLE else f"kit scores --endpoint {stand_in_url(there)}"
                log(f"note: a send of {csv_path} to {there} at {cut['time']} was cut off before its answer; "
                    f"`{look} --ledger {ledger}` looks it up")


def _our_cut_offs(csv_path, ledger, competition: str | None) -> list[tuple[str, str, dict]]:
    """(competition, target, note line) of each send of CSV_PATH (any version) noted with LEDGER and cut off
    before its answer, that its send id can find (an older kit's, untagged, is found by its bytes when they
    are sent again) on a server `kit scores` can still ask (a recipe's rehearsal stand-in is gone with it).
    A send noted with another ledger is that ledger's: while in flight it holds that one's lock (probe 48)."""
    here = Path(ledger).resolve()
    groups = sorted({(n["competition"], n["target"]) for n in noted_sends(csv_path) if not n["ref"] and
                     n["competition"] == (competition or n["competition"]) and
                     (n["target"] == KAGGLE or stand_in_url(n["target"]))})
    return [(comp, there, cut) for comp, there in groups for cut in cut_off_sends(ledger, csv_path, comp, there)
            if is_tagged(cut["message"]) and Path(cut["ledger"] or ledger).resolve() == here]
