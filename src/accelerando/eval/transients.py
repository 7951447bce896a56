"""Transient Smearing Ratio (TSR): how much softer, slower and duller a prediction's attacks are than a reference's.

Definition, version ``tsr-v1``. Onsets ``n_i`` are detected in the *reference* only (``librosa.onset.onset_detect``,
hop 256, ``backtrack=True`` so each onset sits at the energy minimum before its rise). Both signals are cut to their
common length. At each onset, over the span ``[n_i - 256, min(n_{i+1}, n_i + 100 ms))``:

1. flux peak ``F``: the maximum of ``librosa.onset.onset_strength`` (log-mel spectral flux, hop 256) over the
   onset's frame and the next 4 frames (about 60 ms at 22.05 kHz);
2. attack time ``A``: on the envelope (``|hilbert(x)|`` smoothed by a 1 ms moving average) from the last sample
   below 10 % of the span's peak before that peak to the first sample at 90 % of it, floored at 0.5 ms;
3. high-band share ``H``: the energy of the signal high-passed at ``f_hi = min(4 kHz, sr / 6)`` (4th-order
   zero-phase Butterworth) in the 30 ms after the onset, divided by the full-band energy there, floored at 1e-6.

With ``gmean_i`` the geometric mean over onsets:

    TSR              = gmean_i (F_ref + 1e-3) / (F_pred + 1e-3)     # the headline number
    attack_ratio     = gmean_i  A_pred / A_ref
    highband_loss_db = mean_i 10 log10(H_ref / H_pred)

TSR and attack_ratio are 1 (highband_loss_db 0) for identical signals and grow as the prediction smears attacks
(lower flux peak, slower rise, less high-frequency energy at the attack); values below 1 (below 0 dB) mean sharper
attacks than the reference. All three ignore a gain change (the flux is a difference of log-mel frames). The
geometric mean makes a halving and a doubling cancel and keeps one dropped onset from dominating. librosa does the
onset detection and flux; scipy the Hilbert envelope and the filter.
"""

import numpy as np

from accelerando.eval._validate import check_mono

__all__ = ["TSR_VERSION", "transient_smearing_ratio"]

TSR_VERSION = "tsr-v1"

_HOP = 256
_FLUX_FRAMES = 5  # onset frame and the 4 after it
_SPAN_S = 0.100  # longest span analysed after an onset
_HIGH_S = 0.030  # high-band energy window after an onset
_ENV_SMOOTH_S = 0.001
_MIN_ATTACK_S = 0.0005
_HIGH_HZ = 4000.0
_EPS_FLUX = 1e-3
_MIN_SHARE = 1e-6  # floor of the high-band energy share (-60 dB)


def _envelope(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """Amplitude envelope [S]: Hilbert magnitude smoothed by a 1 ms moving average."""
    import scipy.signal

    n = max(1, round(_ENV_SMOOTH_S * sample_rate))
    return np.convolve(np.abs(scipy.signal.hilbert(y)), np.ones(n) / n, mode="same")


def _attack_time(env: np.ndarray, start: int, stop: int, sample_rate: int) -> float:
    """10 % -> 90 % rise time (s) of ``env`` [S] to its peak inside ``[start, stop)``."""
    span = env[start:stop]
    peak = int(np.argmax(span))
    top = span[peak]
    if top <= 0:
        return _MIN_ATTACK_S
    below = np.flatnonzero(span[:peak] < 0.1 * top)
    t10 = below[-1] if len(below) else 0
    t90 = t10 + int(np.argmax(span[t10 : peak + 1] >= 0.9 * top))
    return max((t90 - t10) / sample_rate, _MIN_ATTACK_S)


def _features(y: np.ndarray, sample_rate: int, onsets: np.ndarray) -> np.ndarray:
    """Per-onset (flux peak, attack time, high-band share) of ``y`` [S] at ``onsets`` [N] (samples); [N, 3]."""
    import librosa
    import scipy.signal

    flux = librosa.onset.onset_strength(y=y, sr=sample_rate, hop_length=_HOP)  # [T]
    env = _envelope(y, sample_rate)
    sos = scipy.signal.butter(4, min(_HIGH_HZ, sample_rate / 6), btype="highpass", fs=sample_rate, output="sos")
    high, energy = scipy.signal.sosfiltfilt(sos, y) ** 2, y**2  # [S] each
    span, n_high = round(_SPAN_S * sample_rate), round(_HIGH_S * sample_rate)
    stops = np.minimum(np.append(onsets[1:], len(y)), onsets + span)
    out = np.empty((len(onsets), 3))
    for i, (n, stop) in enumerate(zip(onsets, stops, strict=True)):
        frame = n // _HOP
        out[i, 0] = flux[frame : frame + _FLUX_FRAMES].max()
        out[i, 1] = _attack_time(env, max(0, n - _HOP), max(stop, n + 1), sample_rate)
        total = energy[n : n + n_high].sum()
        out[i, 2] = max(high[n : n + n_high].sum() / total, _MIN_SHARE) if total > 0 else _MIN_SHARE
    return out


def transient_smearing_ratio(pred: np.ndarray, ref: np.ndarray, sample_rate: int) -> dict[str, float | int | str]:
    """TSR of ``pred`` [S] against ``ref`` [S'] (mono, same rate); definition ``tsr-v1`` in the module docstring.

    Returns ``{"tsr", "flux_ratio", "attack_ratio", "highband_loss_db", "n_onsets", "version"}`` (``tsr`` equals
    ``flux_ratio``). A reference without detectable onsets gives NaN ratios and ``n_onsets == 0``.
    """
    import librosa

    pred = check_mono(pred, sample_rate, 4 * _HOP / sample_rate, "pred")
    ref = check_mono(ref, sample_rate, 4 * _HOP / sample_rate, "ref")
    n = min(len(pred), len(ref))
    pred, ref = pred[:n], ref[:n]
    onsets = librosa.onset.onset_detect(y=ref, sr=sample_rate, hop_length=_HOP, backtrack=True, units="samples")
    onsets = np.unique(np.asarray(onsets, dtype=int))
    if len(onsets) == 0:
        nan = float("nan")
        return dict.fromkeys(("tsr", "flux_ratio", "attack_ratio", "highband_loss_db"), nan) | {
            "n_onsets": 0,
            "version": TSR_VERSION,
        }
    f_ref, f_pred = _features(ref, sample_rate, onsets), _features(pred, sample_rate, onsets)  # [N, 3] each

    def gmean(x: np.ndarray) -> float:
        return float(np.exp(np.mean(np.log(x))))

    flux = gmean((f_ref[:, 0] + _EPS_FLUX) / (f_pred[:, 0] + _EPS_FLUX))
    return {
        "tsr": flux,
        "flux_ratio": flux,
        "attack_ratio": gmean(f_pred[:, 1] / f_ref[:, 1]),
        "highband_loss_db": float(np.mean(10 * np.log10(f_ref[:, 2] / f_pred[:, 2]))),
        "n_onsets": len(onsets),
        "version": TSR_VERSION,
    }
