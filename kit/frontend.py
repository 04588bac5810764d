"""The log-mel front end: 16 kHz, 25 ms window, 10 ms hop, 40 mel bins, natural log clamped at 1e-9,
as the competition's features look. The synthetic generator uses it, and so can users' own wav files.
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

from kit.errors import KitError

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40        # 25 ms window, 10 ms hop, like the competition
LOG_FLOOR = 1e-9                         # log(1e-9) ~ -20.7: the competition's silence level

_FRONT_END = None


def front_end():
    """The MelSpectrogram transform, built once per process (its filterbank is reused)."""
    global _FRONT_END
    if _FRONT_END is None:
        # deferred: torchaudio brings torch; `kit --help` imports this module (through kit.synth)
        from torchaudio.transforms import MelSpectrogram

        _FRONT_END = MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT,
                                    hop_length=HOP, n_mels=N_MELS, power=2.0)
    return _FRONT_END


def logmel(wave_, sample_rate: int = SAMPLE_RATE):
    """Log-mel features of a mono waveform (float, -1..1): returns a float32 tensor (frames, 40).

    16 kHz, 400-sample window, 160-sample hop, 40 mel bins, natural log clamped at 1e-9.
    """
    # deferred: torch(audio): `kit --help` imports this module (through kit.synth)
    import torch
    import torchaudio.functional as AF

    x = torch.as_tensor(np.asarray(wave_, dtype=np.float32))
    if x.dim() != 1:
        raise KitError(f"logmel: expected a mono 1-D waveform, got shape {tuple(x.shape)}")
    if sample_rate != SAMPLE_RATE:
        x = AF.resample(x, sample_rate, SAMPLE_RATE)
    if x.numel() < N_FFT // 2 + 1:        # reflect padding needs half a window
        raise KitError(f"logmel: waveform of {x.numel()} samples is too short (need at least {N_FFT // 2 + 1})")
    mel = front_end()(x)                                   # (40, frames)
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
        v = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16))
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float32) / (1 << 23)
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
