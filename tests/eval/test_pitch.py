import importlib.util
import sys

import numpy as np
import pytest

from accelerando.eval.pitch import PITCH_VERSION, pitch_drift

if importlib.util.find_spec("torchcrepe") is None:  # not importorskip: torchcrepe needs the torchaudio stand-in
    pytest.skip("torchcrepe is not installed (pip install torchcrepe --no-deps)", allow_module_level=True)


def _glide(f0: float, cents_per_s: float, seconds: float, sr: int) -> np.ndarray:
    """A sine [S] starting at ``f0`` Hz whose pitch moves ``cents_per_s`` cents every second (exponential sweep)."""
    t = np.arange(int(seconds * sr)) / sr
    if cents_per_s == 0:
        return 0.5 * np.sin(2 * np.pi * f0 * t)
    k = cents_per_s * np.log(2) / 1200
    return 0.5 * np.sin(2 * np.pi * f0 * np.expm1(k * t) / k)


def test_stable_detuned_sine_has_no_drift_and_its_offset():
    r = pitch_drift(_glide(440 * 2 ** (20 / 1200), 0, 2.0, 16000), 16000)  # A4 + 20 cents
    assert r["version"] == PITCH_VERSION and r["voiced_fraction"] > 0.95
    assert abs(r["drift_cents_per_s"]) < 1.0 and abs(r["drift_cents"]) < 2.0
    assert abs(r["tuning_drift_cents_per_s"]) < 1.0
    assert r["tuning_offset_cents"] == pytest.approx(20, abs=3) and r["et_deviation_cents"] == pytest.approx(20, abs=3)
    assert "torchaudio" not in sys.modules or sys.modules["torchaudio"].__spec__ is not None  # no stub left behind


def test_in_tune_sine_at_another_rate():
    r = pitch_drift(_glide(220, 0, 1.5, 22050), 22050)  # resampled to 16 kHz inside
    assert abs(r["drift_cents_per_s"]) < 1.0
    assert r["et_deviation_cents"] < 10  # CREPE "tiny" has a pitch-dependent bias of up to about 10 cents


@pytest.mark.parametrize("rate", [100.0, -20.0])
def test_glide_rate_is_recovered(rate):
    r = pitch_drift(_glide(220, rate, 2.0, 16000), 16000)
    assert r["drift_cents_per_s"] == pytest.approx(rate, rel=0.15)
    assert r["drift_cents"] == pytest.approx(2.0 * rate, rel=0.15)
    if abs(rate) * 1.0 < 50:  # each half drifts by well under 100 cents: the ET-offset drift sees it too
        assert r["tuning_drift_cents_per_s"] == pytest.approx(rate, rel=0.15)


def test_silence_is_unvoiced_and_bad_input_raises():
    r = pitch_drift(np.zeros(16000), 16000)
    assert r["n_voiced"] == 0 and r["voiced_fraction"] == 0.0 and np.isnan(r["drift_cents_per_s"])
    with pytest.raises(ValueError, match="need at least 0.064 s"):
        pitch_drift(np.zeros(500), 16000)
    with pytest.raises(ValueError, match="empty"):
        pitch_drift(np.zeros(0), 16000)
    with pytest.raises(ValueError, match="non-finite"):
        pitch_drift(np.full(16000, np.nan), 16000)
    with pytest.raises(ValueError, match="model"):
        pitch_drift(np.zeros(16000), 16000, model="medium")
    with pytest.raises(ValueError, match="mono"):
        pitch_drift(np.zeros((2, 16000)), 16000)
