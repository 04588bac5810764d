"""Tests of the synthetic competition (kit.synth): layout, answer key, determinism, safety.

Also the log-mel front end (kit.frontend) users apply to their own wav files.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kit import frontend, synth
from kit.cli import main
from kit.data import PAD_VALUE, FeatureStore
from kit.errors import KitError
from kit.layout import read_layout


def file_hashes(data_dir: Path) -> dict[str, str]:
    """sha256 of every file the generator wrote except the marker (it names an absolute path)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir.iterdir()) if p.is_file() and p.name != synth.MARKER}


# ---------------------------------------------------------------- layout
def test_layout_round_trips_through_feature_store(tiny_data, tmp_path):
    layout = read_layout(tiny_data)
    assert layout.n_mels == 40 and len(layout.speakers) == 8
    assert len(layout.train) == 96 and len(layout.test) == 20
    store = FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path, progress=False)
    for i, path in enumerate(store.paths):
        original = torch.load(tiny_data / path, weights_only=True)
        assert original.dtype == torch.float32 and original.shape == (store.lengths[i], 40)
        assert np.array_equal(store.utterance(i), original.numpy())
    # A centred crop longer than every utterance is the whole utterance, then -20 padding.
    index = np.array([0, store.n_train, len(store.paths) - 1])
    x, lengths = store.crop_batch(index, 256, np.random.default_rng(0), random=False)
    for row, i in enumerate(index):
        original = torch.load(tiny_data / store.paths[i], weights_only=True)
        assert lengths[row] == len(original)
        assert torch.equal(x[row, :len(original)], original)
        assert (x[row, len(original):] == PAD_VALUE).all()


def test_layout_looks_like_the_competition(tiny_data):
    meta = json.loads((tiny_data / "metadata.json").read_text())
    mapping = json.loads((tiny_data / "mapping.json").read_text())
    testdata = json.loads((tiny_data / "testdata.json").read_text())
    assert meta["n_mels"] == 40 and testdata["n_mels"] == 40
    assert all(re.fullmatch(r"id1\d{4}", s) for s in meta["speakers"])
    assert mapping["speaker2id"] == {s: i for i, s in enumerate(meta["speakers"])}
    assert mapping["id2speaker"] == {str(i): s for s, i in mapping["speaker2id"].items()}
    entries = [u for utts in meta["speakers"].values() for u in utts] + testdata["utterances"]
    assert all(re.fullmatch(r"uttr-[0-9a-f]{32}\.pt", u["feature_path"]) for u in entries)
    assert sorted(p.name for p in tiny_data.glob("uttr-*.pt")) == sorted(u["feature_path"] for u in entries)
    x = torch.load(tiny_data / entries[0]["feature_path"], weights_only=True)
    assert -21 < float(x.min()) and float(x.max()) < 8          # natural-log mel range


def test_test_utterances_are_shuffled_across_speakers(tiny_answers):
    key = pd.read_csv(tiny_answers)
    runs = (key["Category"] != key["Category"].shift()).sum()   # blocks of the same speaker
    assert key["Category"].nunique() == 8
    assert runs > 12                                             # grouped would give 8


def test_utterances_differ_in_length_and_content(tiny_data):
    layout = read_layout(tiny_data)
    lengths = [u.mel_len for u in layout.train]
    assert min(lengths) < 90 and max(lengths) > 150
    spk = layout.train[0].speaker
    a, b = [torch.load(tiny_data / u.path, weights_only=True) for u in layout.train if u.speaker == spk][:2]
    assert a.shape != b.shape or not torch.equal(a, b)


# ---------------------------------------------------------------- answer key and marker
def test_answer_key_sits_outside_the_data_dir(tiny_data, tiny_answers):
    assert tiny_answers == tiny_data.parent / f"{tiny_data.name}_answers.csv"
    assert tiny_data.resolve() not in tiny_answers.resolve().parents
    assert not list(tiny_data.glob("*.csv"))
    key = pd.read_csv(tiny_answers)
    assert list(key.columns) == ["Id", "Category", "Usage"]
    layout = read_layout(tiny_data)
    assert sorted(key["Id"]) == sorted(u.path for u in layout.test)
    assert set(key["Category"]) <= set(layout.speakers)
    assert key["Usage"].value_counts().to_dict() == {"Public": 10, "Private": 10}
    marker = json.loads((tiny_data / synth.MARKER).read_text())
    assert marker == {"preset": "tiny", "seed": 0, "answers": str(tiny_answers.resolve()),
                      "competition": "ml2022spring-hw4", "speakers": 8, "test": 20}


@pytest.mark.slow
def test_answer_key_labels_match_the_voices(tiny_data, tiny_answers):
    """A linear model on utterance statistics, fit on training data, beats chance on the key."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    layout = read_layout(tiny_data)

    def stats(path):                                              # (80,) mean and std per mel bin
        x = torch.load(tiny_data / path, weights_only=True)
        return torch.cat([x.mean(0), x.std(0)]).numpy()

    x_train = np.stack([stats(u.path) for u in layout.train])
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x_train), [u.speaker for u in layout.train])
    key = pd.read_csv(tiny_answers)
    guesses = clf.predict(scaler.transform(np.stack([stats(p) for p in key["Id"]])))
    assert np.mean(guesses == key["Category"].to_numpy()) >= 3 / 8        # chance is 1/8


# ---------------------------------------------------------------- determinism, overwrite, interruption
def test_same_seed_same_files_other_seed_other_files(tiny_data, tmp_path):
    again = tmp_path / "again"
    again.mkdir()                                                 # an existing empty dir is fine
    synth.generate(again, preset="tiny", seed=0)
    assert file_hashes(again) == file_hashes(tiny_data)
    assert (tmp_path / "again_answers.csv").read_bytes() == (tiny_data.parent / "tiny_answers.csv").read_bytes()

    synth.generate(again, preset="tiny", seed=1, force=True)
    other = file_hashes(again)
    assert not {n for n in other if n.startswith("uttr-")} & set(file_hashes(tiny_data))   # new names
    assert sorted(other.values()) != sorted(file_hashes(tiny_data).values())
    assert json.loads((again / synth.MARKER).read_text())["seed"] == 1
    # force replaced the old dir: nothing of seed 0 is left behind.
    assert len(list(again.glob("uttr-*.pt"))) == 116


def test_refuses_to_overwrite_a_non_empty_dir(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "metadata.json").write_text("{}")
    (out / synth.MARKER).write_text("{}")                         # one kit data synth made
    with pytest.raises(KitError, match="not empty.*--force"):
        synth.generate(out, preset="tiny")
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "--force" in err[0]
    # probe 41: a competition data dir kit did not make (a download: no marker) is never replaced
    (out / synth.MARKER).unlink()
    for force in (False, True):
        with pytest.raises(KitError, match=r"did not make \(no \.kit-synth\.json: a download\?\); it is never"):
            synth.generate(out, preset="tiny", force=force)
    assert (out / "metadata.json").read_text() == "{}"
    # Even --force will not wipe a folder that holds something other than competition data.
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(KitError, match="thesis.tex"):
        synth.generate(out, preset="tiny", force=True)
    assert (out / "thesis.tex").exists()


def test_interrupted_generation_leaves_no_data_dir(tmp_path, monkeypatch):
    render = synth._render

    def crash_midway(job):                                        # a few files written, then ^C
        out_dir, seed, items = job
        render((out_dir, seed, items[:3]))
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_render", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "data", preset="tiny")
    assert list(tmp_path.iterdir()) == []                        # no data dir, no temp dir, no key


def test_unknown_preset_is_a_kit_error(tmp_path):
    with pytest.raises(KitError, match="preset 'huge'"):
        synth.generate(tmp_path / "x", preset="huge")


# ---------------------------------------------------------------- log-mel front end
def write_wav(path: Path, x: np.ndarray, rate: int, channels: int = 1) -> None:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def mel_bin_of(freq: float) -> int:
    fb = frontend.front_end().mel_scale.fb.numpy()                  # (201, 40)
    return int(np.argmax(fb[int(round(freq / (frontend.SAMPLE_RATE / frontend.N_FFT)))]))


def test_logmel_of_a_sine_wav(tmp_path):
    t = np.arange(16000) / 16000
    write_wav(tmp_path / "sine.wav", 0.25 * np.sin(2 * np.pi * 1000 * t), 16000)
    x = frontend.wav_to_features(tmp_path / "sine.wav")
    assert x.dtype == torch.float32 and x.shape == (101, 40)     # 1 + 16000 // 160 frames
    peak = x[10:-10].mean(0)
    assert int(peak.argmax()) == mel_bin_of(1000)
    assert float(peak.max()) > 0 > float(peak.min())             # energy in one band only
    # Power doubles per 3 dB: twice the amplitude adds log(4) where the tone is.
    write_wav(tmp_path / "loud.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), 16000)
    louder = frontend.wav_to_features(tmp_path / "loud.wav")
    b = mel_bin_of(1000)
    assert np.allclose(louder[10:-10, b] - x[10:-10, b], np.log(4), atol=0.01)


def test_logmel_floor_resampling_and_stereo(tmp_path):
    silence = frontend.logmel(np.zeros(8000))
    assert silence.shape == (51, 40) and torch.allclose(silence, torch.full_like(silence, np.log(1e-9)))
    t = np.arange(8000) / 8000                                   # 1 s at 8 kHz, stereo
    tone = 0.25 * np.sin(2 * np.pi * 1000 * t)
    write_wav(tmp_path / "stereo8k.wav", np.stack([tone, tone], 1).reshape(-1), 8000, channels=2)
    x = frontend.wav_to_features(tmp_path / "stereo8k.wav")
    assert x.shape == (101, 40) and int(x[10:-10].mean(0).argmax()) == mel_bin_of(1000)


def test_unreadable_wav_is_a_kit_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF1234WAVEjunk")
    with pytest.raises(KitError, match="bad.wav"):
        frontend.wav_to_features(bad)


def test_a_synth_never_replaces_the_data_another_synth_writes_there(tmp_path, monkeypatch):
    """Two `kit data synth --out D` at once: the second is refused while the first writes (its hidden
    folder names a live pid); one that starts anyway and finds D finished meanwhile keeps that D."""
    out = tmp_path / "data"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        writing = tmp_path / f".data.{other.pid}@{socket.gethostname()}.abc123"
        writing.mkdir()
        with pytest.raises(KitError, match=f"another kit \\(pid {other.pid}\\) is writing it now"):
            synth.generate(out, preset="tiny")
    finally:
        other.kill()
        other.wait()
    write_layout = synth._write_layout

    def the_other_finishes_first(tmp, plan, lens):
        write_layout(tmp, plan, lens)
        out.mkdir()
        (out / "metadata.json").write_text('{"the other synth": true}')
        (out / synth.MARKER).write_text("{}")

    monkeypatch.setattr(synth, "_write_layout", the_other_finishes_first)
    with pytest.raises(KitError, match="not empty"):
        synth.generate(out, preset="tiny")
    assert sorted(p.name for p in out.iterdir()) == [synth.MARKER, "metadata.json"]
    assert "the other" in (out / "metadata.json").read_text()
    assert not synth.answers_path(out).exists()                  # no answer key written over the other's


def test_a_file_of_the_users_where_the_answer_key_goes_is_never_written_over(tiny_data, tmp_path, capsys):
    """Probe 58 F4: `kit data synth --out data/e5` wrote its answer key over a data/e5_answers.csv of the user's,
    without --force and without a word; an answer key an earlier synth wrote there is still replaced."""
    from kit.cli import main

    out = tmp_path / "e5"
    key = synth.answers_path(out)
    key.write_text("precious,user,file\n")
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"kit: error: {key}: exists and is not an answer key kit data synth wrote (the answer key of " \
                   "--out goes there, beside it); move it, or choose another --out"
    assert key.read_text() == "precious,user,file\n" and not out.exists()
    key.write_bytes((tiny_data.parent / "tiny_answers.csv").read_bytes())       # an earlier synth's key, its dir gone
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny", "--seed", "3"]) == 0
    assert key.read_bytes() != (tiny_data.parent / "tiny_answers.csv").read_bytes()
