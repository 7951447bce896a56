"""Pulse locking: how strongly a clip's onsets repeat at a requested tempo, independent of any beat tracker.

Definition, version ``pulse-vs-v1``. ``env[n]`` is librosa's onset strength (``onset_strength``, hop 256) of the
mono clip at frame times ``t[n]``; the requested beat period is ``P = 60 / bpm``. The vector strength (Goldberg &
Brown's measure of phase locking, used for rhythm synchronisation) is

    z = sum_n env[n] exp(2 pi i t[n] / P) / sum_n env[n]
    strength = |z|  in [0, 1]

``strength`` is 1 when every onset falls at the same phase of the requested period and near 0 when the onsets are
spread over the period (no pulse at that tempo, or one at an unrelated tempo). It does not depend on where the
beats start, so it applies to real recordings at their labelled bpm as well as to generated clips. A pulse at 1/2 or
1/3 of the requested tempo (onsets every 2 or 3 beats) also locks fully; onsets between the beats (subdivisions, or
a pulse at 2x the tempo) pull it down. A click track scores about 0.6, not 1: the onset envelope is a few frames
wide and has a floor between clicks.
``phase`` is the angle of ``z`` in beats (0 to 1): for a generated clip whose beat grid starts at t = 0, onsets on
the requested beats give a phase near 0 (a few tens of ms later, the onset detector's lag), and ``on_grid =
Re(z)`` counts only the locking at that phase.

A tracker's tempo estimate can miss by a metrical level or a near tempo even when the pulse is right (see
``benchmarks/analyzer_ceiling.py``); vector strength has no such choice to make, so it is the finer figure for
comparing generators on the same requests. Report it next to the same figure at a non-harmonic wrong tempo (chance).
"""

import numpy as np

from accelerando.eval._validate import check_mono

__all__ = ["PULSE_VERSION", "pulse_strength"]

PULSE_VERSION = "pulse-vs-v1"
_HOP = 256


def pulse_strength(y: np.ndarray, sample_rate: int, bpm: float) -> dict:
    """Vector strength of the onsets of mono ``y`` [S] at ``bpm``: ``{"strength", "phase", "on_grid", "version"}``."""
    import librosa

    y = check_mono(y, sample_rate, min_seconds=1.0)
    if not (isinstance(bpm, int | float) and np.isfinite(bpm) and bpm > 0):
        raise ValueError(f"bpm={bpm!r} must be a positive number")
    env = librosa.onset.onset_strength(y=y.astype(np.float32), sr=sample_rate, hop_length=_HOP)  # [N]
    t = np.arange(env.size) * _HOP / sample_rate
    total = float(env.sum())
    if total <= 0:
        return {"strength": 0.0, "phase": 0.0, "on_grid": 0.0, "version": PULSE_VERSION}
    z = complex(np.sum(env * np.exp(2j * np.pi * t * bpm / 60.0)) / total)
    return {
        "strength": abs(z),
        "phase": float(np.angle(z) / (2 * np.pi) % 1.0),
        "on_grid": z.real,
        "version": PULSE_VERSION,
    }
