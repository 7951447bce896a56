"""Input checks shared by the single-signal metrics: one-line ValueErrors that name the bad value."""

import numpy as np

__all__ = ["check_mono"]


def check_mono(y, sample_rate: int, min_seconds: float = 0.0, name: str = "audio") -> np.ndarray:
    """Validate mono audio ``y`` [S] at ``sample_rate`` of at least ``min_seconds``; return it as float64."""
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"{name} must be mono with shape [S], got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(y)))} non-finite (NaN/inf) samples")
    if y.size < min_seconds * sample_rate:
        raise ValueError(f"{name} is {y.size / sample_rate:.3f} s long, need at least {min_seconds:g} s")
    return y
