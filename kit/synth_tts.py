"""Voices from speech synthesizers in Debian's packages (espeak-ng, flite) instead of kit's own
source-filter model: the tuning suite's second generator (`kit data synth --preset tts`).

A speaker is an engine, a voice (espeak-ng: an accent and one of its ~100 variants; flite: one of
its voices), a pitch, a rate, a word gap and a vocal-tract warp (the waveform read as if sampled a
few per cent faster or slower, which moves formants and pitch together). Families share engine and
voice and differ only by small shifts of the rest. Each utterance says new pseudo-words and goes
through its own channel (a first-order tilt) and noise (10-30 dB SNR), then kit's log-mel front end.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kit.errors import KitError
from kit.frontend import logmel, read_wav

ENGINES = ("espeak-ng", "flite")
INSTALL_HINT = "install them with `make synth-engines` (apt-get install espeak-ng flite)"
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "de", "fr", "es", "it", "nl", "pl", "sv", "pt")
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6)) + (
    "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "Alicia", "Belinda", "Benjamin", "Caleb", "David",
    "Ed", "Edward", "Gene", "Hugo", "Jacky", "John", "Lee", "Linda", "Mario", "Max", "Michael", "Paul",
    "Robert", "Steph", "Storm", "Zac", "anika", "grandma", "grandpa", "norbert", "shelby", "travis", "victor")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "sh", "ch", "br",
          "st", "tr", "pl", "gr", "th")
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ee", "oo", "ou", "ar", "er", "or")
CODAS = ("", "", "", "n", "m", "t", "k", "s", "l", "r", "nd", "st")
WORDS_PER_SECOND = 1.9          # renders come out ~1.1 x the length asked for (measured over 40 voices)


def missing_engines() -> list[str]:
    return [e for e in ENGINES if shutil.which(e) is None]


def check_engines() -> None:
    """One line naming what is missing and how to install it, before anything is rendered."""
    missing = missing_engines()
    if missing:
        raise KitError(f"the tts presets need the speech synthesizers {', '.join(missing)}: {INSTALL_HINT}")


# ---------------------------------------------------------------- speakers
def _base_voice(rng: np.random.Generator) -> dict:
    """A new voice: engine and timbre drawn at random, prosody in the middle of its range."""
    if rng.random() < 0.8:
        voice = f"{ACCENTS[rng.integers(len(ACCENTS))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
        engine = "espeak-ng"
    else:
        voice, engine = FLITE_VOICES[rng.integers(len(FLITE_VOICES))], "flite"
    return {"engine": engine, "voice": voice, "pitch": float(rng.uniform(0.2, 0.8)),
            "rate": float(np.exp(rng.normal(0, 0.12))), "gap": int(rng.integers(0, 4)),
            "warp": float(np.exp(rng.normal(0, 0.05)))}


def _relative(base: dict, rng: np.random.Generator, spread: float) -> dict:
    """A family member: the base voice with small shifts of pitch, rate, word gap and tract warp."""
    return {**base, "pitch": float(np.clip(base["pitch"] + rng.normal(0, 0.08 * spread), 0.05, 0.95)),
            "rate": base["rate"] * float(np.exp(rng.normal(0, 0.06 * spread))),
            "gap": int(np.clip(base["gap"] + rng.integers(-1, 2), 0, 5)),
            "warp": base["warp"] * float(np.exp(rng.normal(0, 0.025 * spread)))}


def tts_voices(n: int, family: int, spread: float, rng: np.random.Generator) -> list[dict]:
    """One voice per speaker; in families of `family` near-identical voices when family > 1."""
    voices: list[dict] = []
    while len(voices) < n:
        base = _base_voice(rng)
        voices += [base] if family <= 1 else [_relative(base, rng, spread) for _ in range(family)]
    return voices[:n]


# ---------------------------------------------------------------- utterances
def _pseudo_words(rng: np.random.Generator, n: int) -> str:
    words = []
    for _ in range(n):
        syllables = rng.integers(1, 4)
        words.append("".join(ONSETS[rng.integers(len(ONSETS))] + NUCLEI[rng.integers(len(NUCLEI))]
                             + CODAS[rng.integers(len(CODAS))] for _ in range(syllables)))
    return " ".join(words)


def _engine_command(voice: dict, text: str, wav: str, rng: np.random.Generator) -> list[str]:
    pitch = float(np.clip(voice["pitch"] + rng.normal(0, 0.02), 0.0, 1.0))     # a little, utterance to utterance
    rate = voice["rate"] * float(np.exp(rng.normal(0, 0.04)))
    if voice["engine"] == "espeak-ng":
        return ["espeak-ng", "-v", voice["voice"], "-p", str(round(pitch * 99)), "-s", str(round(160 * rate)),
                "-g", str(voice["gap"]), "-w", wav, text]
    return ["flite", "-voice", voice["voice"], "--setf", f"int_f0_target_mean={80 + 160 * pitch:.0f}",
            "--setf", f"duration_stretch={1 / rate:.3f}", "-t", text, "-o", wav]


def _render_wave(voice: dict, rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, int]:
    text = _pseudo_words(rng, max(2, round(seconds * WORDS_PER_SECOND * voice["rate"])))
    with tempfile.TemporaryDirectory(prefix="kit-tts-") as tmp:
        wav = os.path.join(tmp, "u.wav")
        cmd = _engine_command(voice, text, wav, rng)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            raise KitError(f"{cmd[0]} is not installed: {INSTALL_HINT}") from None
        if done.returncode != 0 or not Path(wav).is_file():
            raise KitError(f"{cmd[0]} failed on voice {voice['voice']!r} (exit {done.returncode}): "
                           f"{done.stderr.strip()[-300:]}")
        return read_wav(wav)


def _channel_and_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A first-order tilt (a microphone and room, coarsely) and noise at 10-30 dB SNR."""
    a = rng.uniform(-0.5, 0.9)
    y = x.copy()
    y[1:] -= a * x[:-1]
    power = float(np.mean(y ** 2)) + 1e-12
    white = rng.standard_normal(len(y))
    brown = np.cumsum(rng.standard_normal(len(y)))
    ends = np.concatenate([[0.0], np.cumsum(brown)])
    k = np.clip(np.arange(len(y)) + 200, 0, len(y)), np.clip(np.arange(len(y)) - 200, 0, len(y))
    brown -= (ends[k[0]] - ends[k[1]]) / (k[0] - k[1])       # less its 25 ms moving mean: a rumble, no drift
    noise = rng.uniform(0, 1) * white / white.std() + rng.uniform(0, 1) * brown / (brown.std() + 1e-9)
    snr_db = rng.uniform(10, 30)
    noise *= np.sqrt(power / (float(np.mean(noise ** 2)) + 1e-12) / 10 ** (snr_db / 10))
    return ((y + noise) * rng.uniform(0.3, 1.0) / (np.abs(y + noise).max() + 1e-9)).astype(np.float32)


def tts_utterance(voice: dict, rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Log-mel features (frames, 40) of one utterance, about n_frames long (cropped to it when the
    rendering came out longer; a shorter one is kept as it is, as real utterances vary)."""
    x, rate = _render_wave(voice, rng, n_frames / 100)
    # Read as if sampled `warp` times faster: formants and pitch move up together, the length down.
    # The rate is rounded to 50 Hz so the resampler's kernel stays small.
    feats = logmel(_channel_and_noise(x, rng), int(round(rate * voice["warp"] / 50) * 50)).numpy()
    if len(feats) > n_frames:
        start = int(rng.integers(0, len(feats) - n_frames + 1))
        feats = feats[start:start + n_frames]
    return np.ascontiguousarray(feats, dtype=np.float32)
