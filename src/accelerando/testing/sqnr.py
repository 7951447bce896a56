"""Signal-to-quantization-noise ratio, the error measure every quantization test asserts a floor on."""

import torch

__all__ = ["sqnr"]


def sqnr(ref: torch.Tensor, x: torch.Tensor) -> float:
    """``10 * log10(||ref||^2 / ||ref - x||^2)`` in dB, computed in float64; ``inf`` when ``x`` equals ``ref``.

    ``ref`` and ``x`` are tensors of one shape (any rank); higher is better. Same definition as torchao's
    ``compute_error``.
    """
    if ref.shape != x.shape:
        raise ValueError(f"sqnr needs equal shapes, got ref {tuple(ref.shape)} and x {tuple(x.shape)}")
    ref64, x64 = ref.detach().double(), x.detach().double()
    noise = (ref64 - x64).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref64.pow(2).sum() / noise))
