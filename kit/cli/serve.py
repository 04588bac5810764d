"""`kit kaggle serve`: a local stand-in for the Kaggle API (kit.kaggle.server, with its kernels in
kit.kaggle.server_kernels), for offline rehearsal with the real client. Argument parsing and printing only."""
from __future__ import annotations

import argparse
import errno
import math
from pathlib import Path

from kit import DEFAULT_COMPETITION, env
from kit.cli import log_line as _log
from kit.errors import KitError
from kit.kaggle.server import FAULT_TARGETS, StandIn
from kit.kaggle.server_competitions import MADE
from kit.layout import read_layout, synth_marker
from kit.names import check_competition
from kit.submission import read_answer_key


def register(sub) -> None:
    k = sub.add_parser("kaggle", help="offline rehearsal: a local stand-in for the Kaggle API")
    ksub = k.add_subparsers(dest="kaggle_command", metavar="ACTION", required=True)
    p = ksub.add_parser("serve", help="serve a (synthetic) competition on 127.0.0.1 for the real client")
    p.add_argument("--data", required=True, help="data dir to serve (zipped like the real download)")
    p.add_argument("--answers", default=None,
                   help="answer key Id,Category,Usage (default: the one `kit data synth` recorded)")
    p.add_argument("--competition", default=None, help=f"competition name (default: from the synth marker, "
                                                        f"else {DEFAULT_COMPETITION})")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free port)")
    p.add_argument("--pending-polls", type=int, default=1, help="answer PENDING for a submission's first K polls")
    p.add_argument("--fail", action="append", default=[], metavar="METHOD:STATUS[:COUNT[:RETRY_AFTER]]",
                   help="inject faults, e.g. CreateSubmission:429:2:1, upload:500, GetKernelSessionStatus:503 or "
                        "kernel-output:500 (repeatable)")
    g = p.add_argument_group("kernels", "pushed scripts run here, one subprocess each, with the competition under "
                                        "their input dir and their working dir as output")
    g.add_argument("--kernel-slots", type=int, default=2, help="kernel sessions running at once (default 2)")
    g.add_argument("--kernel-timeout", type=float, metavar="SECONDS",
                   help="every session's time limit, as Kaggle's 12 hours (a shorter one rehearses resumption)")
    g.add_argument("--kernel-errors", type=int, default=0, metavar="N", help="the next N sessions fail at their start")
    g.add_argument("--gpu-quota-used", type=float, default=0.0, metavar="HOURS",
                   help="GPU hours already used this week (of 30)")
    p.add_argument("--daily-limit", type=int, default=5, metavar="N",
                   help="submissions allowed a UTC day, as Kaggle's (default 5, HW4's; 0: no limit); the next "
                        "is refused with Kaggle's 400")
    p.set_defaults(func=cmd_serve)


def _parse_fault(spec: str):
    parts = spec.split(":")
    try:
        method, status = parts[0], int(parts[1])
        count = int(parts[2]) if len(parts) > 2 else 1
        retry_after = float(parts[3]) if len(parts) > 3 else None
    except (IndexError, ValueError):
        raise KitError(f"--fail {spec!r}: expected METHOD:STATUS[:COUNT[:RETRY_AFTER]], "
                       "e.g. CreateSubmission:429:2:1") from None
    answered = method == MADE and status in (200, 204)      # an answer without its ref, or a "success" of nothing
    if not ((400 <= status <= 599 or answered) and count >= 1 and (retry_after is None or 0 <= retry_after < math.inf)
            and len(parts) <= 4):
        raise KitError(f"--fail {spec!r}: STATUS an HTTP error (400-599; {MADE} also 200 or 204), COUNT 1 or "
                       "more, RETRY_AFTER seconds (0 or more), nothing after them")
    if method not in FAULT_TARGETS:     # a fault for a method nobody calls would never fire
        raise KitError(f"--fail {spec!r}: unknown method {method!r}; known: {', '.join(FAULT_TARGETS)}")
    return method, status, count, retry_after


def _check_answers_fit(answers: Path, data) -> None:
    """The answer key scores this data's test set: one made for another competition would score every
    submission as wrong (or refuse it) without saying why."""
    ids, test = set(read_answer_key(answers)), {u.path for u in read_layout(data).test}
    if ids != test:
        raise KitError(f"{answers}: its Ids are not the test utterances of {data} ({len(test - ids)} missing, "
                       f"{len(ids - test)} unknown); pass the answer key made with this data (--answers)")


def _announce(url: str, competition: str, data) -> None:
    print(f"local Kaggle stand-in for {competition} on {url} (Ctrl-C to stop)", flush=True)
    print("any credentials work, e.g. KAGGLE_USERNAME=rehearsal KAGGLE_KEY=anything", flush=True)
    print(f"  kit submit SUB.csv -m MESSAGE --competition {competition} --wait --endpoint {url}", flush=True)
    print(f"  KAGGLE_API_ENVIRONMENT=LOCALHOST HTTP_PROXY={url} NO_PROXY= kaggle competitions submit "
          f"-c {competition} -f SUB.csv -m MESSAGE", flush=True)
    print(f"  kit recipe run boss --data {data} --launcher kaggle --endpoint {url}", flush=True)


def _check_serve_options(args: argparse.Namespace) -> None:
    """Refuse a stand-in option that would make no sense (a slot count of 0 would wait forever)."""
    bad = [(not 0 <= args.port <= 65535, f"--port {args.port}: 0 to 65535 (0: any free port)"),
           (args.pending_polls < 0, f"--pending-polls {args.pending_polls}: 0 or more"),
           (args.kernel_slots < 1, f"--kernel-slots {args.kernel_slots}: 1 or more"),
           (args.kernel_timeout is not None and not args.kernel_timeout > 0,
            f"--kernel-timeout {args.kernel_timeout}: seconds above 0"),
           (args.kernel_errors < 0, f"--kernel-errors {args.kernel_errors}: 0 or more"),
           (not 0 <= args.gpu_quota_used < math.inf, f"--gpu-quota-used {args.gpu_quota_used}: hours, 0 or more"),
           (args.daily_limit < 0, f"--daily-limit {args.daily_limit}: 0 (no limit) or more")]
    for wrong, message in bad:
        if wrong:
            raise KitError(message)
    if not Path(args.data).is_dir():
        raise KitError(f"{args.data}: no such data dir")


def cmd_serve(args: argparse.Namespace) -> int:
    _check_serve_options(args)

    synth = synth_marker(args.data) or {}
    answers = args.answers or synth.get("answers")
    if not answers:
        raise KitError(f"{args.data}: no answer key; pass --answers KEY.csv (Id,Category,Usage)")
    competition = args.competition or synth.get("competition") or DEFAULT_COMPETITION
    check_competition(competition)
    _check_answers_fit(Path(answers), args.data)
    faults = [_parse_fault(f) for f in args.fail]
    try:
        server = StandIn(args.data, answers, competition=competition, port=args.port,
                         pending_polls=args.pending_polls, faults=faults, log=_log, kernel_slots=args.kernel_slots,
                         gpu_used_hours=args.gpu_quota_used, kernel_timeout=args.kernel_timeout,
                         daily_limit=args.daily_limit or None)
        server.kernels.fail_next(args.kernel_errors)
    except (FileNotFoundError, OSError) as e:
        where = f" on port {args.port}" if isinstance(e, OSError) and e.errno == errno.EADDRINUSE else ""
        raise KitError(f"cannot start the stand-in{where}: {e}") from None
    try:
        with env.exit_on_signals():       # SIGTERM too stops its kernels and removes its temp folder
            _announce(server.url, competition, args.data)
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
