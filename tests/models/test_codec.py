import pytest
import torch

from accelerando.models.codec import CodecConfig, MelCodec
from accelerando.models.io import load_state, save_model


@pytest.fixture
def codec():
    torch.manual_seed(0)
    return MelCodec(CodecConfig.tiny()).eval()


@pytest.mark.parametrize("channels", [1, 2])
def test_shapes_follow_the_codec_contract(codec, channels):
    s = 3000  # not a multiple of samples_per_frame
    wav = torch.randn(2, channels, s)
    z = codec.encode(wav)
    t = -(-s // codec.samples_per_frame)
    assert z.shape == (2, channels * codec.config.latent_dim, t)
    y = codec.decode(z)
    assert y.shape == (2, channels, t * codec.samples_per_frame)
    assert codec(wav).shape == wav.shape
    assert codec.frame_rate == codec.sample_rate / codec.samples_per_frame


def test_channels_are_coded_independently(codec):
    a, b = torch.randn(1, 1, 4096), torch.randn(1, 1, 4096)
    z = codec.encode(torch.cat([a, b], dim=1))
    d = codec.config.latent_dim
    assert torch.allclose(z[:, :d], codec.encode(a), atol=1e-5)
    assert torch.allclose(z[:, d:], codec.encode(b), atol=1e-5)


def test_decode_rejects_a_latent_of_the_wrong_width(codec):
    with pytest.raises(ValueError, match="latent_dim"):
        codec.decode(torch.randn(1, codec.config.latent_dim + 1, 4))


def test_save_load_roundtrip_is_exact_and_checks_kind(codec, tmp_path):
    path = save_model(codec, tmp_path / "c.safetensors", "codec", codec.config.to_dict())
    state, cfg = load_state(path, "codec")
    other = MelCodec(CodecConfig(**cfg))
    other.load_state_dict(state)
    wav = torch.randn(1, 1, 2048)
    assert torch.equal(other.encode(wav), codec.encode(wav))
    with pytest.raises(ValueError, match="not 'generator'"):
        load_state(path, "generator")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_state(tmp_path / "junk.safetensors", "codec")


def test_config_validation():
    with pytest.raises(ValueError, match="time_downsample=3"):
        CodecConfig(time_downsample=3)
    with pytest.raises(ValueError, match="version 99"):
        CodecConfig(version=99)
