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
