"""`python -m kit.bench.child zoo DATA STEPS BATCH SEED | memory DATA STEPS BATCH`: one benchmark
training in a process of its own (a zoo member, or a run whose peak memory is measured); prints json.
"""
from __future__ import annotations

import json
import sys

from kit.bench.training import memory_member, zoo_member


def main(argv: list[str]) -> int:
    kind, data_dir, *numbers = argv
    if kind == "zoo":
        result = zoo_member(data_dir, *map(int, numbers))
    elif kind == "memory":
        result = memory_member(data_dir, *map(int, numbers))
    else:
        raise SystemExit(f"kit.bench.child: unknown benchmark {kind!r} (zoo | memory)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
