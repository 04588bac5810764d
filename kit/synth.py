"""Synthetic HW4 competition in the real layout: speakers with their own voices, one channel per utterance.

A source-filter synthesiser (pulse-train and noise excitation, formant envelopes applied per
STFT frame) feeds the same log-mel front end (`logmel`) that users apply to their own wav files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.fsio import write_csv, write_json

MARKER = ".kit-synth.json"
SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40        # 25 ms window, 10 ms hop, like the competition
LOG_FLOOR = 1e-9                         # log(1e-9) ~ -20.7: the competition's silence level
LAYOUT_NAMES = {"metadata.json", "testdata.json", "mapping.json", MARKER, ".kit-cache"}


@dataclass(frozen=True)
class Preset:
    speakers: int
    train: int             # training utterances in total (spread evenly over speakers)
    test: int              # test utterances in total
    min_len: int           # frames
    median_len: int
    max_len: int
    workers: int           # processes (results do not depend on it)
    family: int = 1        # voices per family: >1 makes families of near-identical speakers
    spread: float = 1.0    # how far a family's voices sit from their shared base voice




PRESETS = {
    "tiny": Preset(speakers=8, train=96, test=20, min_len=60, median_len=110, max_len=200, workers=1),
    "demo": Preset(speakers=60, train=2400, test=480, min_len=200, median_len=400, max_len=1500, workers=2),
    "full": Preset(speakers=600, train=56666, test=4000, min_len=200, median_len=550, max_len=1500, workers=2),
    # For tuning: families of five voices that share a base voice and differ only by small
    # shifts of pitch, rate, vocal tract and accent, so per-speaker averages barely separate them.
    "hard": Preset(speakers=250, train=10000, test=2000, min_len=150, median_len=450, max_len=1500,
                   workers=2, family=5, spread=0.9),
}


# ---------------------------------------------------------------- log-mel front end
_FRONT_END = None


def _front_end():
    """The MelSpectrogram transform, built once per process (its filterbank is reused)."""
    global _FRONT_END
    if _FRONT_END is None:
        from torchaudio.transforms import MelSpectrogram

        _FRONT_END = MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT,
                                    hop_length=HOP, n_mels=N_MELS, power=2.0)
    return _FRONT_END


def logmel(wave_, sample_rate: int = SAMPLE_RATE):
    """Log-mel features of a mono waveform (float, -1..1): returns a float32 tensor (frames, 40).

    16 kHz, 400-sample window, 160-sample hop, 40 mel bins, natural log clamped at 1e-9.
    """
    import torch

    x = torch.as_tensor(np.asarray(wave_, dtype=np.float32))
    if x.dim() != 1:
        raise KitError(f"logmel: expected a mono 1-D waveform, got shape {tuple(x.shape)}")
    if sample_rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        x = AF.resample(x, sample_rate, SAMPLE_RATE)
    if x.numel() < N_FFT // 2 + 1:        # reflect padding needs half a window
        raise KitError(f"logmel: waveform of {x.numel()} samples is too short (need at least {N_FFT // 2 + 1})")
    mel = _front_end()(x)                                   # (40, frames)
    return torch.log(mel.clamp_min(LOG_FLOOR)).T.contiguous().float()   # (frames, 40)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """PCM wav via the stdlib (torchaudio.load may lack a backend): (mono float32 -1..1, rate)."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        raise KitError(f"{path}: not a readable PCM wav file ({e})") from None
    if width == 1:                                          # 8-bit wav is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 3:                                        # 24-bit: widen to int32
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        x = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16))
        x = np.where(x >= 1 << 23, x - (1 << 24), x).astype(np.float32) / (1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    else:
        raise KitError(f"{path}: unsupported sample width {width} bytes")
    x = x.reshape(-1, channels).mean(axis=1)                # (samples,) mono
    return x, rate


def wav_to_features(wav_path: str | os.PathLike):
    """A user's wav file as competition features: float32 tensor (frames, 40)."""
    x, rate = read_wav(wav_path)
    try:
        return logmel(x, rate)
    except KitError as e:
        raise KitError(f"{wav_path}: {e}") from None


# ---------------------------------------------------------------- the synthesiser
# A shared phone inventory: (kind, F1, F2, F3 in Hz for a reference adult voice, level dB).
# Kinds: V vowel, N nasal, A approximant, F unvoiced fricative, Z voiced fricative,
# S unvoiced stop, B voiced stop. Fricatives and stops also name a noise band (centre, width).
PHONES = [
    ("V", 270, 2290, 3010, 0), ("V", 390, 1990, 2550, 0), ("V", 530, 1840, 2480, 0),
    ("V", 660, 1720, 2410, 0), ("V", 520, 1190, 2390, 0), ("V", 730, 1090, 2440, 0),
    ("V", 570, 840, 2410, 0), ("V", 440, 1020, 2240, 0), ("V", 300, 870, 2240, 0),
    ("V", 490, 1350, 1690, 0),
    ("N", 250, 1000, 2200, -9), ("N", 250, 1500, 2500, -9), ("N", 250, 2000, 2700, -10),
    ("A", 360, 1300, 2700, -4), ("A", 420, 1300, 1600, -4), ("A", 300, 610, 2200, -5),
    ("A", 260, 2070, 3020, -5),
    ("F", 6000, 2500, 0, -14), ("F", 3500, 1500, 0, -12), ("F", 5000, 4000, 0, -22),
    ("F", 7000, 3000, 0, -24), ("F", 1500, 2000, 0, -16),
    ("Z", 6000, 2500, 0, -16), ("Z", 3500, 1500, 0, -14), ("Z", 5000, 4000, 0, -22),
    ("S", 1000, 800, 0, -10), ("S", 4000, 2000, 0, -10), ("S", 2000, 1000, 0, -10),
    ("B", 1000, 800, 0, -12), ("B", 4000, 2000, 0, -12), ("B", 2000, 1000, 0, -12),
]
SIL = len(PHONES)                                          # silence: one more row in each table
_KIND = np.array([p[0] for p in PHONES] + ["_"])
_TARGET = np.array([p[1:4] for p in PHONES] + [(500, 1500, 2500)], dtype=np.float64)
_LEVEL = np.array([p[4] for p in PHONES] + [-80], dtype=np.float64)
_VOWELS = np.flatnonzero(_KIND == "V")
_SHAPED = np.isin(_KIND, list("VNA"))                      # formants follow the phone's targets
_VOICED = np.isin(_KIND, list("VNAZB"))
_NOISY = np.isin(_KIND, list("FZSB"))
_STOP = np.isin(_KIND, list("SB"))
_DUR = np.array([{"V": 9, "N": 6, "A": 6, "F": 8, "Z": 7, "S": 6, "B": 6, "_": 0}[k] for k in _KIND],
                dtype=np.float64)                          # mean duration, frames
_NEUTRAL = np.array([500.0, 1500.0, 2500.0])             # formants of the closure / noise phones
_FREQS = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)   # (201,) STFT bin centres
_FREQS32 = _FREQS.astype(np.float32)
_OCTAVES = np.log2(np.maximum(_FREQS, 100.0) / 100.0)      # (201,) octaves above 100 Hz
# Noise band shape (201,) of each phone; vowel-like phones get none.
_BANDS = np.array([np.exp(-0.5 * ((_FREQS - p[1]) / p[2]) ** 2) if p[0] in "FZSB" else 0 * _FREQS
                   for p in PHONES] + [0 * _FREQS], dtype=np.float32)      # (phones + 1, 201)


def make_voice(rng: np.random.Generator) -> dict:
    """One speaker's voice. Distributions overlap on purpose so that some pairs are hard."""
    female = rng.random() < 0.5
    vtl = (1.16 if female else 1.0) * np.exp(rng.normal(0, 0.045))     # vocal-tract scaling
    return {
        "f0": (205.0 if female else 118.0) * np.exp(rng.normal(0, 0.13)),
        "f0_spread": rng.uniform(1.0, 4.0),                # intonation, semitones
        "vtl": vtl,
        "f45": np.array([3500.0, 4500.0]) * vtl * np.exp(rng.normal(0, 0.04, 2)),
        "bw": np.exp(rng.normal(0, 0.2)),                  # formant bandwidth scale
        "tilt": rng.uniform(-10.0, -4.0),                  # source tilt, dB per octave
        "breath": rng.uniform(-32.0, -12.0),               # aspiration level, dB re voicing
        "rate": np.exp(rng.normal(0, 0.15)),               # phone duration scale
        "accent": np.exp(rng.normal(0, 0.05, _TARGET.shape)),   # idiosyncratic phone targets
    }


def relative_voice(base: dict, rng: np.random.Generator, spread: float = 1.0) -> dict:
    """A voice of base's family: the same voice with small shifts of pitch (~4%), speaking rate
    (~5%), vocal-tract length (~1.5%), upper formants, accent and source (spread scales them)."""
    s = spread
    return {
        "f0": base["f0"] * np.exp(rng.normal(0, 0.04 * s)),
        "f0_spread": base["f0_spread"] * np.exp(rng.normal(0, 0.1 * s)),
        "vtl": base["vtl"] * np.exp(rng.normal(0, 0.015 * s)),
        "f45": base["f45"] * np.exp(rng.normal(0, 0.012 * s, 2)),
        "bw": base["bw"] * np.exp(rng.normal(0, 0.05 * s)),
        "tilt": base["tilt"] + rng.normal(0, 0.6 * s),
        "breath": base["breath"] + rng.normal(0, 2.0 * s),
        "rate": base["rate"] * np.exp(rng.normal(0, 0.05 * s)),
        "accent": base["accent"] * np.exp(rng.normal(0, 0.015 * s, base["accent"].shape)),
    }


def _voices(preset: Preset, rng: np.random.Generator) -> list[dict]:
    """One voice per speaker; in families of `preset.family` when that is above 1."""
    if preset.family <= 1:
        return [make_voice(rng) for _ in range(preset.speakers)]
    voices: list[dict] = []
    while len(voices) < preset.speakers:
        base = make_voice(rng)
        voices += [relative_voice(base, rng, preset.spread) for _ in range(preset.family)]
    return voices[:preset.speakers]


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 (edges held): coarticulation between phone targets."""
    if width <= 1:
        return x
    pad = width // 2
    xp = np.concatenate([np.repeat(x[:1], pad, 0), x, np.repeat(x[-1:], width - 1 - pad, 0)])
    c = np.cumsum(np.concatenate([np.zeros_like(xp[:1]), xp]), axis=0)
    return (c[width:] - c[:-width]) / width


def _score(voice: dict, rng: np.random.Generator, n_frames: int) -> dict:
    """The frame-level plan of one utterance: formants, voicing, noise and silence per frame."""
    # Words of 2-6 phones (vowel-rich), now and then a pause after a word; drawn in bulk
    # (every phone lasts >= 2 frames, so n phones always fill the utterance), then cut.
    n = n_frames // 2 + 8
    phone = np.where(rng.random(n) < 0.4, rng.choice(_VOWELS, n), rng.integers(len(PHONES), size=n))
    dur = np.maximum(2, np.round(_DUR[phone] * voice["rate"] * np.exp(rng.normal(0, 0.35, n)))).astype(np.int64)
    word_end = np.cumsum(rng.integers(2, 7, size=n))
    pauses = word_end[(word_end < n) & (rng.random(n) < 0.2)]
    phone = np.concatenate([[SIL], np.insert(phone, pauses, SIL)])          # leading silence too
    dur = np.concatenate([[rng.integers(5, 30)], np.insert(dur, pauses, rng.integers(8, 40, len(pauses)))])
    frame_phone = np.repeat(phone, dur)[:n_frames]                          # (T,)
    in_phone = np.arange(n_frames) - np.repeat(np.cumsum(dur) - dur, dur)[:n_frames]

    # Formant targets per frame; noise phones and silence keep a neutral tract shape.
    shaped = _SHAPED[frame_phone]
    targets = np.where(shaped[:, None], _TARGET[frame_phone] * voice["accent"][frame_phone],
                       _NEUTRAL)                                            # (T, 3)
    formants = _smooth(targets * voice["vtl"], 5)                          # (T, 3)
    level = _LEVEL[frame_phone]                                            # dB, (T,)
    voiced = _VOICED[frame_phone].astype(np.float64)
    fric = _NOISY[frame_phone].astype(np.float64)
    # Stops: a closure (silent, or a weak voice bar when voiced) before the burst.
    closure = _STOP[frame_phone] & (in_phone < 3)
    level = np.where(closure, np.where(voiced > 0, -25.0, -80.0), level)
    fric[closure] = 0.0

    # Pitch: per-utterance key, declination, slow intonation and a little jitter.
    t = np.arange(n_frames) / 100.0
    semis = voice["f0_spread"] * sum(rng.normal(0, 0.6) * np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t
                                                                   + rng.uniform(0, 2 * np.pi))
                                     for _ in range(3))
    f0 = voice["f0"] * np.exp(rng.normal(0, 0.05)) * 2 ** ((semis - rng.uniform(0, 2) * t / max(t[-1], 1)) / 12)
    f0 = f0 * np.exp(rng.normal(0, 0.01, n_frames))
    return {"formants": formants, "level": _smooth(level, 3), "voiced": _smooth(voiced, 3),
            "band": frame_phone, "fric": _smooth(fric, 2), "f0": f0}


def _pulse_power(f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Power spectrogram (T, 201) of a glottal pulse train following the frame pitch f0 (T,)."""
    import torch

    n_frames = len(f0)
    n = (n_frames - 1) * HOP                              # centred STFT: exactly n_frames frames
    # Pitch phase at frame boundaries (cycles); pulses sit where it crosses an integer, found
    # by inverse interpolation (phase is monotonic), far cheaper than a per-sample phase.
    steps = (f0[:-1] + f0[1:]) / 2 * HOP / SAMPLE_RATE                    # cycles per hop
    phase = np.concatenate([[0.0], np.cumsum(steps)]) + rng.random()      # (T,)
    cycles = np.arange(np.ceil(phase[0]), phase[-1])
    at = np.interp(cycles, phase, np.arange(n_frames) * HOP)              # pulse times, samples
    starts = np.minimum(np.round(at).astype(np.int64), n - 1)
    period = SAMPLE_RATE / np.interp(at, np.arange(n_frames) * HOP, f0)
    # sqrt(period) keeps loudness independent of pitch; shimmer varies pulse heights.
    x = np.zeros(n, np.float32)
    x[starts] = np.sqrt(period) * np.exp(rng.normal(0, 0.1, len(starts)))
    # The front end's STFT; power as re^2 + im^2 (abs() would take a needless square root).
    spec = torch.stft(torch.from_numpy(x), N_FFT, HOP, window=_front_end().spectrogram.window,
                      center=True, pad_mode="reflect", return_complex=True)   # (201, T)
    return torch.view_as_real(spec).pow_(2).sum(-1).T.contiguous().numpy()   # (T, 201)


def _resonances(formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """|H(f)|^2 of cascaded two-pole resonators: formants, bandwidths (T, K) -> (T, 201)."""
    f2 = _FREQS32 ** 2                                                    # (201,)
    out = None
    for k in range(formants.shape[1]):
        F2 = (formants[:, k:k + 1] ** 2).astype(np.float32)              # (T, 1)
        B2 = (bandwidths[:, k:k + 1] ** 2).astype(np.float32)
        den = F2 - f2                                                     # (T, 201)
        den *= den
        den += f2 * B2
        np.divide(F2 * F2, den, out=den)
        out = den if out is None else out * den
    return out


def _static_tract(voice: dict) -> np.ndarray:
    """The part of a voice's spectrum that never moves: upper formants F4, F5. (201,)"""
    f45 = np.asarray(voice["f45"], dtype=np.float64)[None, :]            # (1, 2)
    return _resonances(f45, voice["bw"] * (50.0 + 0.06 * f45))[0]


def synth_utterance(voice: dict, rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """One utterance of a voice through its own random channel: log-mel (n_frames, 40) float32."""
    import torch

    s = _score(voice, rng, n_frames)
    T, nf = n_frames, len(_FREQS)
    db = np.log(10) / 10                                                   # dB -> natural log power
    bandwidths = voice["bw"] * (50.0 + 0.06 * s["formants"])             # wider as they rise
    tract = _resonances(s["formants"], bandwidths)                        # (T, 201)
    tract *= _static_tract(voice)
    tract *= (np.exp(db * s["level"]) * s["voiced"]).astype(np.float32)[:, None]

    # Voiced: pulses through source tilt and tract; aspiration: noise through the same tract;
    # frication: noise in the phone's band (white noise's STFT power is 150 x Exp(1) per bin).
    source = np.exp(db * voice["tilt"] * _OCTAVES).astype(np.float32)    # (201,)
    breath = np.exp(db * (voice["breath"] - 3.0 * _OCTAVES)).astype(np.float32) * 150.0
    noise = rng.standard_exponential((T, nf), dtype=np.float32)
    speech = _pulse_power(s["f0"], rng)
    speech *= source
    speech += noise * breath
    speech *= tract                                                       # (T, 201)
    rows = np.flatnonzero(s["fric"] > 0)                                  # fricative frames only
    gain = 150.0 * np.exp(db * s["level"][rows]) * s["fric"][rows]
    speech[rows] += noise[rows] * (gain.astype(np.float32)[:, None] * _BANDS[s["band"][rows]])

    # The channel: a smooth random EQ, sometimes a band limit, then noise at a random SNR.
    pos = _FREQS / _FREQS[-1]                                             # (201,) 0..1
    eq = rng.uniform(-10, 10) * (pos - 0.5) + sum(rng.normal(0, 3.0) * np.cos(np.pi * k * pos + rng.uniform(0, 6.3))
                                                 for k in (1, 2, 3))
    if rng.random() < 0.3:
        cutoff = rng.uniform(3400, 7000)
        eq = eq - 40.0 / (1 + np.exp(-(_FREQS - cutoff) / 150.0))
    speech *= np.exp(db * eq).astype(np.float32)
    loud = s["level"] > -30
    frame_power = speech.mean(axis=1)                                     # (T,)
    active = float(frame_power[loud].mean()) if loud.any() else float(frame_power.mean())
    color = np.exp(db * rng.uniform(-12, 3) * _OCTAVES)                  # white to brownish
    floor = (active * np.exp(-db * rng.uniform(5.0, 35.0)) * color / color.mean()).astype(np.float32)
    channel_noise = rng.standard_exponential((T, nf), dtype=np.float32)
    channel_noise *= floor
    speech += channel_noise
    del noise, channel_noise, tract

    # torch's matmul: numpy's BLAS may start threads that fight the other worker for the cores.
    mel = (torch.from_numpy(speech) @ _front_end().mel_scale.fb).numpy()  # (T, 40)
    np.maximum(mel, 1e-30, out=mel)
    logm = np.log(mel)
    # Loudness: speech peaks land around 0..+5, like the competition's features.
    logm += rng.uniform(0.5, 4.5) - np.percentile(logm, 97)
    return np.maximum(logm, np.log(LOG_FLOOR)).astype(np.float32)


# ---------------------------------------------------------------- the competition
def _lengths(preset: Preset, rng: np.random.Generator, n: int) -> np.ndarray:
    sigma = np.log(preset.max_len / preset.median_len) / 2.2
    x = np.exp(rng.normal(np.log(preset.median_len), sigma, n))
    return np.clip(np.round(x), preset.min_len, preset.max_len).astype(np.int64)


def _plan(preset: Preset, seed: int) -> dict:
    """Everything decided up front from one seed, so workers only render utterances."""
    rng = np.random.default_rng([seed, 0x5EED])
    speakers = [f"id{n}" for n in sorted(rng.choice(np.arange(10001, 11252), preset.speakers, replace=False))]
    voices = _voices(preset, rng)
    train_spk = np.sort(np.arange(preset.train) % preset.speakers)
    test_spk = rng.permutation(np.arange(preset.test) % preset.speakers)     # shuffled, not grouped
    spk = np.concatenate([train_spk, test_spk])
    n = len(spk)
    names = set()
    while len(names) < n:                                  # 128 random bits: collisions never happen,
        names.add(f"uttr-{rng.bytes(16).hex()}.pt")        # but a set makes sure
    names = rng.permutation(sorted(names)).tolist()
    return {"speakers": speakers, "voices": voices, "spk": spk, "names": names,
            "lengths": _lengths(preset, rng, n), "n_train": len(train_spk),
            "usage": rng.permutation(np.arange(len(test_spk)) < (len(test_spk) + 1) // 2)}


def _render(job) -> list[int]:
    """Worker: synthesise and save a chunk of utterances; returns their frame counts."""
    import torch

    torch.set_num_threads(1)
    out_dir, seed, items = job
    lens = []
    for i, name, voice, n_frames in items:
        x = synth_utterance(voice, np.random.default_rng([seed, 1, i]), int(n_frames))
        # Saved under its final name (torch.save records it) inside the not-yet-renamed dir.
        torch.save(torch.from_numpy(x).clone(), os.path.join(out_dir, name))
        lens.append(len(x))
    return lens


def _check_target(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise KitError(f"{out_dir}: exists and is not a directory")
    entries = list(out_dir.iterdir())
    if not entries:
        return
    if not force:
        raise KitError(f"{out_dir}: exists and is not empty; pass --force to overwrite it")
    # --force replaces a competition data dir, never some unrelated folder given by mistake.
    foreign = [e.name for e in entries if e.name not in LAYOUT_NAMES
               and not (e.name.startswith("uttr-") and e.name.endswith(".pt"))]
    if foreign:
        raise KitError(f"{out_dir}: holds {foreign[0]!r}, which is not competition data; "
                       "refusing to overwrite it even with --force")


def answers_path(out_dir: str | os.PathLike) -> Path:
    """Where the answer key of a synthetic data dir lives: beside it, never inside."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f"{out_dir.name}_answers.csv"


def generate(out_dir: str | os.PathLike, preset: str = "tiny", seed: int = 0, force: bool = False,
             progress: bool | None = None) -> Path:
    """Write a synthetic competition into out_dir; returns the answer key's path (beside it).

    Everything is rendered into a hidden sibling folder that is renamed into place last,
    so an interrupted run never leaves something that looks like a complete data dir.
    A progress bar goes to stderr when progress is True (default: when stderr is a terminal).
    """
    import pandas as pd

    if preset not in PRESETS:
        raise KitError(f"preset {preset!r}: choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    if progress is None:
        from kit.env import progress_visible

        progress = progress_visible()
    out_dir = Path(out_dir).resolve()
    _check_target(out_dir, force)
    plan = _plan(cfg, seed)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.synth-", dir=out_dir.parent))
    except OSError as e:
        raise KitError(f"{out_dir}: cannot write the synthetic data here ({e.strerror})") from None
    try:
        items = [(i, plan["names"][i], plan["voices"][plan["spk"][i]], plan["lengths"][i])
                 for i in range(len(plan["names"]))]
        chunk = 32
        jobs = [(str(tmp), seed, items[k:k + chunk]) for k in range(0, len(items), chunk)]
        lens = _run_jobs(jobs, cfg.workers, progress)
        _write_layout(tmp, plan, lens)
        key = answers_path(out_dir)
        test = range(plan["n_train"], len(items))
        write_csv(key, pd.DataFrame({
            "Id": [plan["names"][i] for i in test],
            "Category": [plan["speakers"][plan["spk"][i]] for i in test],
            "Usage": np.where(plan["usage"], "Public", "Private")}))
        write_json(tmp / MARKER, {"preset": preset, "seed": seed, "answers": str(key),
                                  "competition": DEFAULT_COMPETITION, "speakers": cfg.speakers,
                                  "test": len(test)})
        os.chmod(tmp, 0o777 & ~_umask())               # mkdtemp makes it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return key


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _run_jobs(jobs: list, workers: int, progress: bool) -> list[int]:
    from tqdm.auto import tqdm

    workers = max(1, min(workers, os.cpu_count() or 1))
    total = sum(len(j[2]) for j in jobs)
    bar = tqdm(total=total, desc="synthesising", unit="utt", disable=not progress, mininterval=0.5)
    lens: list[int] = []
    if workers == 1:
        for job in jobs:
            lens += _render(job)
            bar.update(len(job[2]))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: forking a process that already runs torch threads can deadlock.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for job, out in zip(jobs, pool.map(_render, jobs)):
                lens += out
                bar.update(len(job[2]))
    bar.close()
    return lens


def _write_layout(root: Path, plan: dict, lens: list[int]) -> None:
    """metadata.json, testdata.json and mapping.json, exactly as the competition spells them."""
    speakers, spk, names, n_train = plan["speakers"], plan["spk"], plan["names"], plan["n_train"]
    meta: dict[str, list] = {s: [] for s in speakers}
    for i in range(n_train):
        meta[speakers[spk[i]]].append({"feature_path": names[i], "mel_len": int(lens[i])})
    test = [{"feature_path": names[i], "mel_len": int(lens[i])} for i in range(n_train, len(names))]
    write_json(root / "mapping.json", {"speaker2id": {s: i for i, s in enumerate(speakers)},
                                       "id2speaker": {str(i): s for i, s in enumerate(speakers)}})
    write_json(root / "testdata.json", {"n_mels": N_MELS, "utterances": test})
    write_json(root / "metadata.json", {"n_mels": N_MELS, "speakers": meta})
