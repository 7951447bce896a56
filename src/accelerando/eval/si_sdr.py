"""Scale-invariant signal-to-distortion ratio (SI-SDR, Le Roux et al. 2019, "SDR - half-baked or well done?").

Dims: ``B`` batch, ``C`` channels, ``S`` samples.
"""

import torch

from ._paired_inputs import Audio, Score, finish, prepare

__all__ = ["SI_SDR_VERSION", "si_sdr"]

SI_SDR_VERSION = "si-sdr-v1"


@torch.no_grad()
def si_sdr(pred: Audio, ref: Audio, eps: float = 1e-8) -> Score:
    """SI-SDR of ``pred`` against ``ref`` in dB (version ``si-sdr-v1``); higher is better.

    Per channel, after removing the mean of ``pred`` (``s_hat``) and of ``ref`` (``s``)::

        alpha = (<s_hat, s> + eps) / (||s||^2 + eps)
        SI-SDR = 10 log10( (||alpha s||^2 + eps) / (||alpha s - s_hat||^2 + eps) )

    and an item's score is the mean over its channels (in dB). ``eps`` (the torchmetrics convention) keeps silent
    signals finite: identical signals score a large finite value (about ``10 log10(||s||^2 / eps)``), not +inf.
    Any rescaling of ``pred``, a polarity flip (``alpha = -1``) included, leaves the score unchanged; use
    :func:`~accelerando.eval.stft_distance.complex_stft_error` to see polarity and phase.

    Args:
        pred: audio ``[S]``, ``[C, S]`` or ``[B, C, S]``.
        ref: reference audio, same shape and sample rate as ``pred``.
        eps: stabiliser in both ratios.

    Returns:
        SI-SDR in dB: a float, or ``B`` floats for batched input.
    """
    p, r, batched = prepare(pred, ref)
    p = p - p.mean(dim=-1, keepdim=True)  # [B, C, S]
    r = r - r.mean(dim=-1, keepdim=True)  # [B, C, S]
    alpha = ((p * r).sum(dim=-1, keepdim=True) + eps) / (r.square().sum(dim=-1, keepdim=True) + eps)  # [B, C, 1]
    target = alpha * r  # [B, C, S]
    ratio = (target.square().sum(dim=-1) + eps) / ((target - p).square().sum(dim=-1) + eps)  # [B, C]
    return finish((10.0 * torch.log10(ratio)).mean(dim=-1), batched)
