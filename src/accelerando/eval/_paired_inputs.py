"""Input checks and result packing shared by the paired metrics (:mod:`accelerando.eval.paired`).

Dims: ``B`` batch, ``C`` channels, ``S`` samples.
"""

import numpy as np
import torch

__all__ = ["Audio", "Score", "finish", "prepare", "stft_min_samples"]

Audio = torch.Tensor | np.ndarray
Score = float | list[float]


def prepare(pred: Audio, ref: Audio, min_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check a pair and return float64 ``[B, C, S]`` views of both on ``pred``'s device, and whether it was batched.

    ``[S]`` becomes ``[1, 1, S]`` and ``[C, S]`` becomes ``[1, C, S]``.

    Raises:
        ValueError: shapes differ, rank is not 1-3, fewer than ``min_samples`` samples, or NaN/inf values.
    """
    p, r = (torch.as_tensor(x).detach() for x in (pred, ref))
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {tuple(p.shape)} and ref {tuple(r.shape)}")
    if p.ndim not in (1, 2, 3):
        raise ValueError(f"pred and ref must have shape [S], [C, S] or [B, C, S], got {tuple(p.shape)}")
    if p.is_complex() or r.is_complex():
        raise ValueError(f"pred and ref must be real audio, got dtypes {p.dtype} and {r.dtype}")
    if p.shape[-1] < min_samples:
        raise ValueError(f"need at least {min_samples} samples per signal for these settings, got {p.shape[-1]}")
    p = p.to(torch.float64)
    r = r.to(device=p.device, dtype=torch.float64)
    for name, x in (("pred", p), ("ref", r)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf values")
    batched = p.ndim == 3
    while p.ndim < 3:
        p, r = p.unsqueeze(0), r.unsqueeze(0)
    return p, r, batched  # [B, C, S] each


def finish(values: torch.Tensor, batched: bool) -> Score:
    """Per-item values ``[B]`` -> ``B`` python floats when batched, else the single float."""
    out = [float(v) for v in values.cpu()]
    return out if batched else out[0]


def stft_min_samples(n_fft: int) -> int:
    """Fewest samples a centred, reflect-padded STFT of size ``n_fft`` accepts (``torch.stft`` needs S > n_fft // 2)."""
    return n_fft // 2 + 1
