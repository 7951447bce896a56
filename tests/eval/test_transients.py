import numpy as np
import pytest

from accelerando.eval.transients import TSR_VERSION, transient_smearing_ratio

pytest.importorskip("librosa")
scipy_signal = pytest.importorskip("scipy.signal")
SR = 22050


def _hits(seconds: float = 3.0, period: float = 0.37) -> tuple[np.ndarray, np.ndarray]:
    """Percussive hits (decaying noise + a 330 Hz tone) every ``period`` s; returns (audio [S], onsets [N] in s)."""
    rng = np.random.default_rng(0)
    onsets = np.arange(0.3, seconds - 0.3, period)
    y = np.zeros(int(seconds * SR))
    t = np.arange(int(0.25 * SR)) / SR
    for o in onsets:
        hit = 0.5 * rng.standard_normal(len(t)) * np.exp(-30 * t) + 0.3 * np.sin(2 * np.pi * 330 * t) * np.exp(-8 * t)
        i = int(o * SR)
        y[i : i + len(t)] += hit
    return y, onsets


def _smear(y: np.ndarray, ms: float) -> np.ndarray:
    """Causal convolution with a unit-sum Hann window ``ms`` long."""
    w = np.hanning(max(1, round(ms * SR / 1000)) + 2)[1:-1]
    return np.convolve(y, w / w.sum())[: len(y)]


def _lowpass(y: np.ndarray, hz: float) -> np.ndarray:
    return scipy_signal.sosfilt(scipy_signal.butter(4, hz, fs=SR, output="sos"), y)


def test_identical_and_rescaled_signals_are_neutral():
    y, onsets = _hits()
    r = transient_smearing_ratio(y, y, SR)
    assert r == {
        "tsr": 1.0,
        "flux_ratio": 1.0,
        "attack_ratio": 1.0,
        "highband_loss_db": 0.0,
        "n_onsets": len(onsets),
        "version": TSR_VERSION,
    }
    r = transient_smearing_ratio(0.5 * y, y, SR)  # every component ignores a gain change
    assert r["tsr"] == pytest.approx(1.0, abs=1e-6) and r["attack_ratio"] == pytest.approx(1.0)
    assert r["highband_loss_db"] == pytest.approx(0.0, abs=1e-6)


def test_reference_onsets_agree_with_librosa_and_truth():
    import librosa

    y, onsets = _hits()
    detected = librosa.onset.onset_detect(y=y, sr=SR, hop_length=256, backtrack=True, units="time")
    assert np.allclose(detected, onsets, atol=0.015)  # backtracking lands within about a frame of the truth
    assert transient_smearing_ratio(y, y, SR)["n_onsets"] == len(detected)


def test_smoothing_raises_tsr_monotonically():
    y, _ = _hits()
    results = [transient_smearing_ratio(_smear(y, ms), y, SR) for ms in (0.5, 2, 5, 10, 20)]
    for key in ("tsr", "attack_ratio"):
        values = [1.0] + [r[key] for r in results]
        assert np.all(np.diff(values) > 0), (key, values)
    assert results[-1]["tsr"] > 10 and results[-1]["highband_loss_db"] > 20


def test_lowpass_raises_tsr_monotonically():
    y, _ = _hits()
    results = [transient_smearing_ratio(_lowpass(y, hz), y, SR) for hz in (8000, 4000, 2000, 1000)]
    for key in ("tsr", "highband_loss_db"):
        values = [r[key] for r in results]
        assert np.all(np.diff(values) > 0) and values[0] > {"tsr": 1.0, "highband_loss_db": 0.0}[key], (key, values)
    # sharper than the reference reads below 1
    assert transient_smearing_ratio(y, _lowpass(y, 2000), SR)["tsr"] < 1.0


def test_lengths_are_matched_and_silence_has_no_onsets():
    y, _ = _hits()
    assert transient_smearing_ratio(y[:-300], y, SR)["tsr"] == pytest.approx(1.0, abs=0.01)
    r = transient_smearing_ratio(y, np.zeros_like(y), SR)
    assert r["n_onsets"] == 0 and np.isnan(r["tsr"])


def test_bad_input_raises():
    y, _ = _hits()
    with pytest.raises(ValueError, match="pred is empty"):
        transient_smearing_ratio(np.zeros(0), y, SR)
    bad = y.copy()
    bad[10] = np.inf
    with pytest.raises(ValueError, match="ref has 1 non-finite"):
        transient_smearing_ratio(y, bad, SR)
    with pytest.raises(ValueError, match="mono"):
        transient_smearing_ratio(np.stack([y, y]), y, SR)
    with pytest.raises(ValueError, match="sample_rate"):
        transient_smearing_ratio(y, y, 22050.0)
