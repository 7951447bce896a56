"""Sample-rate conversion with soxr (high quality, "HQ").

Dims: ``S`` samples; ``...`` any leading dims (channels, batch).
"""

import operator

import numpy as np
import soxr
import torch

__all__ = ["resample"]

# dtypes soxr resamples natively; other floating dtypes go through float32.
_SOXR_DTYPES = (torch.float32, torch.float64)


def _check_rate(name: str, value: int) -> int:
    """Return ``value`` as an ``int`` or raise ``ValueError`` naming it."""
    try:
        rate = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None
    if isinstance(value, bool) or rate <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return rate


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample audio along its last dim with soxr at "HQ" quality.

    Args:
        wav: floating-point audio ``[..., S]`` on any device.
        orig_sr: sample rate of ``wav`` in Hz, a positive int.
        new_sr: target sample rate in Hz, a positive int.

    Returns:
        ``[..., ceil(S * new_sr / orig_sr)]`` with the dtype and device of ``wav``. When the rates are equal the
        input tensor itself is returned. The result is computed on the CPU in numpy and carries no gradient.

    Raises:
        ValueError: a rate is not a positive int, or ``wav`` is not floating point or has no dims.
    """
    orig_sr = _check_rate("orig_sr", orig_sr)
    new_sr = _check_rate("new_sr", new_sr)
    if not torch.is_floating_point(wav):
        raise ValueError(f"wav must be a floating-point tensor, got dtype {wav.dtype}")
    if wav.dim() == 0:
        raise ValueError("wav must have at least one dim [..., S], got a 0-dim tensor")
    if orig_sr == new_sr:
        return wav

    lead, num_samples = wav.shape[:-1], wav.shape[-1]
    work_dtype = wav.dtype if wav.dtype in _SOXR_DTYPES else torch.float32
    # [..., S] -> [N, S] -> soxr wants frames first: [S, N]
    frames = wav.detach().reshape(-1, num_samples).to("cpu", work_dtype).numpy().T
    out_len = -(-num_samples * new_sr // orig_sr)  # ceil, matches soxr
    if frames.shape[1] == 0 or num_samples == 0:
        out = np.zeros((out_len, frames.shape[1]), dtype=frames.dtype)
    else:
        out = soxr.resample(np.ascontiguousarray(frames), orig_sr, new_sr, quality="HQ")
    # [S', N] -> [..., S']
    result = torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*lead, out.shape[0])
    return result.to(device=wav.device, dtype=wav.dtype)
