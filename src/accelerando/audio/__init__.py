"""Audio frontends: file I/O, resampling, loudness, STFT and mel spectrograms.

Dims used in docstrings: ``B`` batch, ``C`` channels, ``S`` samples, ``T`` frames, ``F`` frequency bins.

Importing this package loads torch, numpy, soundfile and soxr only; pyloudnorm (and scipy) load on the first
loudness call, and librosa is never imported.
"""

from .io import load, save
from .loudness import loudness, normalize_loudness, peak_normalize
from .mel import MelSpectrogram, mel_filterbank
from .resample import resample
from .stft import STFT

__all__ = [
    "STFT",
    "MelSpectrogram",
    "load",
    "loudness",
    "mel_filterbank",
    "normalize_loudness",
    "peak_normalize",
    "resample",
    "save",
]
