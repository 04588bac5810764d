"""`kit bench`: ratios of kit's fast paths against the course sample's pipeline."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark kit against the course sample's pipeline")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"],
                   help="synthetic competition to measure on (default demo; full = the real size)")
    p.add_argument("--data", default=None, help="measure on this data dir instead of a synthetic one")
    p.add_argument("--out", default=".", help="where bench.json and bench.md go (default: here)")
    p.add_argument("--cache", default="data", help="where the synthetic bench data is generated")
    p.add_argument("--quick", action="store_true", help="fewer steps and batches (a smoke run)")
    p.add_argument("--train-steps", type=int, default=None, help="training steps per timing")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the baseline")
    p.add_argument("--long", type=int, default=0, metavar="STEPS",
                   help="also run both training loops STEPS steps (e.g. 6000) and compare their speed in the "
                        "first and last tenth: catches a late slowdown such as CPU denormals")
    p.add_argument("--compile", dest="compile_too", action=argparse.BooleanOptionalAction, default=None,
                   help="also time training with torch.compile (default: on a GPU only; a CPU compiles for minutes)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from kit.bench import run_bench, to_markdown

    result = run_bench(args.preset, args.data, args.out, args.quick, args.train_steps, args.workers,
                       args.cache, args.long, args.compile_too, log=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True))
    print(to_markdown(result))
    return 0
