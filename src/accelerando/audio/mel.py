"""Mel filterbank and log-mel spectrogram, in numpy/torch (no librosa at runtime).

``mel_filterbank`` reproduces ``librosa.filters.mel`` (Slaney or HTK mel scale, Slaney area normalisation).

Dims: ``S`` samples, ``F`` frequency bins (``n_fft // 2 + 1``), ``T`` frames; ``...`` any leading dims.
"""

import warnings

import numpy as np
import torch
from torch import nn

from .stft import STFT

__all__ = ["MelSpectrogram", "hz_to_mel", "mel_filterbank", "mel_to_hz"]

# Slaney (Auditory Toolbox) scale: linear below 1 kHz, logarithmic above.
_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray, htk: bool = False) -> np.ndarray:
    """Frequencies in Hz -> mels (HTK formula or Slaney scale), elementwise, float64."""
    freqs = np.asarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + freqs / 700.0)
    mels = freqs / _SLANEY_F_SP
    log_part = freqs >= _SLANEY_MIN_LOG_HZ
    safe = np.where(log_part, freqs, _SLANEY_MIN_LOG_HZ)  # avoid log(0) in the unused branch
    return np.where(log_part, _SLANEY_MIN_LOG_MEL + np.log(safe / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP, mels)


def mel_to_hz(mels: np.ndarray, htk: bool = False) -> np.ndarray:
    """Mels -> frequencies in Hz, the inverse of :func:`hz_to_mel`, elementwise, float64."""
    mels = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    freqs = _SLANEY_F_SP * mels
    log_part = mels >= _SLANEY_MIN_LOG_MEL
    return np.where(log_part, _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mels - _SLANEY_MIN_LOG_MEL)), freqs)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    norm: str | None = "slaney",
    htk: bool = False,
) -> torch.Tensor:
    """Triangular mel filters ``[n_mels, F]`` (float32), matching ``librosa.filters.mel``.

    Args:
        sample_rate: sample rate in Hz.
        n_fft: FFT size; ``F = n_fft // 2 + 1``.
        n_mels: number of mel bands.
        f_min: lowest band edge in Hz.
        f_max: highest band edge in Hz, ``<= sample_rate / 2``; ``None`` means ``sample_rate / 2``.
        norm: ``"slaney"`` divides each triangle by its width in Hz (constant energy per band); ``None`` leaves
            peaks at 1.
        htk: use the HTK mel formula instead of the Slaney scale.

    Warns:
        UserWarning: some bands cover no FFT bin (too many mels for ``n_fft``); those rows are all zero.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if sample_rate <= 0 or n_fft <= 0 or n_mels <= 0:
        raise ValueError(f"sample_rate, n_fft and n_mels must be positive, got {sample_rate}, {n_fft}, {n_mels}")
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")

    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [F]
    mel_edges = np.linspace(hz_to_mel(f_min, htk), hz_to_mel(f_max, htk), n_mels + 2)
    hz_edges = mel_to_hz(mel_edges, htk)  # [n_mels + 2] lower edge, centre, upper edge of each band
    widths = np.diff(hz_edges)  # [n_mels + 1]
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, F]
    rising = -ramps[:-2] / widths[:-1, None]  # [n_mels, F]
    falling = ramps[2:] / widths[1:, None]  # [n_mels, F]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [n_mels, F]
    if norm == "slaney":
        weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    if not np.all((hz_edges[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(
            f"mel_filterbank: some of the {n_mels} bands are empty; use fewer mels or a larger n_fft (={n_fft})",
            stacklevel=2,
        )
    return torch.from_numpy(weights.astype(np.float32))


class MelSpectrogram(nn.Module):
    """Magnitude (or power) mel spectrogram, optionally natural-log compressed.

    Computes ``mel_filterbank @ |STFT(wav)| ** power`` and, when ``log``, ``log(clamp(., min=eps))``. The STFT is
    centred with reflect padding and a periodic Hann window (librosa's ``melspectrogram`` with
    ``pad_mode="reflect"``). The filterbank is a non-persistent buffer.

    Args:
        sample_rate: sample rate in Hz.
        n_fft: FFT size (also the window length).
        hop_length: samples between frames.
        n_mels: number of mel bands.
        f_min: lowest band edge in Hz.
        f_max: highest band edge in Hz; ``None`` means ``sample_rate / 2``.
        power: exponent on the magnitude: 1 for magnitude, 2 for power.
        log: apply the natural log after clamping at ``eps``.
        eps: clamp floor before the log.
        norm: filterbank normalisation, see :func:`mel_filterbank`.
        htk: HTK mel formula instead of the Slaney scale.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 100,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 1.0,
        log: bool = True,
        eps: float = 1e-5,
        norm: str | None = "slaney",
        htk: bool = False,
    ) -> None:
        super().__init__()
        if power <= 0:
            raise ValueError(f"power must be positive, got {power}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.power = power
        self.log = log
        self.eps = eps
        self.stft = STFT(n_fft=n_fft, hop_length=hop_length, center=True)
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min=f_min, f_max=f_max, norm=norm, htk=htk)
        self.register_buffer("mel_basis", fb, persistent=False)  # [n_mels, F]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio ``[..., S]`` -> mel spectrogram ``[..., n_mels, T]`` with ``T = S // hop_length + 1``."""
        return self.from_stft(self.stft(wav))

    def from_stft(self, stft: torch.Tensor) -> torch.Tensor:
        """Complex spectrogram ``[..., F, T]`` (of :attr:`stft`'s framing) -> mel spectrogram ``[..., n_mels, T]``."""
        spec = stft.abs()  # [..., F, T]
        if self.power != 1.0:
            spec = spec.pow(self.power)
        mel = torch.matmul(self.mel_basis.to(spec.dtype), spec)  # [n_mels, F] @ [..., F, T] -> [..., n_mels, T]
        if self.log:
            mel = torch.log(mel.clamp(min=self.eps))
        return mel
