"""Loudness measurement (ITU-R BS.1770 via pyloudnorm) and gain normalisation.

Dims: ``C`` channels, ``S`` samples.

pyloudnorm (and scipy, which it imports) is loaded on first use, keeping ``import accelerando.audio`` fast.
"""

import math

import numpy as np
import torch

__all__ = ["loudness", "normalize_loudness", "peak_normalize"]

BLOCK_SECONDS = 0.4  # BS.1770 gating block; shorter clips are measured as one ungated block
_MAX_CHANNELS = 5  # BS.1770 channel weights cover L, R, C, Ls, Rs


def _as_channels(wav: torch.Tensor) -> torch.Tensor:
    """``[S]`` or ``[C, S]`` -> ``[C, S]``, validated."""
    if not isinstance(wav, torch.Tensor) or not torch.is_floating_point(wav):
        raise ValueError(f"wav must be a floating-point torch.Tensor, got {type(wav).__name__}")
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2:
        raise ValueError(f"wav must have shape [C, S] or [S], got {tuple(wav.shape)}")
    if wav.shape[-1] == 0:
        raise ValueError("wav has no samples; loudness is undefined")
    return wav


def loudness(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, K-weighted and gated), via pyloudnorm.

    Clips shorter than one 0.4 s gating block are measured as a single block spanning the whole clip: the
    K-weighted mean square of all samples with no relative gating, an RMS-based estimate that equals the gated
    value at exactly 0.4 s. Very short clips (a few ms) are dominated by the filters' start-up transient.

    Args:
        wav: audio ``[C, S]`` or ``[S]`` (mono), at most 5 channels in BS.1770 order L, R, C, Ls, Rs.
        sample_rate: sample rate in Hz.

    Returns:
        Loudness in LUFS. ``-inf`` for digital silence or audio below the -70 LUFS absolute gate.

    Raises:
        ValueError: ``wav`` is empty, not floating point, badly shaped or has more than 5 channels.
    """
    import pyloudnorm

    wav = _as_channels(wav)
    if wav.shape[0] > _MAX_CHANNELS:
        raise ValueError(f"loudness supports at most {_MAX_CHANNELS} channels, got {wav.shape[0]}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
    data = wav.detach().to("cpu", torch.float64).numpy().T  # [S, C]
    num_samples = data.shape[0]
    block = BLOCK_SECONDS
    if num_samples < block * sample_rate:
        block = num_samples / sample_rate
        while block * sample_rate > num_samples:  # float rounding must not push the block past the clip
            block = np.nextafter(block, 0.0)
    meter = pyloudnorm.Meter(sample_rate, block_size=block)
    return float(meter.integrated_loudness(data))


def normalize_loudness(
    wav: torch.Tensor, sample_rate: int, target_lufs: float = -20.0, peak_limit: float | None = 0.9
) -> tuple[torch.Tensor, float]:
    """Scale audio to ``target_lufs``, lowering the gain if needed so that ``max|out| <= peak_limit``.

    Args:
        wav: audio ``[C, S]`` or ``[S]``.
        sample_rate: sample rate in Hz.
        target_lufs: loudness to reach, in LUFS.
        peak_limit: ceiling on the absolute sample peak after scaling; ``None`` for no ceiling.

    Returns:
        ``(out, gain)``: ``out = wav * gain`` with the shape, dtype and device of ``wav``; ``gain`` is the linear
        factor applied. Silence (loudness ``-inf``) is returned unchanged with ``gain == 1.0``.
    """
    if peak_limit is not None and peak_limit <= 0:
        raise ValueError(f"peak_limit must be positive or None, got {peak_limit!r}")
    current = loudness(wav, sample_rate)
    if not math.isfinite(current):
        return wav, 1.0
    gain = 10.0 ** ((target_lufs - current) / 20.0)
    if peak_limit is not None:
        peak = float(wav.detach().abs().max())
        if peak * gain > peak_limit:
            gain = peak_limit / peak
    return wav * gain, gain


def peak_normalize(wav: torch.Tensor, peak: float = 0.9) -> tuple[torch.Tensor, float]:
    """Scale audio so that its absolute sample peak equals ``peak``.

    Args:
        wav: audio of any shape, e.g. ``[C, S]``.
        peak: target absolute peak, positive.

    Returns:
        ``(out, gain)``: ``out = wav * gain`` with the shape, dtype and device of ``wav``; ``gain`` is the linear
        factor applied. All-zero (or empty) input is returned unchanged with ``gain == 1.0``.
    """
    if peak <= 0:
        raise ValueError(f"peak must be positive, got {peak!r}")
    current = float(wav.detach().abs().max()) if wav.numel() else 0.0
    if current == 0.0:
        return wav, 1.0
    gain = peak / current
    return wav * gain, gain
