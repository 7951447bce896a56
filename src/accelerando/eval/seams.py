"""Seam score: does an edit boundary (inpaint, extend, sparse re-render) click or jump?

Definition, version ``seam-v2`` (``seam-v1`` plus the excess over a reference). Spectral flux per frame ``n`` of the
signal (STFT with a 1024-sample periodic Hann window, hop 256, magnitudes ``|X|``, ``L = log(1e-5 + |X|)``):

    flux[n] = sum_k max(0, L[n, k] - L[n - 1, k]) / K          # mean positive log-magnitude rise

For each boundary time ``b`` the seam flux is the maximum of ``flux`` over the frames whose centres lie within
``±25 ms`` of ``b``. The ordinary level is the 95th percentile of ``flux`` over every frame farther than 100 ms
from all boundaries (so real note onsets elsewhere set the scale). The score of a boundary is

    seam_ratio = seam_flux / p95(ordinary flux)

A ratio near or below 1 means the boundary rises no more than the loudest 5 % of ordinary frames (a note onset
would do that); a click or a hard discontinuity gives several times more, because it puts energy in every bin at
once. Also returned: ``max_ratio`` over boundaries and the count of boundaries above ``threshold`` (default 2).

A boundary that falls on a note onset of the music itself scores high too: an edit region that starts just before a
strong attack in the original puts that attack (or the generated one in its place) inside the ±25 ms window. So,
given the unedited input as ``reference``, each boundary also gets an excess ratio

    excess = seam_flux / max(p95(ordinary flux), reference_seam_flux)

where ``reference_seam_flux`` is the same window's maximum flux in the reference. A click or jump made by the edit
adds flux the input did not have there and still scores above the threshold; an onset that the input has at the same
moment does not. ``n_artifacts`` counts boundaries whose excess is above ``threshold``: the seam artifacts.
"""

import numpy as np

from accelerando.eval._validate import check_mono

__all__ = ["SEAM_VERSION", "spectral_flux", "seam_scores"]

SEAM_VERSION = "seam-v2"

_N_FFT = 1024
_HOP = 256
_NEAR_S = 0.025
_EXCLUDE_S = 0.100


def spectral_flux(y: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Positive log-magnitude flux per frame of mono ``y`` [S]; returns (flux [N], frame centre times in s [N])."""
    y = check_mono(y, sample_rate, min_seconds=2 * _N_FFT / sample_rate)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)
    pad = np.pad(y, _N_FFT // 2, mode="reflect")
    n = 1 + (pad.size - _N_FFT) // _HOP
    frames = np.lib.stride_tricks.as_strided(pad, (n, _N_FFT), (pad.strides[0] * _HOP, pad.strides[0]))
    log_mag = np.log(1e-5 + np.abs(np.fft.rfft(frames * win, axis=1)))
    flux = np.zeros(n)
    flux[1:] = np.maximum(0.0, np.diff(log_mag, axis=0)).mean(axis=1)
    return flux, np.arange(n) * _HOP / sample_rate


def seam_scores(y: np.ndarray, sample_rate: int, boundaries, threshold: float = 2.0, reference=None) -> dict:
    """Seam ratio of each boundary time (seconds) in mono ``y`` [S]; see the module docstring.

    Returns ``{"version", "ratios": [...], "max_ratio", "n_above_threshold", "threshold"}``; with ``reference``
    (the unedited input, mono [S'] at the same rate) also ``"reference_ratios"``, ``"excess_ratios"``,
    ``"max_excess"`` and ``"n_artifacts"``.
    """
    flux, times = spectral_flux(y, sample_rate)
    duration = y.shape[-1] / sample_rate
    bounds = np.asarray(list(boundaries), dtype=np.float64).reshape(-1)
    if bounds.size == 0:
        raise ValueError("boundaries is empty: give at least one boundary time in seconds")
    bad = bounds[(bounds < 0) | (bounds > duration) | ~np.isfinite(bounds)]
    if bad.size:
        raise ValueError(f"boundary {bad[0]!r} s lies outside the audio (0-{duration:.3f} s)")
    scale = _ordinary_scale(flux, times, bounds)
    seam = _window_max(flux, times, bounds)
    ratios = [float(x / scale) for x in seam]
    out = {
        "version": SEAM_VERSION,
        "ratios": ratios,
        "max_ratio": max(ratios),
        "n_above_threshold": int(sum(r > threshold for r in ratios)),
        "threshold": threshold,
    }
    if reference is not None:
        ref_flux, ref_times = spectral_flux(np.asarray(reference), sample_rate)
        if ref_times[-1] + _NEAR_S < bounds.max():
            raise ValueError(f"reference is {ref_times[-1]:.3f} s long; boundary {bounds.max()!r} s lies past it")
        ref_seam = _window_max(ref_flux, ref_times, bounds)
        ref_scale = _ordinary_scale(ref_flux, ref_times, bounds)
        excess = [float(x / max(scale, r)) for x, r in zip(seam, ref_seam, strict=True)]
        out |= {
            "reference_ratios": [float(r / ref_scale) for r in ref_seam],
            "excess_ratios": excess,
            "max_excess": max(excess),
            "n_artifacts": int(sum(e > threshold for e in excess)),
        }
    return out


def _ordinary_scale(flux: np.ndarray, times: np.ndarray, bounds: np.ndarray) -> float:
    """p95 of the flux of frames farther than 100 ms from every boundary."""
    dist = np.abs(times[:, None] - bounds[None, :]).min(axis=1)
    ordinary = flux[(dist > _EXCLUDE_S) & (np.arange(flux.size) > 0)]
    if ordinary.size < 10:
        raise ValueError(f"too little audio away from the boundaries ({ordinary.size} frames) to set the scale")
    return max(float(np.percentile(ordinary, 95)), 1e-9)


def _window_max(flux: np.ndarray, times: np.ndarray, bounds: np.ndarray) -> list[float]:
    """Largest flux over the frames centred within ±25 ms of each boundary (0 where none is)."""
    out = []
    for b in bounds:
        near = np.abs(times - b) <= _NEAR_S
        out.append(float(flux[near].max()) if near.any() else 0.0)
    return out
