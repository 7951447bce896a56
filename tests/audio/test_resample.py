import numpy as np
import pytest
import torch

from accelerando.audio import resample


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / sr)[spec.argmax()])


def test_sine_48k_to_24k_keeps_frequency_and_duration():
    t = torch.arange(48000, dtype=torch.float32) / 48000
    wav = torch.sin(2 * torch.pi * 1000.0 * t)  # 1 s of 1 kHz
    out = resample(wav, 48000, 24000)
    assert out.shape == (24000,)
    assert out.dtype == torch.float32
    assert _peak_hz(out.numpy(), 24000) == pytest.approx(1000.0, abs=1.0)
    assert out[2000:-2000].abs().max() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_keeps_dtype_and_leading_dims(dtype):
    wav = torch.randn(2, 3, 4410, dtype=dtype)
    out = resample(wav, 44100, 16000)
    assert out.shape == (2, 3, 1600)
    assert out.dtype == dtype


def test_batch_matches_single_rows():
    wav = torch.randn(3, 1000)
    out = resample(wav, 22050, 16000)
    for row_in, row_out in zip(wav, out, strict=True):
        torch.testing.assert_close(resample(row_in, 22050, 16000), row_out)


def test_identity_when_rates_equal():
    wav = torch.randn(2, 100)
    assert resample(wav, 16000, 16000) is wav


@pytest.mark.parametrize("bad", [0, -1, 16000.5, "16000", True])
def test_rejects_bad_rates(bad):
    with pytest.raises(ValueError, match="orig_sr"):
        resample(torch.zeros(10), bad, 16000)
    with pytest.raises(ValueError, match="new_sr"):
        resample(torch.zeros(10), 16000, bad)
