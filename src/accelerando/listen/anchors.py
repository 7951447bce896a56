"""MUSHRA anchors: the reference low-pass filtered at 3.5 kHz (low anchor) and 7 kHz (mid-range anchor).

ITU-R BS.1534-3 asks for both anchors in every trial. Each is the trial's reference run forwards and backwards
through a 10th-order Butterworth low-pass (``scipy.signal.sosfiltfilt``): zero phase, so the anchor stays
time-aligned with the reference, with an effective order of 20 (−6 dB at the cutoff, about −120 dB per octave
above it). The result is clipped to [-1, 1] and written as 16-bit PCM WAV.

Anchors are cached in ``<test>.anchors/`` next to the test file, named by a hash of the reference file's bytes and
the cutoff, so editing a reference makes a fresh anchor. Each file is written to a temporary name and renamed into
place, so an interrupted run never leaves a half-written anchor under its final name.
"""

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np

from accelerando.errors import UserError

from .config import ANCHORS, ListenConfig

__all__ = ["FILTER_ORDER", "anchor_dir", "ensure_anchors", "lowpass", "make_anchor"]

FILTER_ORDER = 10  # Butterworth order of one pass; sosfiltfilt runs it twice
_TAG = "v1"  # bump when the anchor recipe changes, so cached files are remade


def anchor_dir(config: ListenConfig) -> Path:
    """``test.yaml`` -> ``test.anchors/`` in the same directory."""
    return config.path.with_name(f"{config.path.stem}.anchors")


def lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Zero-phase Butterworth low-pass of ``x`` (``[S]`` or ``[S, C]``, float) along the sample axis."""
    from scipy.signal import butter, sosfiltfilt

    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie strictly between 0 and the Nyquist rate {sample_rate / 2} Hz")
    sos = butter(FILTER_ORDER, cutoff_hz, btype="lowpass", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, np.asarray(x, dtype=np.float64), axis=0)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def make_anchor(reference: Path, cutoff_hz: float, out_dir: Path) -> Path:
    """The low-passed copy of ``reference`` in ``out_dir``, made (atomically) unless already cached."""
    import soundfile as sf

    out = out_dir / f"{_digest(reference)}_{int(round(cutoff_hz))}hz_{_TAG}.wav"
    if out.is_file():
        return out
    data, sr = sf.read(str(reference), dtype="float64", always_2d=True)  # [S, C]
    if cutoff_hz >= sr / 2:
        raise UserError(
            f"{reference}: sample rate {sr} Hz is too low for a {cutoff_hz:g} Hz low-pass anchor "
            f"(needs more than {2 * cutoff_hz:g} Hz); resample the audio or set 'mushra: anchors: false'"
        )
    y = np.clip(lowpass(data, sr, cutoff_hz), -1.0, 1.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{out.name}.{uuid.uuid4().hex}.tmp"
    try:
        sf.write(str(tmp), y, sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def ensure_anchors(config: ListenConfig) -> dict[tuple[str, str], Path]:
    """Make (or find cached) anchors for every MUSHRA trial: ``(trial name, anchor name) -> file``.

    Empty when ``config.anchors`` is false.
    """
    if not config.anchors:
        return {}
    out_dir = anchor_dir(config)
    return {
        (trial.name, name): make_anchor(trial.reference, cutoff, out_dir)
        for trial in config.mushra
        for name, cutoff in ANCHORS.items()
    }
