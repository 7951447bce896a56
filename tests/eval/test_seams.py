import numpy as np
import pytest

from accelerando.eval.seams import SEAM_VERSION, seam_scores

SR = 16000


def _notes(seconds: float, seed: int = 0) -> np.ndarray:
    """Harmonic notes every 0.25 s with 10 ms attacks and releases: ordinary onsets set the flux scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.25):
        f0 = 220 * 2 ** (rng.integers(0, 12) / 12)
        m = (t >= start) & (t < start + 0.25)
        tt = t[m] - start
        env = np.minimum(1.0, np.minimum(tt, 0.25 - tt) / 0.01) * np.exp(-3 * tt)  # 10 ms attack and release
        y[m] += env * sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in (1, 2, 3))
    return 0.2 * y


def test_crossfaded_boundary_scores_low_and_a_click_scores_high():
    a, b = _notes(4.0, 0), _notes(4.0, 1)
    cut, fade = int(2.1 * SR), int(0.02 * SR)  # between the onsets at 2.0 and 2.25 s
    w = np.linspace(0, 1, fade)
    smooth = a.copy()
    smooth[cut : cut + fade] = a[cut : cut + fade] * np.sqrt(1 - w) + b[cut : cut + fade] * np.sqrt(w)
    smooth[cut + fade :] = b[cut + fade :]
    clicked = smooth.copy()
    clicked[cut + fade // 2] += 0.9  # one-sample click
    hard = np.concatenate([a[:cut], b[cut:] + 0.3])  # an unfaded step
    s = seam_scores(smooth, SR, [2.1 + 0.01])
    assert s["version"] == SEAM_VERSION and s["max_ratio"] < 1.5 and s["n_above_threshold"] == 0
    assert seam_scores(clicked, SR, [2.11])["n_above_threshold"] == 1
    assert seam_scores(hard, SR, [2.1])["n_above_threshold"] == 1


def test_seam_scores_errors_name_the_bad_value():
    y = _notes(2.0)
    with pytest.raises(ValueError, match="empty"):
        seam_scores(y, SR, [])
    with pytest.raises(ValueError, match="2.5"):
        seam_scores(y, SR, [1.0, 2.5])
    with pytest.raises(ValueError, match="too little audio"):
        seam_scores(y[: SR // 4], SR, [0.125])


def test_excess_over_the_reference_spares_the_musics_own_onset_but_not_a_jump():
    orig = _notes(4.0, 0)
    onset = 1.0  # the input has an accent (a drum hit) here; a region starting 10 ms before it puts it in the window
    n = int(0.05 * SR)
    hit = np.random.default_rng(5).standard_normal(n) * np.exp(-np.arange(n) / (0.008 * SR))
    orig[int(onset * SR) : int(onset * SR) + n] += 0.5 * hit
    edited = orig.copy()
    edited[int(1.2 * SR) :] = _notes(4.0, 1)[int(1.2 * SR) :]  # changed music later, away from the boundary
    plain = seam_scores(edited, SR, [onset - 0.01], reference=orig)
    assert plain["ratios"][0] > 2.0  # seam-v1 alone calls the input's own attack a seam
    assert plain["reference_ratios"][0] > 2.0 and plain["excess_ratios"][0] < 1.2 and plain["n_artifacts"] == 0
    cut = int(2.1 * SR)
    jumped = np.concatenate([orig[:cut], _notes(4.0, 1)[cut:] + 0.3])  # an unfaded jump between onsets
    s = seam_scores(jumped, SR, [2.1], reference=orig)
    assert s["n_artifacts"] == 1 and s["max_excess"] > 3.0
    with pytest.raises(ValueError, match="reference is"):
        seam_scores(edited, SR, [3.5], reference=orig[:SR])
