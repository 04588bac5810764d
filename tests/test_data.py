"""Tests of the data layer (kit.data): `kit data check` on broken data, FeatureStore, crops, split.

Every broken-data case copies the tiny synthetic competition first and breaks one thing.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import kit.data
from kit.cli import main
from kit.data import PAD_VALUE, FeatureStore, load_split, make_split, save_split, split_for
from kit.layout import check_data, read_layout


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def save_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def first_train(data: Path) -> tuple[str, dict]:
    """(speaker, entry) of the first training utterance in metadata.json."""
    meta = load_json(data / "metadata.json")
    spk = next(iter(meta["speakers"]))
    return spk, meta["speakers"][spk][0]


def set_first_train(data: Path, **changes) -> None:
    meta = load_json(data / "metadata.json")
    meta["speakers"][next(iter(meta["speakers"]))][0].update(changes)
    save_json(data / "metadata.json", meta)


def check_fails(data: Path, capsys, *needles: str) -> str:
    """`kit data check` exits 2 with one stderr line holding every needle; returns that line."""
    assert main(["data", "check", str(data)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kit: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------- kit data check
def test_check_passes_on_good_data(data, capsys):
    assert main(["data", "check", str(data)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {data}: 8 speakers, 96 train and 20 test")


@pytest.mark.parametrize("name", ["metadata.json", "testdata.json", "mapping.json"])
def test_missing_json(data, capsys, name):
    (data / name).unlink()
    check_fails(data, capsys, name, "missing")


def test_malformed_json(data, capsys):
    (data / "testdata.json").write_text('{"n_mels": 40, "utterances": [')
    check_fails(data, capsys, "testdata.json", "malformed JSON")


def test_a_test_set_with_no_utterances_is_refused(data, capsys):
    """A recipe would train, vote and spend a submission on a CSV of just its header."""
    test = load_json(data / "testdata.json")
    save_json(data / "testdata.json", {**test, "utterances": []})
    check_fails(data, capsys, "testdata.json", "lists no test utterances")


def test_speaker_missing_from_mapping(data, capsys):
    meta = load_json(data / "metadata.json")
    spk = next(iter(meta["speakers"]))
    meta["speakers"]["id19999"] = meta["speakers"].pop(spk)
    save_json(data / "metadata.json", meta)
    check_fails(data, capsys, "metadata.json", "id19999", "missing from mapping.json")


def test_missing_feature_file(data, capsys):
    _, entry = first_train(data)
    (data / entry["feature_path"]).unlink()
    check_fails(data, capsys, entry["feature_path"], "missing")


def test_truncated_feature_file(data, capsys):
    _, entry = first_train(data)
    path = data / entry["feature_path"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    check_fails(data, capsys, entry["feature_path"], "corrupt")


def test_wrong_number_of_mel_bins(data, capsys):
    _, entry = first_train(data)
    torch.save(torch.zeros(entry["mel_len"], 39), data / entry["feature_path"])
    check_fails(data, capsys, entry["feature_path"], "39", "n_mels=40")


def test_zero_length_in_json(data, capsys):
    _, entry = first_train(data)
    set_first_train(data, mel_len=0)
    check_fails(data, capsys, "metadata.json", entry["feature_path"], "zero-length")


def test_zero_length_tensor(data, capsys):
    _, entry = first_train(data)
    torch.save(torch.zeros(0, 40), data / entry["feature_path"])
    check_fails(data, capsys, entry["feature_path"], "zero-length")


def test_mel_len_disagrees_with_the_tensor(data, capsys):
    _, entry = first_train(data)
    set_first_train(data, mel_len=entry["mel_len"] + 1)
    check_fails(data, capsys, entry["feature_path"], f"mel_len {entry['mel_len'] + 1}")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values(data, capsys, bad):
    _, entry = first_train(data)
    path = data / entry["feature_path"]
    x = torch.load(path, weights_only=True)
    x[3, 7] = bad
    torch.save(x, path)
    check_fails(data, capsys, entry["feature_path"], "NaN or inf")


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_feature_path_escaping_the_data_dir(data, capsys, where):
    _, entry = first_train(data)
    outside = data.parent / "outside.pt"
    shutil.copy(data / entry["feature_path"], outside)        # loadable, but not ours to read
    path = "../outside.pt" if where == "relative" else str(outside)
    set_first_train(data, feature_path=path)
    check_fails(data, capsys, "metadata.json", path, "escapes" if where == "relative" else "absolute")


class RunsCode:
    """Unpickling this object runs a shell command: exactly what weights_only must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_runs_code_is_refused(data, capsys):
    _, entry = first_train(data)
    marker = data.parent / "pwned"
    torch.save(RunsCode(marker), data / entry["feature_path"])
    check_fails(data, capsys, entry["feature_path"], "refused")
    assert not marker.exists()


# ---------------------------------------------------------------- kit data info
def test_info_prints_the_summary(tiny_data, capsys):
    layout = read_layout(tiny_data)
    lengths = np.array([u.mel_len for u in layout.train])
    assert main(["data", "info", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "speakers     8" in out and "n_mels       40" in out
    train_row = next(line for line in out.splitlines() if line.startswith("train"))
    assert train_row.split() == ["train", "96", str(lengths.min()), f"{np.median(lengths):g}", str(lengths.max())]
    assert next(line for line in out.splitlines() if line.startswith("test")).split()[1] == "20"
    assert main(["data", "info", str(tiny_data), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["speakers"] == 8 and info["test"]["count"] == 20


def test_info_on_a_missing_dir(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "not found" in err[0]


# ---------------------------------------------------------------- FeatureStore
def test_store_packs_once_and_reopens_from_cache(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    store = FeatureStore.open(data, dtype="float32", cache_dir=cache, progress=False)
    assert store.features.shape == (int(store.lengths.sum()), 40)
    assert list(store.labels[store.n_train:]) == [-1] * 20
    assert sorted(set(store.labels[:store.n_train])) == list(range(8))

    def no_repack(*args):
        raise AssertionError("packed again although nothing changed")

    monkeypatch.setattr(kit.data, "_pack", no_repack)
    again = FeatureStore.open(data, dtype="float32", cache_dir=cache, progress=False)
    assert again.root == store.root
    assert np.array_equal(again.utterance(5), store.utterance(5))


def test_store_rebuilds_when_metadata_changes(data, tmp_path):
    cache = tmp_path / "cache"
    old = FeatureStore.open(data, dtype="float32", cache_dir=cache, progress=False)
    meta = load_json(data / "metadata.json")
    first = next(iter(meta["speakers"]))
    dropped = meta["speakers"][first].pop()
    save_json(data / "metadata.json", meta)
    new = FeatureStore.open(data, dtype="float32", cache_dir=cache, progress=False)
    assert new.root != old.root and not old.root.exists()       # the stale store is cleaned up
    assert new.n_train == old.n_train - 1 and dropped["feature_path"] not in new.paths


def test_store_float16_is_close_to_the_files(data, tmp_path):
    store = FeatureStore.open(data, cache_dir=tmp_path / "cache", progress=False)
    assert store.features.dtype == np.float16
    x = torch.load(data / store.paths[0], weights_only=True).numpy()
    assert np.allclose(store.utterance(0).astype(np.float32), x, atol=0.02)


def test_crop_batch_pads_short_and_crops_long(tiny_data, tmp_path):
    store = FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path, progress=False)
    short, long_ = int(np.argmin(store.lengths)), int(np.argmax(store.lengths))
    n_short = int(store.lengths[short])
    seg = n_short + 10
    x, lengths = store.crop_batch(np.array([short, long_]), seg, np.random.default_rng(0))
    assert x.shape == (2, seg, 40) and x.dtype == torch.float32
    assert lengths.tolist() == [n_short, seg]
    assert np.array_equal(x[0, :n_short].numpy(), store.utterance(short))
    assert (x[0, n_short:] == PAD_VALUE).all()
    # The long crop is a contiguous window of the utterance.
    whole = store.utterance(long_)
    starts = [s for s in range(len(whole) - seg + 1) if np.array_equal(whole[s:s + seg], x[1].numpy())]
    assert starts
    centre, _ = store.crop_batch(np.array([long_]), seg, np.random.default_rng(0), random=False)
    mid = (len(whole) - seg) // 2
    assert np.array_equal(centre[0].numpy(), whole[mid:mid + seg])


# ---------------------------------------------------------------- split
def test_split_is_stratified_and_seeded(tiny_data, tmp_path):
    store = FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path, progress=False)
    labels = store.labels[:store.n_train]
    split = make_split(labels, 0.1, seed=0)
    assert len(np.intersect1d(split.train, split.val)) == 0
    assert sorted(np.concatenate([split.train, split.val])) == list(range(store.n_train))
    for spk in range(8):                      # 12 utterances each: round(1.2) = 1 held out
        assert (labels[split.val] == spk).sum() == 1 and (labels[split.train] == spk).sum() == 11
    again = make_split(labels, 0.1, seed=0)
    assert np.array_equal(again.val, split.val) and np.array_equal(again.train, split.train)
    assert not np.array_equal(make_split(labels, 0.1, seed=1).val, split.val)

    path = tmp_path / "split.json"
    save_split(split, path, store)
    loaded = load_split(path, store)
    assert np.array_equal(loaded.train, split.train) and np.array_equal(loaded.val, split.val)
    assert loaded.seed == 0 and loaded.val_fraction == 0.1
    assert set(json.loads(path.read_text())["val"]) == {store.paths[i] for i in split.val}


def test_split_for_is_saved_and_reused(tiny_data, tmp_path):
    store = FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path, progress=False)
    first = split_for(store, 0.25, seed=4)
    assert (store.root / "split-4-0.25.json").is_file()
    assert len(first.val) == 8 * 3                              # round(12 * 0.25) per speaker
    assert np.array_equal(split_for(store, 0.25, seed=4).val, first.val)


@pytest.mark.parametrize("damage", ["{\"val\": 5}", "[1, 2]", "{\"train\": [1], \"val\": []}", "not json"])
def test_a_damaged_split_is_refused_as_such_and_a_damaged_cached_one_made_again(tiny_data, tmp_path, damage):
    store = FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path, progress=False)
    first = split_for(store, 0.25, seed=4)
    cached = store.root / "split-4-0.25.json"
    cached.write_text(damage)
    with pytest.raises(kit.data.KitError, match=f"{cached.name}: (not a split saved by kit|malformed JSON)"):
        load_split(cached, store)               # a run's own split.json is refused, never remade
    again = split_for(store, 0.25, seed=4)      # the cache beside the store is made again
    assert np.array_equal(again.val, first.val) and np.array_equal(again.train, first.train)
    assert json.loads(cached.read_text())["val"] == [store.paths[i] for i in first.val]


@pytest.mark.parametrize("damage", ["drop 5 from train", "3 in both", "one swapped"])
def test_a_split_that_does_not_partition_the_training_utterances_is_refused_and_a_cached_one_made_again(
        tiny_data, tmp_path, damage):
    store = FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path, progress=False)
    first = split_for(store, 0.25, seed=4)
    cached = store.root / "split-4-0.25.json"
    raw = json.loads(cached.read_text())
    if damage == "drop 5 from train":
        raw["train"] = raw["train"][5:]          # five utterances that would never train
    elif damage == "3 in both":
        raw["val"] = raw["val"] + raw["train"][:3]
    else:       # probe 58 F3: still a partition, so it was used, and two runs of one seed validated on two splits
        raw["train"][0], raw["val"][0] = raw["val"][0], raw["train"][0]
    cached.write_text(json.dumps(raw))
    if damage != "one swapped":
        with pytest.raises(kit.data.KitError, match=f"{cached.name}: not a split of .* training utterances"):
            load_split(cached, store)
    again = split_for(store, 0.25, seed=4)
    assert np.array_equal(again.val, first.val) and np.array_equal(again.train, first.train)
    assert json.loads(cached.read_text())["val"] == [store.paths[i] for i in first.val]     # the cache mended


def test_bfloat16_feature_files_are_read_as_float32(data, tmp_path):
    """Probe 11: a competition saved in bfloat16 ended `kit data check` and training in a TypeError from
    numpy, which has no such type; float16 and float64 were read."""
    for path in sorted(data.glob("uttr-*.pt")):
        torch.save(torch.load(path, weights_only=True).bfloat16(), path)
    check_data(data)
    store = FeatureStore.open(data, dtype="float32", cache_dir=tmp_path / "cache", progress=False)
    x = torch.load(data / store.paths[0], weights_only=True).float().numpy()
    assert np.array_equal(store.utterance(0), x)


def test_data_check_notes_values_the_default_store_cannot_hold(tiny_data, tmp_path, capsys):
    """Probe 49 F2: `kit data check` said "ok" for a feature value of 1e6, and every training then
    refused the data (the float16 packed store holds at most 65504)."""
    import shutil

    import torch

    from kit.cli import main
    from kit.layout import read_layout

    data = tmp_path / "big"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns(".kit-cache"))
    path = data / read_layout(data).train[0].path
    x = torch.load(path)
    x[1, 2] = 1e6
    torch.save(x, path)
    assert main(["data", "check", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"note: {path}: values up to 1000000 do not fit the default float16 packed store" in out, out
    assert main(["data", "check", str(tiny_data)]) == 0 and "note:" not in capsys.readouterr().out
