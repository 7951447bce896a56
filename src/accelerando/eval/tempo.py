"""Tempo adherence (MIREX Accuracy1/Accuracy2) and the Beat Consistency Score (BCS).

Tempo, version ``tempo-acc-v3``: the global tempo of :func:`accelerando.eval.beats.track_beats` (librosa's
onset-autocorrelation estimate that seeds its dynamic-programming beat tracker), with its tempo prior centred at
100 BPM (``tempo-acc-v1``: 120 BPM, ``v2``: 80 BPM; see :mod:`accelerando.eval.beats`). Adherence to a requested
tempo follows the MIREX tempo-estimation accuracies: Acc1 accepts an estimate within 4 % of the request, Acc2 also
accepts 4 % of 2x, 3x, 1/2x or 1/3x of it.

Beat Consistency Score, version ``bcs-v1`` (no reference beats needed):

- ``A`` (agreement): two independent trackers run on the clip. Tracker 1 is librosa's dynamic-programming tracker
  (:func:`accelerando.eval.beats.track_beats` with its v1 prior at 120 BPM, a single global period); tracker 2
  takes the peaks of librosa's predominant local pulse (``librosa.beat.plp``, a locally adaptive Fourier tempogram
  method, lognormal tempo prior centred at 120 BPM) that exceed 10 % of the pulse maximum. ``A`` is the mir_eval
  beat F-measure (70 ms window, first 5 s trimmed) at the best metrical level
  (:func:`accelerando.eval.beats.beat_f_measure_any_level`), taking the larger of the two directions (each tracker
  as the reference).
- ``S`` (stability): ``S = max(0, 1 - CV / 0.25)``, where ``CV`` is the coefficient of variation of tracker 1's
  inter-beat intervals after the variance of the onset-frame quantisation, ``(512 / sr)^2 / 6``, is subtracted.
  An IBI spread of 25 % means there is no steady pulse left.
- ``BCS = A * S`` in [0, 1]. If either tracker finds fewer than 4 beats, ``BCS = A = S = 0``.

The DP tracker forces one period on the whole clip, so a tempo change shows mostly in ``A`` (the adaptive PLP
tracker follows the change, the DP tracker does not) and only a little in ``S``.
"""

import numpy as np

from accelerando.eval._validate import check_mono
from accelerando.eval.beats import DEFAULT_START_BPM

__all__ = ["BCS_VERSION", "TEMPO_VERSION", "beat_consistency", "estimate_tempo", "tempo_adherence"]

TEMPO_VERSION = "tempo-acc-v3"
BCS_VERSION = "bcs-v1"

_TOLERANCE = 0.04  # MIREX tempo tolerance, relative
_FACTORS = (1.0, 2.0, 3.0, 1 / 2, 1 / 3)  # metrical levels accepted by Acc2
_HOP = 512  # hop of the onset envelope in accelerando.eval.beats.track_beats and of the PLP tracker
_CV_MAX = 0.25  # IBI coefficient of variation at which S reaches 0
_PLP_PEAK_FLOOR = 0.1  # PLP peaks below this fraction of the pulse maximum are dropped
_MIN_SECONDS = 10.0  # the beat F-measure trims the first 5 s; keep at least 5 s after that
_MIN_BEATS = 4
_BCS_START_BPM = 120.0  # bcs-v1 runs tracker 1 with librosa's default prior, as defined


def _check_bpm(name: str, bpm: float) -> float:
    bpm = float(bpm)
    if not np.isfinite(bpm) or bpm <= 0:
        raise ValueError(f"{name} must be a positive finite BPM, got {bpm!r}")
    return bpm


def estimate_tempo(y: np.ndarray, sample_rate: int, start_bpm: float = DEFAULT_START_BPM) -> float:
    """Global tempo in BPM of mono audio ``y`` [S] (librosa, via :func:`accelerando.eval.beats.track_beats`).

    ``start_bpm`` centres the tempo prior; the default is the tracker's (100 BPM), never the requested tempo.
    """
    from accelerando.eval.beats import track_beats

    y = check_mono(y, sample_rate)
    return track_beats(y, sample_rate, start_bpm=_check_bpm("start_bpm", start_bpm))[0]


def tempo_adherence(estimated_bpm: float, requested_bpm: float) -> dict[str, float]:
    """MIREX tempo accuracies of ``estimated_bpm`` against ``requested_bpm``.

    Returns ``{"acc1", "acc2", "rel_error", "factor", "version"}``: ``acc1`` is 1.0 when
    ``|est - req| <= 0.04 * req``; ``acc2`` is 1.0 when that holds for ``req`` times any of 1, 2, 3, 1/2, 1/3;
    ``rel_error = (est - req) / req`` (signed); ``factor`` is the metrical factor that came closest (relative to
    itself), the one Acc2 judged.
    """
    est = _check_bpm("estimated_bpm", estimated_bpm)
    req = _check_bpm("requested_bpm", requested_bpm)
    errors = {f: abs(est - f * req) / (f * req) for f in _FACTORS}
    factor = min(errors, key=errors.get)
    return {
        "acc1": float(errors[1.0] <= _TOLERANCE),
        "acc2": float(errors[factor] <= _TOLERANCE),
        "rel_error": (est - req) / req,
        "factor": factor,
        "version": TEMPO_VERSION,
    }


def _plp_beats(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """Beat times (s) [N] at the peaks of librosa's predominant local pulse."""
    import librosa
    import scipy.stats

    onset_env = librosa.onset.onset_strength(y=y, sr=sample_rate, hop_length=_HOP)  # [T]
    prior = scipy.stats.lognorm(loc=np.log(120), scale=120, s=1)
    pulse = librosa.beat.plp(onset_envelope=onset_env, sr=sample_rate, hop_length=_HOP, prior=prior)  # [T]
    peaks = np.flatnonzero(librosa.util.localmax(pulse) & (pulse > _PLP_PEAK_FLOOR * pulse.max()))
    return librosa.frames_to_time(peaks, sr=sample_rate, hop_length=_HOP)


def beat_consistency(y: np.ndarray, sample_rate: int) -> dict[str, float | str]:
    """Beat Consistency Score of mono audio ``y`` [S] (at least 10 s); definition ``bcs-v1`` in the module docstring.

    Returns ``{"bcs", "agreement", "stability", "ibi_cv", "tempo", "n_beats_dp", "n_beats_plp", "version"}``;
    ``tempo`` is tracker 1's global tempo (BPM) and ``ibi_cv`` the quantisation-corrected CV (NaN without beats).
    """
    from accelerando.eval.beats import beat_f_measure_any_level, track_beats

    y = check_mono(y, sample_rate, _MIN_SECONDS)
    tempo, beats_dp = track_beats(y, sample_rate, start_bpm=_BCS_START_BPM)
    beats_plp = _plp_beats(y, sample_rate)
    out = {"tempo": tempo, "n_beats_dp": len(beats_dp), "n_beats_plp": len(beats_plp), "version": BCS_VERSION}
    # beat_f_measure_any_level trims the first 5 s of both sequences; demand beats after that
    late = min(np.sum(beats_dp >= 5.0), np.sum(beats_plp >= 5.0))
    if len(beats_dp) < _MIN_BEATS or late < _MIN_BEATS:
        return out | {"bcs": 0.0, "agreement": 0.0, "stability": 0.0, "ibi_cv": float("nan")}
    ibi = np.diff(beats_dp)
    var = max(0.0, float(np.var(ibi)) - (_HOP / sample_rate) ** 2 / 6)
    cv = float(np.sqrt(var) / np.mean(ibi))
    stability = max(0.0, 1.0 - cv / _CV_MAX)
    agreement = max(beat_f_measure_any_level(beats_dp, beats_plp)[0], beat_f_measure_any_level(beats_plp, beats_dp)[0])
    return out | {"bcs": agreement * stability, "agreement": agreement, "stability": stability, "ibi_cv": cv}
