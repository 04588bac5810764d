"""The synthetic speakers: a voice per speaker (or families of near-identical voices) and a
source-filter synthesiser (pulse-train and noise excitation, formant envelopes applied per STFT
frame, a random channel per utterance) whose spectra go through the log-mel front end.
"""
from __future__ import annotations

import numpy as np

from kit.frontend import HOP, LOG_FLOOR, N_FFT, SAMPLE_RATE, front_end

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
    # deferred: torch: `kit --help` imports this module (through kit.synth)
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
    spec = torch.stft(torch.from_numpy(x), N_FFT, HOP, window=front_end().spectrogram.window,
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
    assert out is not None                                                # K >= 1 formants
    return out


def _static_tract(voice: dict) -> np.ndarray:
    """The part of a voice's spectrum that never moves: upper formants F4, F5. (201,)"""
    f45 = np.asarray(voice["f45"], dtype=np.float64)[None, :]            # (1, 2)
    return _resonances(f45, voice["bw"] * (50.0 + 0.06 * f45))[0]


def synth_utterance(voice: dict, rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """One utterance of a voice through its own random channel: log-mel (n_frames, 40) float32."""
    # deferred: torch: `kit --help` imports this module (through kit.synth)
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
    mel = (torch.from_numpy(speech) @ front_end().mel_scale.fb).numpy()  # (T, 40)
    np.maximum(mel, 1e-30, out=mel)
    logm = np.log(mel)
    # Loudness: speech peaks land around 0..+5, like the competition's features.
    logm += rng.uniform(0.5, 4.5) - np.percentile(logm, 97)
    return np.maximum(logm, np.log(LOG_FLOOR)).astype(np.float32)
