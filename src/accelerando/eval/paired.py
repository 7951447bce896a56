"""Paired fidelity metrics: compare ``pred`` with ``ref`` rendered at the same seed (e.g. quantized vs full precision).

Every metric takes ``pred`` and ``ref`` as torch tensors or numpy arrays of one shape, ``[S]``, ``[C, S]`` or
``[B, C, S]``, at one sample rate. Unbatched input returns a python float; batched input returns a list of ``B``
floats, item ``b`` equal to the metric of ``(pred[b], ref[b])``. Computation is float64, without gradients, on
``pred``'s device. Shapes that differ, ranks other than 1-3 and NaN/inf values raise ``ValueError``.

=================  ==========================================  ============  ====================
name               function                                    better        version
=================  ==========================================  ============  ====================
``lsd``            :func:`~.lsd.lsd` (dB)                      lower         ``lsd-v1``
``mrstft``         :func:`~.stft_distance.mrstft`              lower         ``mrstft-v1``
``mel_distance``   :func:`~.stft_distance.mel_distance`        lower         ``mel-l1-v1``
``si_sdr``         :func:`~.si_sdr.si_sdr` (dB)                higher        ``si-sdr-v1``
``complex_stft``   :func:`~.stft_distance.complex_stft_error`  lower         ``complex-stft-v1``
=================  ==========================================  ============  ====================

:data:`PAIRED_METRICS` maps each name to a callable ``(pred, ref, sample_rate) -> float`` (a list for batched input)
with default settings, so a runner can dispatch by name; store :data:`PAIRED_METRIC_VERSIONS` next to the scores.
Definitions in full: ``docs/metrics_paired.md``.
"""

from collections.abc import Callable

from ._paired_inputs import Audio, Score
from .lsd import LSD_VERSION, lsd
from .si_sdr import SI_SDR_VERSION, si_sdr
from .stft_distance import (
    COMPLEX_STFT_VERSION,
    MEL_DISTANCE_VERSION,
    MRSTFT_VERSION,
    complex_stft_error,
    complex_stft_error_db,
    mel_distance,
    mrstft,
)

__all__ = [
    "COMPLEX_STFT_VERSION",
    "HIGHER_IS_BETTER",
    "LSD_VERSION",
    "MEL_DISTANCE_VERSION",
    "MRSTFT_VERSION",
    "PAIRED_METRICS",
    "PAIRED_METRIC_VERSIONS",
    "SI_SDR_VERSION",
    "PairedMetric",
    "complex_stft_error",
    "complex_stft_error_db",
    "lsd",
    "mel_distance",
    "mrstft",
    "si_sdr",
]

PairedMetric = Callable[[Audio, Audio, int], Score]


def _lsd(pred: Audio, ref: Audio, sample_rate: int) -> Score:
    return lsd(pred, ref)


def _mrstft(pred: Audio, ref: Audio, sample_rate: int) -> Score:
    return mrstft(pred, ref)


def _mel_distance(pred: Audio, ref: Audio, sample_rate: int) -> Score:
    return mel_distance(pred, ref, sample_rate)


def _si_sdr(pred: Audio, ref: Audio, sample_rate: int) -> Score:
    return si_sdr(pred, ref)


def _complex_stft(pred: Audio, ref: Audio, sample_rate: int) -> Score:
    return complex_stft_error(pred, ref)


PAIRED_METRICS: dict[str, PairedMetric] = {
    "lsd": _lsd,
    "mrstft": _mrstft,
    "mel_distance": _mel_distance,
    "si_sdr": _si_sdr,
    "complex_stft": _complex_stft,
}

PAIRED_METRIC_VERSIONS: dict[str, str] = {
    "lsd": LSD_VERSION,
    "mrstft": MRSTFT_VERSION,
    "mel_distance": MEL_DISTANCE_VERSION,
    "si_sdr": SI_SDR_VERSION,
    "complex_stft": COMPLEX_STFT_VERSION,
}

HIGHER_IS_BETTER: dict[str, bool] = {name: name == "si_sdr" for name in PAIRED_METRICS}
