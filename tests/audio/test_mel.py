import numpy as np
import pytest
import torch

from accelerando.audio import MelSpectrogram, mel_filterbank

librosa = pytest.importorskip("librosa")

CONFIGS = [
    dict(sample_rate=24000, n_fft=1024, n_mels=100),
    dict(sample_rate=22050, n_fft=1024, n_mels=80, f_min=0.0, f_max=8000.0),
    dict(sample_rate=16000, n_fft=512, n_mels=64, f_min=50.0, f_max=7600.0),
    dict(sample_rate=44100, n_fft=2048, n_mels=128, f_min=20.0),
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize(("norm", "htk"), [("slaney", False), ("slaney", True), (None, False), (None, True)])
def test_filterbank_matches_librosa(cfg, norm, htk):
    ours = mel_filterbank(**cfg, norm=norm, htk=htk)
    ref = librosa.filters.mel(
        sr=cfg["sample_rate"],
        n_fft=cfg["n_fft"],
        n_mels=cfg["n_mels"],
        fmin=cfg.get("f_min", 0.0),
        fmax=cfg.get("f_max"),
        norm=norm,
        htk=htk,
        dtype=np.float64,
    )
    assert ours.shape == (cfg["n_mels"], cfg["n_fft"] // 2 + 1)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5, rtol=0)


def test_filterbank_warns_on_empty_bands():
    with pytest.warns(UserWarning, match="empty"):
        mel_filterbank(16000, 64, 128)


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("htk", [False, True])
def test_melspectrogram_matches_librosa(power, htk):
    sr, n_fft, hop, n_mels = 22050, 1024, 256, 80
    rng = np.random.default_rng(0)
    wav = rng.uniform(-0.5, 0.5, size=(2, 11025))  # [C, S], float64
    mel = MelSpectrogram(sr, n_fft, hop, n_mels, power=power, log=False, htk=htk)
    ours = mel(torch.from_numpy(wav).float()).numpy()
    ref = librosa.feature.melspectrogram(
        y=wav, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=power, center=True, pad_mode="reflect", htk=htk
    )
    assert ours.shape == ref.shape == (2, n_mels, 11025 // hop + 1)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-5
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())


def test_log_mel_shape_and_floor():
    mel = MelSpectrogram()  # 24 kHz, 100 mels, hop 256
    out = mel(torch.zeros(3, 24000))
    assert out.shape == (3, 100, 24000 // 256 + 1)
    torch.testing.assert_close(out, torch.full_like(out, float(np.log(1e-5))))
    assert mel.state_dict() == {}
