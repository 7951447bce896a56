import numpy as np
import pytest

from accelerando.eval.tempo import BCS_VERSION, beat_consistency, estimate_tempo, tempo_adherence

pytest.importorskip("librosa")
pytest.importorskip("mir_eval")
SR = 22050


def _clicks(bpm_first: float, bpm_second: float | None = None, seconds: float = 20.0) -> np.ndarray:
    """A 2 kHz click track [S]; the tempo switches to ``bpm_second`` halfway when given."""
    y = np.zeros(int(seconds * SR))
    click = np.hanning(64) * np.sin(2 * np.pi * 2000 * np.arange(64) / SR)
    t = 0.25
    while t < seconds - 0.5:
        i = int(t * SR)
        y[i : i + 64] += click
        t += 60.0 / (bpm_first if bpm_second is None or t < seconds / 2 else bpm_second)
    return y


def test_tempo_adherence_mirex_rules():
    assert tempo_adherence(120, 120) == {
        "acc1": 1.0,
        "acc2": 1.0,
        "rel_error": 0.0,
        "factor": 1.0,
        "version": "tempo-acc-v3",
    }
    r = tempo_adherence(124.7, 120)  # 3.9 % off: inside the 4 % window
    assert r["acc1"] == 1.0 and r["rel_error"] == pytest.approx(0.0392, abs=1e-4)
    assert tempo_adherence(125.0, 120)["acc1"] == 0.0  # 4.2 % off
    for est, factor in [(240, 2.0), (60, 0.5), (360, 3.0), (40, 1 / 3), (61.5, 0.5)]:
        r = tempo_adherence(est, 120)
        assert r["acc1"] == 0.0 and r["acc2"] == 1.0 and r["factor"] == factor
    r = tempo_adherence(180, 120)  # 3:2 is not an accepted metrical level
    assert r["acc1"] == 0.0 and r["acc2"] == 0.0 and r["rel_error"] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [0, -90, float("nan"), float("inf")])
def test_tempo_adherence_rejects_bad_bpm(bad):
    with pytest.raises(ValueError, match="requested_bpm"):
        tempo_adherence(120, bad)
    with pytest.raises(ValueError, match="estimated_bpm"):
        tempo_adherence(bad, 120)


@pytest.mark.parametrize("bpm", [90, 140])
def test_estimate_tempo_on_click_tracks(bpm):
    assert tempo_adherence(estimate_tempo(_clicks(bpm), SR, start_bpm=bpm * 0.9), bpm)["acc1"] == 1.0


def test_beat_consistency_steady_vs_tempo_change():
    steady = beat_consistency(_clicks(120), SR)
    assert steady["version"] == BCS_VERSION
    assert steady["agreement"] > 0.95 and steady["stability"] > 0.9 and steady["bcs"] > 0.85
    assert steady["bcs"] == pytest.approx(steady["agreement"] * steady["stability"])
    assert tempo_adherence(steady["tempo"], 120)["acc1"] == 1.0
    changed = beat_consistency(_clicks(120, 90), SR)
    assert changed["bcs"] < steady["bcs"] - 0.2
    assert changed["agreement"] < 0.8


def test_beat_consistency_silence_and_bad_input():
    assert beat_consistency(np.zeros(12 * SR), SR)["bcs"] == 0.0
    with pytest.raises(ValueError, match="at least 10 s"):
        beat_consistency(np.zeros(5 * SR), SR)
    with pytest.raises(ValueError, match="empty"):
        estimate_tempo(np.zeros(0), SR)
    y = _clicks(120)
    y[100] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        beat_consistency(y, SR)
    with pytest.raises(ValueError, match="mono"):
        estimate_tempo(np.zeros((2, SR)), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        estimate_tempo(np.zeros(SR), 0)
