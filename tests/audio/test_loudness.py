import math

import pytest
import torch

from accelerando.audio import loudness, normalize_loudness, peak_normalize

SR = 24000


def _sine(seconds: float = 2.0, amp: float = 0.5, hz: float = 1000.0, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float32) / SR
    return (amp * torch.sin(2 * torch.pi * hz * t)).repeat(channels, 1)  # [C, S]


def test_doubling_amplitude_adds_6_02_db():
    quiet = loudness(_sine(amp=0.25), SR)
    loud = loudness(_sine(amp=0.5), SR)
    assert loud - quiet == pytest.approx(20 * math.log10(2), abs=0.05)


def test_mono_1d_equals_one_channel():
    wav = _sine()
    assert loudness(wav[0], SR) == pytest.approx(loudness(wav, SR))


@pytest.mark.parametrize("target", [-14.0, -20.0, -30.0])
def test_normalize_hits_target(target):
    wav = _sine(amp=0.05, channels=2)
    out, gain = normalize_loudness(wav, SR, target_lufs=target, peak_limit=None)
    assert loudness(out, SR) == pytest.approx(target, abs=0.1)
    torch.testing.assert_close(out, wav * gain)


def test_normalize_respects_peak_limit():
    wav = _sine(amp=0.05)
    out, gain = normalize_loudness(wav, SR, target_lufs=0.0, peak_limit=0.5)
    assert out.abs().max() <= 0.5 + 1e-6
    assert loudness(out, SR) < 0.0
    assert gain == pytest.approx(0.5 / 0.05, rel=1e-3)


def test_silence_is_minus_inf_and_left_unchanged():
    wav = torch.zeros(1, SR)
    assert loudness(wav, SR) == -math.inf
    out, gain = normalize_loudness(wav, SR)
    assert gain == 1.0 and torch.equal(out, wav)


def test_short_clip_uses_single_block_estimate():
    short = _sine(seconds=0.2)
    value = loudness(short, SR)
    assert math.isfinite(value)
    # a steady sine measures about the same over 0.2 s as over 2 s
    assert value == pytest.approx(loudness(_sine(seconds=2.0), SR), abs=0.5)
    out, _ = normalize_loudness(short, SR, target_lufs=-23.0, peak_limit=None)
    assert loudness(out, SR) == pytest.approx(-23.0, abs=0.1)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="no samples"):
        loudness(torch.zeros(1, 0), SR)
    with pytest.raises(ValueError, match="5 channels"):
        loudness(torch.zeros(6, SR), SR)


def test_peak_normalize():
    wav = _sine(amp=0.3, channels=2)
    out, gain = peak_normalize(wav, peak=0.9)
    assert out.abs().max().item() == pytest.approx(0.9, rel=1e-6)
    assert gain == pytest.approx(3.0, rel=1e-4)
    silent, gain = peak_normalize(torch.zeros(2, 10))
    assert gain == 1.0 and not silent.any()
