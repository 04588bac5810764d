"""The packed store is verified (issue 19, item 4): a store damaged on disk is rebuilt with one
line, `kit data check` says it is damaged, and a disk that fills while packing is one line."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import kit.data
import kit.store_verify
from kit.cli import main
from kit.data import FeatureStore, store_bytes
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.layout import read_layout

from conftest import garbage


@pytest.fixture
def data(data, monkeypatch) -> Path:
    """conftest's private copy of the tiny competition, with its store in DATA/.kit-cache."""
    monkeypatch.delenv("KIT_CACHE", raising=False)
    return data


def packed(data: Path, capsys) -> FeatureStore:
    store = FeatureStore.open(data, "float32", progress=False)
    capsys.readouterr()
    return store


def rewrite(root: Path, name: str, change) -> None:
    """np.save the array `name` of the store in root after `change` (a valid .npy file)."""
    a = np.load(root / f"{name}.npy")
    np.save(root / f"{name}.npy", change(a.copy()))


def shift(a, by):
    a += by
    return a


def set_one(a, i, value):
    a[i] = value
    return a


DAMAGE = {
    "offsets shifted by 7": (lambda root: rewrite(root, "offsets", lambda a: shift(a, 7)), "offsets"),
    "an offset of 1e12": (lambda root: rewrite(root, "offsets", lambda a: set_one(a, 3, 10**12)), "offsets"),
    "two labels swapped": (lambda root: rewrite(root, "labels", lambda a: a[::-1]), "labels"),
    "features other values, same size": (lambda root: rewrite(root, "features", lambda a: a + 1), "features.npy"),
    "truncated features": (lambda root: (root / "features.npy").write_bytes(
        (root / "features.npy").read_bytes()[:5000]), "features.npy"),
    "empty features": (lambda root: (root / "features.npy").write_bytes(b""), "features.npy"),
    "garbage offsets": (lambda root: (root / "offsets.npy").write_bytes(garbage(300)), "offsets.npy"),
    "missing lengths": (lambda root: (root / "lengths.npy").unlink(), "lengths.npy missing"),
    "garbage done.json": (lambda root: (root / "done.json").write_text("{not json"), "done.json"),
    "missing done.json": (lambda root: (root / "done.json").unlink(), "done.json missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_store_is_rebuilt_with_one_line(data, capsys, monkeypatch, damage):
    good = packed(data, capsys)
    first = good.utterance(5).copy()
    damage_it, named = DAMAGE[damage]
    damage_it(good.root)

    again = FeatureStore.open(data, "float32", progress=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kit: {good.root}: damaged packed store ("), lines
    assert lines[0].endswith("; rebuilding") and named in lines[0], lines
    assert again.root == good.root and np.array_equal(again.utterance(5), first)
    assert np.array_equal(again.offsets, good.offsets) and np.array_equal(again.labels, good.labels)
    assert again.content_digest == good.content_digest       # runs trained on it stay the same data

    monkeypatch.setattr(kit.data, "_pack", lambda *a: pytest.fail("packed again although it was sound"))
    FeatureStore.open(data, "float32", progress=False)
    assert capsys.readouterr().err == ""


def test_a_store_of_an_older_kit_is_packed_once_more(data, capsys, monkeypatch):
    good = packed(data, capsys)
    done = json.loads((good.root / "done.json").read_text())
    old = {k: done[k] for k in ("version", "dtype", "utterances", "frames", "content")}
    (good.root / "done.json").write_text(json.dumps(old))        # what kit wrote before the record

    assert main(["data", "check", str(data)]) == 0                 # not damage: a note, exit 0
    assert f"note: {good.root}: packed store of an older kit" in capsys.readouterr().out
    again = FeatureStore.open(data, "float32", progress=False)
    assert "older kit" in capsys.readouterr().err
    assert again.content_digest == good.content_digest
    assert "record" in json.loads((good.root / "done.json").read_text())

    done = json.loads((good.root / "done.json").read_text())        # format 2: no whole-file digest yet
    (good.root / "done.json").write_text(json.dumps({**{k: v for k, v in done.items() if not k.startswith("features_")},
                                                     "format": 2}))
    FeatureStore.open(data, "float32", progress=False)
    assert "no digest of its whole features.npy" in capsys.readouterr().err
    assert "features_sha256" in json.loads((good.root / "done.json").read_text())


def test_kit_data_check_verifies_the_store(data, capsys):
    good = packed(data, capsys)
    assert main(["data", "check", str(data)]) == 0
    assert f"ok: {good.root}: packed store verified" in capsys.readouterr().out

    rewrite(good.root, "offsets", lambda a: shift(a, 7))
    assert main(["data", "check", str(data)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kit: error: {good.root}: damaged packed store (offsets"), lines


def flip_rows_outside_the_sample(root: Path) -> None:
    """Change the sign of feature rows the sampled digest does not read (in place, as a stray writer or
    a bad disk would): nothing but a digest of the whole file can see it."""
    features = np.lib.format.open_memmap(root / "features.npy", mode="r+")
    sampled = set(np.linspace(0, len(features) - 1, 256).astype(int).tolist())
    rows = [r for r in range(len(features) - 300, len(features)) if r not in sampled]
    features[rows] = -features[rows] - 1
    features.flush()
    del features


def test_rows_the_sample_misses_are_caught_by_the_whole_files_digest(data, capsys):
    """The probe's damage (issue 20 review): rows outside the sampled 256 rewritten in place passed
    every check and changed test predictions. A write changes features.npy's modification time, so
    opening hashes the whole file and rebuilds; `kit data check` always hashes it."""
    good = packed(data, capsys)
    last = good.utterance(good.n_train + good.n_test - 1).copy()
    flip_rows_outside_the_sample(good.root)
    assert main(["data", "check", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "features.npy differs from the digest done.json records" in err[0], err
    again = FeatureStore.open(data, "float32", progress=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "features.npy differs" in lines[0] and lines[0].endswith("; rebuilding"), lines
    assert np.array_equal(again.utterance(again.n_train + again.n_test - 1), last)


def test_a_store_whose_features_were_only_touched_opens_without_packing(data, capsys, monkeypatch):
    """A new modification time with the same bytes (a copy, `touch`) costs one whole-file digest, not a
    rebuild; `kit data check` hashes a sound store and says so."""
    good = packed(data, capsys)
    os.utime(good.root / "features.npy", ns=(1, 1))
    monkeypatch.setattr(kit.data, "_pack", lambda *a: pytest.fail("packed again although it was sound"))
    assert np.array_equal(FeatureStore.open(data, "float32", progress=False).utterance(3), good.utterance(3))
    assert main(["data", "check", str(data)]) == 0
    assert f"ok: {good.root}: packed store verified" in capsys.readouterr().out


def test_done_json_records_what_the_store_must_be(data, capsys):
    store = packed(data, capsys)
    done = json.loads((store.root / "done.json").read_text())
    record = done["record"]
    assert record["features"] == {"shape": [len(store.features), 40], "dtype": "float32",
                                  "bytes": (store.root / "features.npy").stat().st_size}
    assert record["offsets"]["shape"] == [store.n_train + store.n_test]
    assert len(record["index_sha256"]) == 64 and len(record["sample_sha256"]) == 64
    assert done["features_sha256"] == sha256_file(store.root / "features.npy")


# ---------------------------------------------------------------- a full disk while packing
class Usage:
    def __init__(self, free: int):
        self.total, self.used, self.free = 1 << 30, (1 << 30) - free, free


def test_too_little_free_space_is_refused_before_packing(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 20))          # a 1 MiB tmpfs
    need = store_bytes(read_layout(data), "float32")
    with pytest.raises(KitError, match=f"{cache}: not enough free space to pack the store: ") as e:
        FeatureStore.open(data, "float32", cache_dir=cache, progress=False)
    store, margin = f"{need / (1 << 20):.1f} MiB", f"{(need // 50 + (64 << 20)) / (1 << 20):.1f} MiB"
    assert f"store: {store} for the store + {margin} left for the run's other files, 1.0 MiB free" in str(e.value)
    assert [p.name for p in cache.iterdir()] == [".pack.lock"]


def test_a_disk_that_fills_while_packing_is_one_line(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_pwrite = os.pwrite
    writes = []

    def fills_up(fd, buf, position):
        writes.append(position)
        if len(writes) > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, buf, position)

    monkeypatch.setattr(os, "pwrite", fills_up)
    with pytest.raises(KitError, match=f"{cache}: not enough free space to pack the store: "
                                       f"{store_bytes(read_layout(data), 'float32') / (1 << 20):.1f} MiB for the "
                                       f"store, "):
        FeatureStore.open(data, "float32", cache_dir=cache, progress=False)
    assert [p.name for p in cache.iterdir()] == [".pack.lock"]                        # no half store
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert FeatureStore.open(data, "float32", cache_dir=cache, progress=False).n_train == 96


def test_a_write_whose_modification_time_was_put_back_is_still_caught(data, capsys):
    """Probe 9: rows rewritten in place and the old modification time restored (`touch -r`, `cp -p` of a
    damaged copy) were trained on silently; the stamp holds the status-change time too."""
    good = packed(data, capsys)
    features = good.root / "features.npy"
    before = os.stat(features)
    last = good.utterance(good.n_train + good.n_test - 1).copy()
    flip_rows_outside_the_sample(good.root)
    os.utime(features, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(features).st_mtime_ns == before.st_mtime_ns
    again = FeatureStore.open(data, "float32", progress=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "features.npy differs" in lines[0] and lines[0].endswith("; rebuilding"), lines
    assert np.array_equal(again.utterance(again.n_train + again.n_test - 1), last)


def test_a_touched_store_is_hashed_once_not_on_every_opening(data, capsys, monkeypatch):
    good = packed(data, capsys)
    os.utime(good.root / "features.npy", ns=(1, 1))
    FeatureStore.open(data, "float32", progress=False)             # hashes the whole file, finds it sound
    monkeypatch.setattr(kit.store_verify, "sha256_file", lambda path: pytest.fail(f"{path} hashed again"))
    assert np.array_equal(FeatureStore.open(data, "float32", progress=False).utterance(3), good.utterance(3))


def test_a_feature_file_replaced_with_its_old_times_is_found_by_data_check(data, capsys):
    """Probe 10: a feature file rewritten with other values and its size and modification time kept (`cp
    -p`, `rsync -a` of a corrected dataset) keeps the store's key, so the store was used as it was and
    `kit data check` said verified. check now compares every file with its packed rows, and removes a store
    one differs from, so the next opening packs the data again."""
    import torch

    good = packed(data, capsys)
    u = read_layout(data).train[0]
    path = data / u.path
    st = os.stat(path)
    changed = torch.load(path, weights_only=True) + 5.0
    torch.save(changed, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    assert main(["data", "check", str(data)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert u.path in line and "is not what was packed from it" in line and not good.root.exists(), line
    again = FeatureStore.open(data, "float32", progress=False)
    assert np.allclose(again.utterance(0), changed.numpy())


def test_data_check_of_a_sound_store_reads_the_feature_files_once(data, capsys, monkeypatch):
    """check_data's content digest matches the store's, so the file-by-file comparison never runs."""
    good = packed(data, capsys)
    monkeypatch.setattr(kit.data, "file_that_differs", lambda *a: pytest.fail("feature files read a second time"))
    assert main(["data", "check", str(data)]) == 0
    assert f"ok: {good.root}: packed store verified" in capsys.readouterr().out
