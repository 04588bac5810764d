"""The tts presets: competitions voiced by espeak-ng and flite. Stand-in engines (tiny scripts that
write a pitched tone, on PATH) test the pipeline anywhere; the real engines are tested where installed."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kit import synth, synth_tts
from kit.data import FeatureStore
from kit.errors import KitError

FAKE_ENGINE = """#!{python}
# A stand-in for espeak-ng / flite: a tone whose pitch follows -p / int_f0_target_mean, as long as the text.
import math, struct, sys, wave
args = sys.argv[1:]
out = args[args.index("-w" if "-w" in args else "-o") + 1]
text = args[args.index("-t") + 1] if "-t" in args else args[-1]
pitch = float(args[args.index("-p") + 1]) * 3 + 80 if "-p" in args else float(
    [a for a in args if a.startswith("int_f0_target_mean=")][0].split("=")[1])
rate = 22050
n = int(rate * 0.35 * len(text.split()))
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
    w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * pitch * i / rate))) for i in range(n)))
"""


@pytest.fixture
def fake_engines(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "engines"
    folder.mkdir()
    for name in synth_tts.ENGINES:
        path = folder / name
        path.write_text(FAKE_ENGINE.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_families_share_engine_and_voice_and_differ_a_little():
    voices = synth_tts.tts_voices(12, 4, 1.0, np.random.default_rng(0))
    assert voices == synth_tts.tts_voices(12, 4, 1.0, np.random.default_rng(0))
    for k in range(0, 12, 4):
        family = voices[k:k + 4]
        assert len({(v["engine"], v["voice"]) for v in family}) == 1
        assert len({v["pitch"] for v in family}) == 4                     # every member its own pitch
        assert max(v["warp"] for v in family) / min(v["warp"] for v in family) < 1.25
    assert len({(v["engine"], v["voice"]) for v in voices}) == 3            # three families, three voices


def test_a_tts_competition_through_stand_in_engines(fake_engines, tmp_path):
    key = synth.generate(tmp_path / "data", preset="tts-tiny", seed=3, progress=False)
    meta = json.loads((tmp_path / "data" / "metadata.json").read_text())
    preset = synth.PRESETS["tts-tiny"]
    assert len(meta["speakers"]) == preset.speakers
    lengths = [u["mel_len"] for utts in meta["speakers"].values() for u in utts]
    assert len(lengths) == preset.train and max(lengths) <= preset.max_len
    first = next(iter(meta["speakers"].values()))[0]
    x = torch.load(tmp_path / "data" / first["feature_path"], weights_only=True)
    assert x.shape == (first["mel_len"], 40) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert len(key.read_text().splitlines()) == preset.test + 1
    store = FeatureStore.open(tmp_path / "data", "float32", cache_dir=tmp_path / "cache", progress=False)
    assert len(store.speakers) == preset.speakers
    # The same seed renders the same features (noise and channel are drawn from the plan's seed).
    synth.generate(tmp_path / "again", preset="tts-tiny", seed=3, progress=False)
    y = torch.load(tmp_path / "again" / first["feature_path"], weights_only=True)
    assert torch.equal(x, y)


def test_missing_engines_are_one_line_with_the_install_command(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(KitError, match="need the speech synthesizers espeak-ng, flite: install them with "
                                       "`make synth-engines`"):
        synth.generate(tmp_path / "data", preset="tts-tiny", progress=False)
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(bool(synth_tts.missing_engines()), reason="espeak-ng and flite are not installed")
def test_the_real_engines_voice_a_family_apart():
    voices = synth_tts.tts_voices(2, 2, 1.0, np.random.default_rng(1))
    a, b = (synth_tts.tts_utterance(v, np.random.default_rng(7), 300) for v in voices)
    assert a.shape[1] == b.shape[1] == 40 and 100 < len(a) <= 300 and 100 < len(b) <= 300
    assert np.isfinite(a).all() and a.std() > 1.0                      # speech and noise, not silence
    assert not np.allclose(a[:100].mean(0), b[:100].mean(0), atol=0.05)
