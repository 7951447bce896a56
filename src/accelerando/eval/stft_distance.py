"""Spectrogram distances between two signals: multi-resolution STFT, log-mel L1 and relative complex-STFT error.

All STFTs are centred, reflect-padded and use a periodic Hann window (:class:`accelerando.audio.STFT`).

Dims: ``B`` batch, ``C`` channels, ``S`` samples, ``F`` frequency bins, ``T`` frames.
"""

from collections.abc import Sequence

import torch

from ..audio import STFT, MelSpectrogram
from ._paired_inputs import Audio, Score, finish, prepare, stft_min_samples

__all__ = [
    "COMPLEX_STFT_VERSION",
    "MEL_DISTANCE_VERSION",
    "MRSTFT_VERSION",
    "complex_stft_error",
    "complex_stft_error_db",
    "mel_distance",
    "mrstft",
]

MRSTFT_VERSION = "mrstft-v1"
MEL_DISTANCE_VERSION = "mel-l1-v1"
COMPLEX_STFT_VERSION = "complex-stft-v1"


@torch.no_grad()
def mrstft(
    pred: Audio,
    ref: Audio,
    fft_sizes: Sequence[int] = (1024, 2048, 512),
    hop_sizes: Sequence[int] = (120, 240, 50),
    win_lengths: Sequence[int] = (600, 1200, 240),
    w_sc: float = 1.0,
    w_log_mag: float = 1.0,
    eps: float = 1e-8,
) -> Score:
    """Multi-resolution STFT distance (version ``mrstft-v1``) with ``auraloss.freq.MultiResolutionSTFTLoss`` defaults.

    For each resolution, ``M = sqrt(clamp(|STFT(x)|^2, min=eps))`` (magnitude; Hann window of ``win_length``
    zero-padded to ``n_fft``) and, over all channels, bins and frames of an item::

        SC  = ||M_ref - M_pred||_F / ||M_ref||_F                 (spectral convergence)
        LOG = mean |ln M_ref - ln M_pred|                         (log-magnitude L1, natural log)

    The result is the mean over resolutions of ``w_sc * SC + w_log_mag * LOG``. For one item (``B = 1``) this equals
    ``auraloss.freq.MultiResolutionSTFTLoss()(pred, ref)``; auraloss pools SC over the whole batch, this is per item.

    Args:
        pred: audio ``[S]``, ``[C, S]`` or ``[B, C, S]``.
        ref: reference audio, same shape and sample rate as ``pred``.
        fft_sizes, hop_sizes, win_lengths: one entry per resolution.
        w_sc, w_log_mag: weights of the two terms.
        eps: clamp floor on the power ``|STFT|^2`` (magnitude floor ``sqrt(eps)``), as in auraloss.

    Returns:
        Distance (unitless; 0 for identical signals): a float, or ``B`` floats for batched input.
    """
    if not len(fft_sizes) == len(hop_sizes) == len(win_lengths) > 0:
        raise ValueError(
            f"fft_sizes, hop_sizes and win_lengths must be non-empty and of one length, got {len(fft_sizes)}, "
            f"{len(hop_sizes)} and {len(win_lengths)}"
        )
    p, r, batched = prepare(pred, ref, stft_min_samples(max(fft_sizes)))
    total = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)  # [B]
    for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths, strict=True):
        stft = STFT(n_fft=n_fft, hop_length=hop, win_length=win).to(p.device)
        mag_p = stft(p).abs().square().clamp(min=eps).sqrt().flatten(1)  # [B, C * F * T]
        mag_r = stft(r).abs().square().clamp(min=eps).sqrt().flatten(1)  # [B, C * F * T]
        sc = (mag_r - mag_p).norm(dim=1) / mag_r.norm(dim=1)  # [B]
        log_mag = (mag_r.log() - mag_p.log()).abs().mean(dim=1)  # [B]
        total += w_sc * sc + w_log_mag * log_mag
    return finish(total / len(fft_sizes), batched)


@torch.no_grad()
def mel_distance(
    pred: Audio,
    ref: Audio,
    sample_rate: int,
    n_mels: int = 80,
    n_fft: int = 1024,
    hop: int = 256,
    f_min: float = 0.0,
    f_max: float | None = None,
    eps: float = 1e-5,
) -> Score:
    """Mean absolute difference of log-mel spectrograms (version ``mel-l1-v1``), the HiFi-GAN / vocos mel loss.

    ``L = ln(clamp(mel_basis @ |STFT(x)|, min=eps))``: magnitude (not power) mel spectrogram, natural log, Slaney
    mel scale and Slaney-normalised filters (:class:`accelerando.audio.MelSpectrogram`, window = ``n_fft``). The
    result is ``mean |L_ref - L_pred|`` over channels, mel bands and frames.

    Args:
        pred: audio ``[S]``, ``[C, S]`` or ``[B, C, S]``.
        ref: reference audio, same shape as ``pred``.
        sample_rate: sample rate of both, in Hz.
        n_mels, n_fft, hop, f_min, f_max: mel spectrogram settings; ``f_max=None`` means ``sample_rate / 2``.
        eps: clamp floor on the mel magnitude before the log (``ln(1e-5)`` = -11.5).

    Returns:
        Distance in natural-log units (nepers): a float, or ``B`` floats for batched input.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    p, r, batched = prepare(pred, ref, stft_min_samples(n_fft))
    mel = MelSpectrogram(
        sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_min=f_min, f_max=f_max, power=1.0, eps=eps
    ).to(p.device)
    diff = (mel(r) - mel(p)).abs()  # [B, C, n_mels, T]
    return finish(diff.mean(dim=(1, 2, 3)), batched)


@torch.no_grad()
def complex_stft_error(pred: Audio, ref: Audio, n_fft: int = 1024, hop: int = 256) -> Score:
    """Relative complex-STFT error ``||X_pred - X_ref||_F^2 / ||X_ref||_F^2`` (version ``complex-stft-v1``).

    ``X`` is the complex STFT (Hann window of ``n_fft``); the norms run over all channels, bins and frames of an
    item. Unlike magnitude metrics it sees phase: a polarity flip gives 4, a small time shift grows it towards 2.
    Identical signals give 0; a silent ``ref`` gives 0 when ``pred`` is silent too, else ``inf``.

    Args:
        pred: audio ``[S]``, ``[C, S]`` or ``[B, C, S]``.
        ref: reference audio, same shape and sample rate as ``pred``.
        n_fft: FFT and window size.
        hop: samples between frames.

    Returns:
        Linear energy ratio: a float, or ``B`` floats for batched input. See :func:`complex_stft_error_db`.
    """
    p, r, batched = prepare(pred, ref, stft_min_samples(n_fft))
    return finish(_complex_ratio(p, r, n_fft, hop), batched)


@torch.no_grad()
def complex_stft_error_db(
    pred: Audio, ref: Audio, n_fft: int = 1024, hop: int = 256, floor_db: float = -200.0
) -> Score:
    """:func:`complex_stft_error` in dB, ``max(10 log10(ratio), floor_db)``; shapes and arguments as there."""
    p, r, batched = prepare(pred, ref, stft_min_samples(n_fft))
    ratio = _complex_ratio(p, r, n_fft, hop)  # [B]
    return finish((10.0 * torch.log10(ratio)).clamp(min=floor_db), batched)


def _complex_ratio(p: torch.Tensor, r: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """float64 ``[B, C, S]`` pair -> relative complex-STFT error ``[B]``."""
    stft = STFT(n_fft=n_fft, hop_length=hop).to(p.device)
    spec_r = stft(r)  # [B, C, F, T]
    num = (stft(p) - spec_r).abs().square().sum(dim=(1, 2, 3))  # [B]
    den = spec_r.abs().square().sum(dim=(1, 2, 3))  # [B]
    return torch.where(num == 0, 0.0, num / den)  # 0 when pred == ref (even if silent); x / 0 -> inf
