"""Global key estimation from audio, and key agreement scored with ``mir_eval.key``.

Estimator: the Krumhansl-Schmuckler method. The clip's mean constant-Q chroma (librosa ``chroma_cqt``) is
correlated with the 24 rotations of the Krumhansl-Kessler major and minor key profiles, and the best correlation
wins. No audio key detector ships in librosa or mir_eval, and essentia's is not a light dependency, hence this
short implementation.
"""

import numpy as np

__all__ = ["estimate_key", "key_score", "to_majmin"]

_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_MAJORISH = {"major", "ionian", "lydian", "mixolydian"}


def to_majmin(mode: str) -> str:
    """Map a church mode onto the major/minor pair that mir_eval scores (dorian, phrygian, aeolian -> minor)."""
    return "major" if mode in _MAJORISH else "minor"


def estimate_key(y: np.ndarray, sample_rate: int) -> tuple[str, str]:
    """Estimate the global key of mono audio ``y`` [S]; returns (tonic, "major" | "minor")."""
    import librosa

    chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate).mean(axis=1)  # [12]
    best, best_r = ("C", "major"), -np.inf
    for mode, profile in (("major", _MAJOR), ("minor", _MINOR)):
        for tonic in range(12):
            r = np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]
            if r > best_r:
                best, best_r = (_NAMES[tonic], mode), r
    return best


def key_score(reference: tuple[str, str], estimate: tuple[str, str]) -> float:
    """MIREX weighted key score (1 same, 0.5 fifth, 0.3 relative, 0.2 parallel, 0 other) via ``mir_eval.key``."""
    import mir_eval

    ref = f"{reference[0]} {to_majmin(reference[1])}"
    est = f"{estimate[0]} {to_majmin(estimate[1])}"
    return float(mir_eval.key.weighted_score(ref, est))
