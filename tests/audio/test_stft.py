import pytest
import torch

from accelerando.audio import STFT


@pytest.mark.parametrize(
    ("n_fft", "hop", "win"), [(1024, 256, None), (512, 128, None), (256, 64, 200), (400, 100, None), (64, 16, None)]
)
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_exact_inversion(n_fft, hop, win, lead):
    g = torch.Generator().manual_seed(0)
    wav = torch.rand(*lead, 5000, generator=g) * 2 - 1  # [..., S]
    stft = STFT(n_fft=n_fft, hop_length=hop, win_length=win)
    spec = stft(wav)
    assert spec.is_complex()
    assert spec.shape == (*lead, n_fft // 2 + 1, 5000 // hop + 1)
    out = stft.inverse(spec, length=wav.shape[-1])
    assert out.shape == wav.shape and out.dtype == wav.dtype
    assert (out - wav).abs().max() < 1e-5


def test_matches_torch_stft_and_keeps_state_dict_empty():
    wav = torch.randn(2, 3000)
    stft = STFT(n_fft=512, hop_length=128)
    ref = torch.stft(wav, 512, 128, window=torch.hann_window(512), return_complex=True)
    torch.testing.assert_close(stft(wav), ref)
    assert stft.state_dict() == {}
    assert stft.double()(wav.double()).dtype == torch.complex128


def test_rejects_bad_args():
    with pytest.raises(ValueError, match="win_length"):
        STFT(n_fft=256, win_length=512)
    with pytest.raises(ValueError, match="window"):
        STFT(window="kaiser")
