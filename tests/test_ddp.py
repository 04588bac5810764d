"""DDP on CPU: two gloo processes train one model; the ranks end with identical weights while
each rank drew different crops."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import socket
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, data_dir: str, run_dir: str, result_dir: str) -> None:
    """One DDP rank: the env vars `accelerate launch` would set, then kit.train.train."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    from kit.config import from_dict
    from kit.data import FeatureStore
    from kit.train import end_distributed, train

    crop = FeatureStore.crop_batch
    first: list[str] = []

    def spy(self, index, segment_len, rng, random=True):       # record the first training batch
        x, lengths = crop(self, index, segment_len, rng, random)
        if random and not first:
            first.append(hashlib.sha1(x.numpy().tobytes()).hexdigest())
        return x, lengths

    FeatureStore.crop_batch = spy
    cfg = from_dict({"data": {"data_dir": data_dir, "segment_len": 48, "store_dtype": "float32"},
                     "model": {"d_model": 16, "ffn_dim": 32, "n_heads": 2, "dropout": 0.1},
                     "augment": {"specaugment": True},
                     "train": {"batch_size": 8, "max_steps": 12, "eval_every": 6, "warmup_steps": 2,
                               "cpu_threads": 1}})
    summary = train(cfg, run_dir, progress=False)
    Path(result_dir, f"{rank}.json").write_text(json.dumps({**summary, "first_batch": first[0]}))
    end_distributed()


@pytest.mark.slow
def test_two_cpu_ranks_share_weights_but_not_crops(tiny_data, tmp_path):
    from kit.data import FeatureStore

    FeatureStore.open(tiny_data, "float32", progress=False)      # pack once, before the ranks race
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(tiny_data), str(tmp_path / "run"), str(tmp_path)))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2))
    assert r0["processes"] == r1["processes"] == 2
    assert r0["weights_sha1"] == r1["weights_sha1"]               # DDP kept the replicas in step
    assert r0["first_batch"] != r1["first_batch"]                 # each rank cropped its own batch
    assert r0["best_val_acc"] == r1["best_val_acc"]               # validation reduced across ranks
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "summary.json").is_file()
