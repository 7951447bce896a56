"""Key Stability Index (KSI) and key adherence, on :mod:`accelerando.eval.key` and ``mir_eval.key``.

Key Stability Index, version ``ksi-v2`` (v2: the key estimator's Albrecht-Shanahan profiles): estimate the global
key ``K`` of the clip and the key ``k_w`` of each 8 s window taken every 4 s (a last window is aligned to the clip's
end when the hop grid leaves a tail), all with :func:`accelerando.eval.key.estimate_key` (key-profile matching on
librosa CQT chroma). Windows whose RMS is more
than 60 dB below the clip's RMS are skipped (silence has no key). Then

    KSI = mean_w  mir_eval.key.weighted_score(K, k_w)

with the MIREX weights (1 same key, 0.5 fifth above with the same mode, 0.3 relative, 0.2 parallel, 0 other). A
clip that stays in one key scores 1; one that spends half its time in an unrelated key scores about 0.5.

Key adherence: ``mir_eval.key.weighted_score(requested, K)``, the MIREX score of the global estimate against the
key the prompt asked for. Modes other than major/minor map through :func:`accelerando.eval.key.to_majmin`.
"""

import re

import numpy as np

from accelerando.eval._validate import check_mono

__all__ = ["KSI_VERSION", "key_adherence", "key_stability_index", "parse_key"]

KSI_VERSION = "ksi-v2"

_PITCH_CLASS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]  # spellings mir_eval accepts
_MODES = {
    "": "major",
    "M": "major",
    "maj": "major",
    "major": "major",
    "m": "minor",
    "min": "minor",
    "minor": "minor",
    **{m: m for m in ("ionian", "dorian", "phrygian", "lydian", "mixolydian", "aeolian", "locrian")},
}
_KEY_RE = re.compile(r"^\s*([A-Ga-g])([#b\u266f\u266d]*)[\s:_-]*([A-Za-z]*)\s*$")
_SILENCE_DB = -60.0  # windows this far below the clip's RMS are skipped


def _check_keyed(y, sample_rate: int, min_seconds: float = 0.0) -> np.ndarray:
    """:func:`check_mono`, and refuse digital silence, which has no key."""
    y = check_mono(y, sample_rate, min_seconds)
    if not np.any(y):
        raise ValueError("audio is silent (all samples are zero); it has no key")
    return y


def parse_key(name: str) -> tuple[str, str]:
    """Parse a key name such as "F# minor", "Bb major", "G mixolydian", "C#m" or "Eb"; return (tonic, mode).

    The tonic comes back in a spelling mir_eval accepts ("A#" -> "Bb", "Cb" -> "B"), the mode as "major" or
    "minor" (church modes via :func:`accelerando.eval.key.to_majmin`, a missing mode means major).
    """
    from accelerando.eval.key import to_majmin

    match = _KEY_RE.match(name) if isinstance(name, str) else None
    mode = match and (_MODES.get(match.group(3)) or _MODES.get(match.group(3).lower()))
    if not match or mode is None:
        raise ValueError(f"unknown key name {name!r}; expected e.g. 'F# minor', 'Bb major' or 'G mixolydian'")
    letter, accidentals = match.group(1), match.group(2)
    shift = sum(1 if a in "#\u266f" else -1 for a in accidentals)
    return _NAMES[(_PITCH_CLASS[letter.lower()] + shift) % 12], to_majmin(mode)


def _window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of full windows every ``hop``, plus one ending at the clip's end if a tail is left over."""
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def key_stability_index(
    y: np.ndarray, sample_rate: int, window_s: float = 8.0, hop_s: float = 4.0
) -> dict[str, float | str | list]:
    """Key Stability Index of mono audio ``y`` [S] (at least ``window_s`` long); definition in the module docstring.

    Returns ``{"ksi", "global_key", "window_keys", "window_scores", "window_starts", "version"}``: keys as
    "C major" strings, window starts in seconds, one score per non-silent window.
    """
    from accelerando.eval.key import estimate_key, key_score

    if not (np.isfinite(window_s) and np.isfinite(hop_s) and 0 < hop_s and 0 < window_s):
        raise ValueError(f"window_s and hop_s must be positive, got window_s={window_s!r}, hop_s={hop_s!r}")
    y = _check_keyed(y, sample_rate, window_s)
    window, hop = round(window_s * sample_rate), max(1, round(hop_s * sample_rate))
    floor = np.sqrt(np.mean(y**2)) * 10 ** (_SILENCE_DB / 20)
    global_key = estimate_key(y, sample_rate)
    starts, keys, scores = [], [], []
    for s in _window_starts(len(y), window, hop):
        seg = y[s : s + window]
        if np.sqrt(np.mean(seg**2)) < floor:
            continue
        k = estimate_key(seg, sample_rate)
        starts.append(s / sample_rate)
        keys.append(f"{k[0]} {k[1]}")
        scores.append(key_score(global_key, k))
    return {
        "ksi": float(np.mean(scores)),
        "global_key": f"{global_key[0]} {global_key[1]}",
        "window_keys": keys,
        "window_scores": scores,
        "window_starts": starts,
        "version": KSI_VERSION,
    }


def key_adherence(y: np.ndarray, sample_rate: int, requested_key: str) -> float:
    """MIREX weighted score (mir_eval.key) of the global key of mono audio ``y`` [S] against ``requested_key``."""
    from accelerando.eval.key import estimate_key, key_score

    requested = parse_key(requested_key)
    return key_score(requested, estimate_key(_check_keyed(y, sample_rate), sample_rate))
