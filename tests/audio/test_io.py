import numpy as np
import pytest
import soundfile as sf
import torch

from accelerando.audio import load, save
from accelerando.errors import UserError

SR = 16000


def _noise(channels: int, samples: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, samples, generator=g) * 1.6 - 0.8).float()  # [C, S] in [-0.8, 0.8]


@pytest.mark.parametrize("ext", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
def test_roundtrip_pcm16(tmp_path, ext, channels):
    wav = _noise(channels)
    path = save(tmp_path / f"a.{ext}", wav, SR)
    assert sf.info(path).subtype == "PCM_16"
    out, sr = load(path)
    assert sr == SR
    assert out.dtype == torch.float32
    assert out.shape == (channels, wav.shape[1])
    assert (out - wav).abs().max() < 1.01 / 32768


def test_float_subtype_is_exact(tmp_path):
    wav = _noise(2)
    out, _ = load(save(tmp_path / "a.wav", wav, SR, subtype="FLOAT"))
    torch.testing.assert_close(out, wav, rtol=0, atol=0)


def test_save_accepts_1d_and_numpy_and_makes_dirs(tmp_path):
    wav = _noise(1)[0]
    path = tmp_path / "x" / "y" / "mono.wav"
    save(path, wav.numpy(), SR)
    out, _ = load(path)
    assert out.shape == (1, wav.shape[0])
    assert [p.name for p in path.parent.iterdir()] == ["mono.wav"]  # no temp file left behind


def test_save_failure_leaves_no_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save(tmp_path / "a.wav", _noise(1), SR)
    assert list(tmp_path.iterdir()) == []


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "a.flac"
    save(path, _noise(1, seed=1), SR)
    save(path, _noise(2, seed=2), SR)
    assert load(path)[0].shape[0] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["a.flac"]


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="extension"):
        save(tmp_path / "a.xyz", _noise(1), SR)
    with pytest.raises(ValueError, match="subtype"):
        save(tmp_path / "a.flac", _noise(1), SR, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"\[S, C\]"):
        save(tmp_path / "a.wav", _noise(1).T, SR)
    with pytest.raises(ValueError, match="sample_rate"):
        save(tmp_path / "a.wav", _noise(1), 0)


def test_load_mono(tmp_path):
    wav = _noise(2)
    out, _ = load(save(tmp_path / "s.wav", wav, SR, subtype="FLOAT"), mono=True)
    assert out.shape == (1, wav.shape[1])
    torch.testing.assert_close(out, wav.mean(0, keepdim=True))


def test_load_resamples(tmp_path):
    wav = _noise(2, samples=48000)
    out, sr = load(save(tmp_path / "a.wav", wav, 48000), sample_rate=24000)
    assert sr == 24000
    assert out.shape == (2, 24000)


def test_load_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(UserError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_load_unreadable_file_names_path(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(UserError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
