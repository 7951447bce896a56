import numpy as np
import pytest

from accelerando.eval.pulse import PULSE_VERSION, pulse_strength

SR = 22050


def _clicks(bpm: float, seconds: float = 8.0, offset: float = 0.0, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = 0.001 * rng.standard_normal(int(seconds * SR))
    burst = rng.standard_normal(300) * np.exp(-np.arange(300) / 60)
    for t in np.arange(offset, seconds - 0.1, 60 / bpm):
        k = int((t + jitter * rng.standard_normal()) * SR)
        if 0 <= k < len(y) - 300:
            y[k : k + 300] += burst
    return y


def test_a_steady_pulse_locks_at_its_tempo_and_not_at_an_unrelated_one():
    y = _clicks(100)
    at = pulse_strength(y, SR, 100)
    assert at["version"] == PULSE_VERSION and at["strength"] > 0.5
    assert at["phase"] < 0.1 or at["phase"] > 0.95  # clicks on the grid that starts at t = 0
    assert at["on_grid"] > 0.5
    assert pulse_strength(y, SR, 117)["strength"] < 0.2  # non-harmonic wrong tempo: chance
    shifted = pulse_strength(_clicks(100, offset=0.3), SR, 100)  # half a beat late
    assert shifted["strength"] > 0.5 and shifted["on_grid"] < -0.5  # locked, but off the requested grid
    assert pulse_strength(_clicks(100, jitter=0.1), SR, 100)["strength"] < at["strength"] - 0.12  # loose timing
    assert pulse_strength(y, SR, 50)["strength"] < 0.2  # onsets on every beat of 100 cancel at 50 bpm


def test_pulse_strength_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="bpm=-3"):
        pulse_strength(_clicks(100), SR, -3)
    assert pulse_strength(np.zeros(SR * 2), SR, 100)["strength"] == 0.0
