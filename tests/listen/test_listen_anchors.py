import numpy as np
import pytest
import soundfile as sf

from accelerando.errors import UserError
from accelerando.listen.anchors import anchor_dir, ensure_anchors, make_anchor
from accelerando.listen.config import load_config

SR = 32000


def _level_db(x: np.ndarray, freq: float) -> float:
    """Magnitude of the DFT bin at ``freq`` (Hann window) in dB, ignoring the edges."""
    x = x[SR // 8 : -SR // 8]
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(round(freq * len(x) / SR))
    return 20 * np.log10(spec[k - 2 : k + 3].max() + 1e-12)


@pytest.mark.parametrize("cutoff, high", [(3500.0, 5000.0), (7000.0, 9000.0)])
def test_anchors_pass_below_and_cut_above_cutoff(tmp_path, cutoff, high):
    t = np.arange(SR) / SR
    low = 0.4 * np.sin(2 * np.pi * 1000.0 * t)
    x = low + 0.4 * np.sin(2 * np.pi * high * t)
    sf.write(tmp_path / "ref.wav", x, SR, subtype="FLOAT")
    y, sr = sf.read(make_anchor(tmp_path / "ref.wav", cutoff, tmp_path / "anchors"))
    assert sr == SR and len(y) == len(x)
    assert abs(_level_db(y, 1000.0) - _level_db(x, 1000.0)) < 0.2  # passband untouched
    assert _level_db(x, high) - _level_db(y, high) > 60  # stopband tone removed
    assert np.max(np.abs(y - low)[SR // 8 : -SR // 8]) < 0.01  # zero phase: time-aligned with the reference


def test_anchors_are_cached_and_written_atomically(config_path):
    cfg = load_config(config_path)
    made = ensure_anchors(cfg)
    assert set(made) == {(t, a) for t in ("c1", "c2") for a in ("anchor_3.5k", "anchor_7k")}
    assert all(p.parent == anchor_dir(cfg) and p.is_file() for p in made.values())
    mtimes = {k: p.stat().st_mtime_ns for k, p in made.items()}
    again = ensure_anchors(cfg)
    assert again == made and {k: p.stat().st_mtime_ns for k, p in again.items()} == mtimes
    assert not [p for p in anchor_dir(cfg).iterdir() if p.name.startswith(".")]  # no temporary files left
    cfg.anchors = False
    assert ensure_anchors(cfg) == {}


def test_low_sample_rate_reference_fails_with_fix(tmp_path):
    sf.write(tmp_path / "low.wav", np.zeros(8000), 8000, subtype="PCM_16")
    with pytest.raises(UserError, match="too low for a 7000 Hz low-pass anchor.*anchors: false"):
        make_anchor(tmp_path / "low.wav", 7000.0, tmp_path / "anchors")
