"""`kit data info|check|synth|download`: look at, validate, generate or fetch competition data."""
from __future__ import annotations

import argparse
import json

import numpy as np

from kit.cli import add_cache_option, progress_wanted
from kit.config import DataConfig
from kit.data import data_info, verify_stores
from kit.errors import KitError
from kit.kaggle import download
from kit.layout import check_data
from kit.synth import PRESETS, generate


def register(sub) -> None:
    data = sub.add_parser("data", help="competition data: info, check, synth, download")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("info", help="speakers, utterances, n_mels, frame lengths, size")
    p.add_argument("dir", help="data dir (holds metadata.json, testdata.json, mapping.json)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cache_option(p)
    p.set_defaults(func=cmd_info)

    p = dsub.add_parser("check", help="read every feature file and verify the packed store; report the first problem")
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=None, help="parallel readers (default: 2 x cores, max 8)")
    add_cache_option(p)
    p.set_defaults(func=cmd_check)

    p = dsub.add_parser("synth", help="generate a synthetic competition in the real layout")
    p.add_argument("--out", required=True, help="data dir to write (answer key goes beside it)")
    p.add_argument("--preset", default="demo", choices=list(PRESETS),
                   help="tiny (tests), demo, hard (families of near-identical voices: for tuning), hard-few (the "
                        "same voices, 10 training utterances per speaker: data-limited, like a GPU run), "
                        "tts and many (the tuning suite's other two: speech-synthesizer voices; 600 speakers), "
                        "tts-close (a check outside the suite: closer tts families, longer utterances), "
                        "full (real size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="overwrite a data dir an earlier kit data synth made (never a downloaded one)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes rendering utterances (default: every core; the data does not depend on it)")
    p.set_defaults(func=cmd_synth)

    p = dsub.add_parser("download", help="download and unpack the competition data from Kaggle")
    p.add_argument("--competition", default="ml2022spring-hw4")
    p.add_argument("--out", required=True, help="where to unpack; the data dir is found inside")
    p.set_defaults(func=cmd_download)


def cmd_info(args: argparse.Namespace) -> int:
    info = data_info(args.dir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"data dir     {info['data_dir']}")
    print(f"speakers     {info['speakers']}")
    print(f"n_mels       {info['n_mels']}")
    ups = info["utterances_per_speaker"]
    print(f"per speaker  {ups['min']}-{ups['max']} training utterances")
    print(f"{'split':<6} {'utterances':>10} {'min':>6} {'median':>8} {'max':>6}   (frames)")
    for name in ("train", "test"):
        s = info[name]
        print(f"{name:<6} {s['count']:>10} {s['min']:>6} {s['median']:>8g} {s['max']:>6}")
    print(f"total size   {_human(info['total_bytes'])}")
    print(f"cache        {info['cache']}{'' if info['cache_beside'] else '  (not beside the data)'}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise KitError(f"--workers {args.workers}: at least 1")
    largest: dict = {}
    layout, content = check_data(args.dir, workers=args.workers, progress=progress_wanted(), largest=largest)
    stores = verify_stores(args.dir, content, args.workers, progress_wanted())     # a damaged one: one line
    print(f"ok: {args.dir}: {len(layout.speakers)} speakers, {len(layout.train)} train and "
          f"{len(layout.test)} test utterances, n_mels {layout.n_mels}")
    dtype = DataConfig.store_dtype          # the packed store's default, as kit.data packs it
    if largest["value"] > (top := float(np.finfo(dtype).max)):     # probe 49: "ok", then every training refused it
        print(f"note: {largest['path']}: values up to {largest['value']:.7g} do not fit the default {dtype} packed "
              f"store (at most {top:g}): set data.store_dtype = \"float32\" to train on them as they are")
    for root, older in stores:
        print(f"ok: {root}: packed store verified" if older is None else
              f"note: {root}: {older}; packed again when next opened")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise KitError(f"--workers {args.workers}: at least 1")
    answers = generate(args.out, preset=args.preset, seed=args.seed, force=args.force, workers=args.workers)
    print(f"wrote {args.out} and answer key {answers}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    data_dir = download(args.competition, args.out)
    print(f"data ready: {data_dir}")
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)
