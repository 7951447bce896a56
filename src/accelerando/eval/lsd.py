"""Log-spectral distance (LSD) between two signals, in dB.

Dims: ``B`` batch, ``C`` channels, ``S`` samples, ``F`` frequency bins, ``T`` frames.
"""

import torch

from ..audio import STFT
from ._paired_inputs import Audio, Score, finish, prepare, stft_min_samples

__all__ = ["LSD_VERSION", "lsd"]

LSD_VERSION = "lsd-v1"


@torch.no_grad()
def lsd(pred: Audio, ref: Audio, n_fft: int = 2048, hop: int = 512, eps: float = 1e-10) -> Score:
    """Log-spectral distance in dB (version ``lsd-v1``); 0 for identical signals, blind to phase.

    ``P = |STFT(x)|^2`` is the unnormalised power spectrum (centred, reflect-padded, periodic Hann window of
    ``n_fft`` samples, hop ``hop``). For each frame ``t`` of each channel::

        d_t = sqrt( mean_f ( 10 log10(P_ref[f, t] + eps) - 10 log10(P_pred[f, t] + eps) )^2 )

    and the result is the mean of ``d_t`` over frames and channels.

    Args:
        pred: audio ``[S]``, ``[C, S]`` or ``[B, C, S]``.
        ref: reference audio, same shape and sample rate as ``pred``.
        n_fft: FFT and window size; ``F = n_fft // 2 + 1`` bins.
        hop: samples between frames.
        eps: floor added to the power before the log (1e-10, i.e. -100 dB).

    Returns:
        LSD in dB: a float, or ``B`` floats for batched input.
    """
    p, r, batched = prepare(pred, ref, stft_min_samples(n_fft))
    stft = STFT(n_fft=n_fft, hop_length=hop).to(p.device)
    log_p = 10.0 * torch.log10(stft(p).abs().square() + eps)  # [B, C, F, T]
    log_r = 10.0 * torch.log10(stft(r).abs().square() + eps)  # [B, C, F, T]
    per_frame = (log_r - log_p).square().mean(dim=-2).sqrt()  # [B, C, T]
    return finish(per_frame.mean(dim=(-2, -1)), batched)
