"""`kit submit` and `kit scores`: send a CSV, read the ledger (`kit kaggle serve`, the offline stand-in:
kit.cli.serve).

Argument parsing and printing only; the work is in kit.kaggle (client, ledger, notes, cut-off sends).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
from collections.abc import Callable
from pathlib import Path

from kit import DEFAULT_COMPETITION
from kit.cli import log_line
from kit.errors import KitError
from kit.fsio import sha256_file, utf8_text
from kit.kaggle import KAGGLE, read_ledger, refresh_ledger, score_table, submit
from kit.kaggle.client import check_timing, endpoint_or_env, stand_in_url, target
from kit.kaggle.cutoffs import find_cut_off, look_up_earlier_versions
from kit.kaggle.ledger import maybe_made
from kit.kaggle.ledger import sending as ledger_sending
from kit.kaggle.notes import cut_off_sends, find_submitted, indexed_csvs, interrupted_send, sent_index
from kit.kaggle.pending import merge_pending, restore_noted
from kit.kaggle.refresh import owed_scores, settle_cut_offs
from kit.kaggle.rehearsal import not_listening
from kit.kaggle.submissions import AlreadyMade, await_score
from kit.layout import data_competition, is_synthetic
from kit.names import valid_competition
from kit.records import SubmissionManifest

_log = log_line


def register(sub) -> None:
    p = sub.add_parser("submit", help="validate a submission CSV, send it to Kaggle, record it in the ledger")
    p.add_argument("csv", help="submission CSV (Id,Category); its manifest NAME.json beside it names the data dir")
    p.add_argument("-m", "--message", required=True,
                   help="submission description shown on Kaggle (kit puts the send's id first: '[kit <10 hex>] ')")
    p.add_argument("--competition", default=None,
                   help="where to send it (default: the competition the CSV's data was fetched from by `kit data "
                        f"download`, or the synthetic data's, else {DEFAULT_COMPETITION})")
    p.add_argument("--data", default=None, help="data dir to validate against (default: from the manifest)")
    p.add_argument("--wait", action="store_true", help="poll until Kaggle has scored it (COMPLETE or ERROR)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the score (default 1800)")
    p.add_argument("--ledger", default="submissions/ledger.csv",
                   help="the ledger of submissions (default: submissions/ledger.csv under the current folder)")
    p.add_argument("--endpoint", default=None,
                   help="a local stand-in URL (`kit kaggle serve`) instead of Kaggle; also KIT_KAGGLE_ENDPOINT")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("scores", help="refresh pending submissions and show public vs private scores")
    p.add_argument("--competition", default=None, help="only this competition (default: all in the ledger)")
    p.add_argument("--ledger", default="submissions/ledger.csv",
                   help="the ledger of submissions (default: submissions/ledger.csv under the current folder)")
    p.add_argument("--no-refresh", action="store_true",
                   help="do not ask Kaggle about PENDING rows or scores not yet shown")
    p.add_argument("--endpoint", default=None, help="a local stand-in URL instead of Kaggle")
    p.set_defaults(func=cmd_scores)


def cmd_submit(args: argparse.Namespace) -> int:
    if not args.timeout > 0:        # NaN too: a submission would be spent, then "still PENDING after -5s"
        raise KitError(f"--timeout {args.timeout:g}: must be a number of seconds above 0; nothing was sent")
    made_for, data_dirs = _voted_on(args)
    synthetic = next((d for d in data_dirs if is_synthetic(d)), None)
    if synthetic and not endpoint_or_env(args.endpoint):
        raise KitError(f"{args.csv}: voted on {synthetic}, a synthetic competition (`kit data synth`): Kaggle "
                       "could only score its ids ERROR and count the try against the day's five; nothing was "
                       f"sent: rehearse on a stand-in (`kit kaggle serve --data {synthetic}`, then --endpoint)")
    if args.competition and made_for and args.competition != made_for:
        _log(f"note: {args.csv} was voted on data of {made_for}; sending it to {args.competition}, as "
             "--competition says")
    if made_for and not args.competition and not valid_competition(made_for):    # probe 58 F5: sent, then FAILED
        raise KitError(f"{args.csv}: voted for competition {made_for!r} (its manifest or data dir says so), which is "
                       "no Kaggle competition's name (lower-case letters, digits and hyphens); nothing was sent: "
                       "fix it there, or pass --competition")
    args.competition = args.competition or made_for or DEFAULT_COMPETITION
    try:
        with contextlib.ExitStack() as sending:     # another kit submit waits, then sees this one's row (and note)
            sending.enter_context(ledger_sending(args.ledger, _log))
            row = submit(args.csv, args.message, args.competition, data_dir=args.data, wait=args.wait,
                         ledger=args.ledger, endpoint=args.endpoint, timeout=args.timeout, log=_log,
                         note=_note_resend(args), recorded=sending.close)     # its row is written: not the score
    except KitError as e:       # a check refused the CSV: a cut-off send of it is still to be recorded (probe 47 L2)
        raise KitError(f"{e}{'' if getattr(args, 'checked', False) else _cut_off_hint(args)}") from None
    except AlreadyMade as made:
        row = made.row
        _log(f"not sent again: {args.csv}'s earlier send was made (ref {row['ref']}); run `kit submit` again to "
             "send it once more (another of the day's submissions)")
        if args.wait and row["status"] == "PENDING":    # --wait waits for the score of the send it found too
            try:
                row = await_score(row, args.ledger, args.endpoint, log=_log, timeout=args.timeout)
            except KitError as e:
                raise KitError(f"{args.csv}: its send (ref {row['ref']}, PENDING in {args.ledger}) was made, but "
                               f"waiting for its score failed ({e}); `kit scores` fetches it later") from None
    print(f"submitted {args.csv} to {args.competition} ({row['target']}): ref {row['ref']} "
          f"{row['status']}{_scores_said(row)}")
    return 0


def _cut_off_hint(args: argparse.Namespace) -> str:
    """For the error line of a CSV a check refused (nothing sent): the latest send of the CSV (any version)
    noted with this ledger and cut off before its answer, and the `kit scores` that looks it up; ''
    when there is none."""
    try:
        cuts = cut_off_sends(args.ledger, args.csv, args.competition, target(args.endpoint))
    except KitError:
        return ""
    if not cuts:
        return ""
    look = "kit scores" + (f" --endpoint {args.endpoint}" if args.endpoint else "") + f" --ledger {args.ledger}"
    return f" (a send of {args.csv} at {cuts[0]['time']} was cut off before its answer: `{look}` looks it up)"


def _scores_said(row: dict) -> str:
    """' public X private Y' as far as Kaggle gave them: a COMPLETE submission whose private score is
    hidden until the competition ends, or whose scores are not listed yet, says so."""
    if row["status"] != "COMPLETE":
        return ""
    public = row["public"] if str(row["public"]) != "" else "(not given yet: `kit scores` asks again)"
    private = row["private"] if str(row["private"]) != "" else "(hidden until the competition ends)"
    return f" public {public} private {private}"


def _voted_on(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The competition a CSV was voted for -- its manifest's, else that of --data or the data dir the
    manifest names (kit.layout.data_competition); None when nothing says -- and the data dirs that
    say what it was voted on (--data and the manifest's: a copy of synthetic data named by --data
    must not hide what the manifest records). submit itself names a manifest it cannot read."""
    manifest = SubmissionManifest()
    with contextlib.suppress(KitError):
        manifest = SubmissionManifest.beside(args.csv) or manifest
    data_dir = args.data or manifest.data_dir
    made_for = manifest.competition or (data_competition(data_dir) if data_dir else None)
    return made_for, [d for d in (args.data, manifest.data_dir) if d]


def _note_resend(args: argparse.Namespace) -> Callable[[], str | None]:
    """What to say, once the CSV has passed every check, when these very bytes were submitted to the
    same place before: sending them again is allowed (a plain `kit submit` does what it is told) but
    spends another of the day's five. The ledger and the note beside the CSV are read now, before this
    send is noted there; a cut-off send is looked up in the competition's list (and recorded, when
    found) only once the checks have passed."""
    try:
        merge_pending(args.ledger)      # a row only a pending file holds counts (submit merges them first too)
        restore_noted(args.ledger, args.csv, args.competition, target(args.endpoint), _log)   # so does a noted one
        earlier = find_submitted(args.ledger, args.csv, args.competition, target(args.endpoint))
        cut = interrupted_send(args.ledger, args.csv, args.competition, target(args.endpoint))
    except KitError:            # a damaged ledger or pending file: submit names it
        return lambda: None
    def note() -> str | None:
        args.checked = True         # every check passed: an error from here on is the send's, not the CSV's
        # sends of the CSV's earlier versions cut off before their answer are looked up first (probe 46)
        look_up_earlier_versions(args.csv, args.competition, args.ledger, args.endpoint, log=_log)
        # a cut-off send is looked up even when an earlier send of these bytes is recorded (probe 32): made,
        # it is recorded and nothing is sent; kit said to look before sending again, and it looked
        found = _looked_up(args, cut) if cut is not None else None
        if found is not None:
            raise AlreadyMade(found)
        return _resend_line(args, earlier)

    return note


def _looked_up(args: argparse.Namespace, cut: dict) -> dict | None:
    """The cut-off send `cut`, found in the competition's list and recorded; None when it never arrived,
    or when kit cannot tell (said in a line)."""
    try:
        found = find_cut_off(args.csv, cut, args.competition, args.ledger, args.endpoint, log=_log)
    except KitError as e:       # an older kit's note, the list unreadable, or more than one could be it
        _log(f"note: a send of {args.csv} (these same bytes) at {cut['time']} was cut off before the answer came "
             f"back, and kit could not tell whether it was made ({e}); sending it again, as asked, may spend "
             "another of the day's submissions")
        return None
    if found is not None:
        _log(f"the send of {args.csv} at {cut['time']}, cut off before its answer, reached Kaggle: ref "
             f"{found['ref']} ({found['status']}), now in {args.ledger}")
    return found


def _resend_line(args: argparse.Namespace, earlier: dict | None) -> str | None:
    if earlier is None:
        return None
    same = utf8_text(str(Path(str(earlier.get("file") or args.csv)).resolve())) == \
        utf8_text(str(Path(args.csv).resolve()))          # probe 50 F4: a name kept with U+FFFD is this one too
    sent_as = "" if same else f" as {earlier['file']}"
    other = f", recorded in {earlier['ledger']}" if earlier.get("ledger") else ""        # another folder's ledger
    return (f"note: {args.csv} (these same bytes) was submitted{sent_as} at {earlier['time']} (ref {earlier['ref']}, "
            f"{earlier['status']}{other}); sending it again spends another of the day's submissions")


def _elsewhere(ledger: Path, endpoint: str | None) -> None:
    """One line for each server other than this one that still owes PENDING rows a score: `kit scores`
    asks only the server it is pointed at (a ref means nothing to another one)."""
    frame = read_ledger(ledger)
    here = target(endpoint)
    owed = frame[(frame["status"] == "PENDING") & (frame["ref"] != "") & (frame["target"] != here)]
    for where, rows in owed.groupby("target"):
        if stand_in_url(where):
            how = f"`kit scores --endpoint {stand_in_url(where)}` while that stand-in runs"
        elif where == KAGGLE:
            how = "`kit scores` without --endpoint"
        else:                   # a recipe's rehearsal stand-in (gone with it), or an older kit's row
            how = "nothing: kit cannot reach where it went"
        _log(f"{len(rows)} PENDING submission(s) were sent to {where or 'an unrecorded target'}, not here; "
             f"refreshed by {how}")


def cmd_scores(args: argparse.Namespace) -> int:
    # deferred: brings matplotlib and pandas; `kit --help` imports only the parsers
    from kit.plots import plot_scores

    ledger = Path(args.ledger)
    check_timing()                              # a bad setting is the user's to mend: one line, exit 2
    try:                                        # submissions a failed recording left outside the ledger
        for pending, n in merge_pending(ledger):
            _log(f"added {n} submission row(s) from {pending} to {ledger}")
    except KitError as e:                       # the ledger as it is is still worth showing
        _log(f"could not add pending submissions: {e}")
    if ledger.exists() and not ledger.is_file():
        raise KitError(f"{ledger}: not a file (a ledger is a CSV that `kit submit` writes)")
    frame = read_ledger(ledger) if ledger.is_file() else None
    down = _down(args.endpoint) if not args.no_refresh else None
    if down:                        # probe 50 F5: a minute of retries, for a stand-in that is not running
        _log(f"could not refresh the ledger's submissions: nothing answers at {endpoint_or_env(args.endpoint)} "
             f"({down}); start `kit kaggle serve` there, or fix --endpoint / KIT_KAGGLE_ENDPOINT")
    if not args.no_refresh and frame is not None and (owed_scores(frame) | maybe_made(frame)).any():
        try:
            n = 0 if down else refresh_ledger(ledger, args.competition, args.endpoint, log=_log)
            if n:
                _log(f"updated {n} submission row(s) from the competition's list")
        except KitError as e:   # the table is still worth showing
            _log(f"could not refresh the ledger's submissions: {e}")
        with contextlib.suppress(KitError):     # also when this server could not be asked (probe 47 L3); an
            _elsewhere(ledger, args.endpoint)   # endpoint that is not one was said just above
    try:                        # then sends cut off before any row, noted beside their CSVs (probe 47)
        if not args.no_refresh and not down:
            settle_cut_offs(ledger, args.competition, args.endpoint, log=_log)
    except KitError as e:       # the table is still worth showing
        _log(f"could not look for sends cut off before their answer: {e}")
    if not ledger.is_file():                    # a first `kit scores`: nothing sent yet is no error
        print(f"no submissions yet: no ledger at {ledger} (`kit submit` writes it)")
        return 0
    table = _once(score_table(ledger, args.competition), ledger)
    if table.empty:
        print("no submissions in the ledger" + (f" for {args.competition}" if args.competition else ""))
        return 0
    _print_table(table, ledger)
    try:
        png = plot_scores(table, ledger.with_name("scores.png"))
    except KitError as e:           # the table is printed: the picture is only a view of it
        _log(f"warning: could not draw the scores: {e}")
        return 0
    if png:
        _log(f"wrote {png}")            # a log line: stdout holds the table alone (`kit scores > f`)
    return 0


def _print_table(table, ledger: Path) -> None:
    """The ledger's rows on stdout, best public score first: one table per competition and place they were sent
    to, each under a line naming both, when the ledger holds several (probe 57: a rehearsal's stand-in scores
    were ranked with another competition's in one table, with nothing to tell them apart)."""
    groups = list(table.groupby(["competition", "target"], sort=False, dropna=False))
    digests: dict[Path, str | None] = {}
    for i, ((competition, sent_to), rows) in enumerate(groups):
        if len(groups) > 1:
            where = f"{competition or 'no competition recorded'} ({sent_to or 'sent to: not recorded'})"
            print(("\n" if i else "") + f"{where}: {len(rows)} submission(s)")
        print(f"{'public':>8} {'private':>8} {'gap':>8}  {'status':<8} {'time':<20} {'file':<28} message")
        for _, r in rows.iterrows():
            gap = f"{r['gap']:+.5f}" if r["gap"] == r["gap"] else ""
            print(f"{r['public'] or '-':>8} {r['private'] or '-':>8} {gap or '-':>8}  {r['status']:<8} "
                  f"{r['time']:<20} {_where_now(r, ledger, digests):<28} {_said(r)}")
    print("gap = public - private: positive means the public leaderboard flattered that submission")


def _once(table, ledger: Path):
    """The score table with each submission once: a row copied by hand (a spreadsheet edit) holds the
    same ref from the same server; said in one line each (probe 47 L4: listed twice, it looked like two
    of the day's submissions). The ledger is left as it is."""
    sent = table[table["ref"] != ""]
    copies = sent[sent.duplicated(["target", "ref"], keep=False)]
    for (where, ref), rows in copies.groupby(["target", "ref"], sort=True):
        _log(f"note: submission {ref} ({where}) is in {ledger} {len(rows)} times (a row copied by hand?); "
             "it is one submission, listed once")
    return table[(table["ref"] == "") | ~table.duplicated(["target", "ref"], keep="first")]


def _down(endpoint: str | None) -> str | None:
    """Why the stand-in `kit scores` is pointed at (--endpoint, KIT_KAGGLE_ENDPOINT) does not answer, or None
    (and None for Kaggle itself, whose outages are waited out). An endpoint that is not one is said later."""
    with contextlib.suppress(KitError):
        url = endpoint_or_env(endpoint)
        return not_listening(url) if url else None
    return None


def _where_now(row, ledger: Path, digests: dict) -> str:
    """The file a row's bytes are in now: its name while it holds them; the `NAME.csv.old-<time>` copy
    `kit ensemble` kept when a later vote took the name; else the name, marked replaced (or gone)."""
    sha = str(row.get("sha256") or "")

    def digest(p: Path) -> str | None:
        if p not in digests:
            digests[p] = sha256_file(p) if p.is_file() else None
        return digests[p]

    path = _sent_from(str(row["file"]), ledger, lambda p: digest(p) == sha)
    if not path.is_absolute() and not path.exists():
        path = ledger.parent / path.name

    def shown(p: Path) -> str:      # beside the ledger: its name; elsewhere (other/t3.csv) the way there
        return p.name if p.parent.resolve() == ledger.parent.resolve() else os.path.relpath(p, ledger.parent)

    if not sha or digest(path) == sha:
        return shown(path)
    for old in sorted(path.parent.glob(f"{glob.escape(path.name)}.old-*")):
        if digest(old) == sha:
            return shown(old)
    return f"{shown(path)} ({'replaced' if path.exists() else 'gone'})"


def _sent_from(name: str, ledger: Path, holds: Callable[[Path], bool]) -> Path:
    """The CSV a ledger row's file names, as the ledger's index of sent CSVs (kit.kaggle.notes.sent_index)
    holds it: the absolute path, in the file system's own bytes, of one sent as NAME, the one whose bytes
    are the row's (`holds`) first (probe 50 F3: a name typed relative to another working folder, or one not
    UTF-8 and so kept with U+FFFD, showed as gone although the file was there). NAME itself when the index
    lists none that is there."""
    if Path(name).is_absolute() and Path(name).exists():
        return Path(name)
    tail = name.replace(os.sep, "/").split("/")
    found = [sent for sent in reversed(indexed_csvs(sent_index(ledger)))
             if utf8_text(str(sent)).split(os.sep)[-len(tail):] == tail and sent.exists()]
    return next((sent for sent in found if holds(sent)), found[0] if found else Path(name))


SHOWN_MESSAGE = 100     # characters of a submission's message the score table shows


def _said(row) -> str:
    """A row's message on one line, and why it failed when it did (a refusal past the daily limit)."""
    why = f"  [{row['error']}]" if row["status"] in ("FAILED", "ERROR") and row["error"] else ""
    message = " ".join(str(row["message"]).split())
    if len(message) > SHOWN_MESSAGE:        # probe 51: 3,000 characters flooded the table; the ledger keeps all
        message = message[:SHOWN_MESSAGE - 3].rstrip() + "..."
    return " ".join(f"{message}{why}".split())
