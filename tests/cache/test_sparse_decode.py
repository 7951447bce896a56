import pytest
import torch

from accelerando.cache.sparse_decode import decode_edit, decoder_radius
from accelerando.models.codec import CodecConfig, MelCodec
from accelerando.testing.models import tiny_codec


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    c = MelCodec(CodecConfig.mel_vocoder(n_mels=16, dec_dim=16, dec_layers=3)).eval()
    for p in c.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return c


@pytest.mark.parametrize("edit", [(40, 50), (0, 5), (95, 100), (60, 61), (0, 100)])
def test_sparse_decode_equals_full_decode_in_float64(codec, edit):
    c = codec.double()
    z = torch.randn(2, 16, 100, dtype=torch.float64)
    with torch.inference_mode():
        before = c.decode(z)
        z2 = z.clone()
        z2[..., edit[0] : edit[1]] += torch.randn_like(z2[..., edit[0] : edit[1]])
        full = c.decode(z2)
    res = decode_edit(c, z2, before, *edit)
    assert torch.equal(res.audio, full) or (res.audio - full).abs().max() < 1e-12
    s0, s1 = res.sample_range
    changed = ((full - before).abs() > 0).nonzero()[:, -1]
    assert s0 <= changed.min() and changed.max() < s1  # everything that changed was recomputed
    assert torch.equal(res.audio[..., :s0], before[..., :s0]) and torch.equal(res.audio[..., s1:], before[..., s1:])
    codec.float()


def test_float32_within_rounding_and_work_is_local(codec):
    z = torch.randn(1, 16, 400)
    with torch.inference_mode():
        before = codec.decode(z)
        z2 = z.clone()
        z2[..., 200:210] = 0
        full = codec.decode(z2)
    res = decode_edit(codec, z2, before, 200, 210)
    assert ((res.audio - full).norm() / full.norm()) < 1e-5
    r = decoder_radius(codec)
    assert r == 1 + 3 + 3 * 3  # from_latent k3, embed k7, three depthwise k7 blocks
    assert res.frames_decoded <= 10 + 4 * r + 2 * (codec.istft.n_fft // codec.istft.hop_length) + 2
    assert res.fraction < 0.3


def test_bad_arguments_and_unsupported_codec(codec):
    z = torch.randn(1, 16, 50)
    with torch.inference_mode():
        before = codec.decode(z)
    with pytest.raises(ValueError, match=r"edit frames \[40, 60\)"):
        decode_edit(codec, z, before, 40, 60)
    with pytest.raises(ValueError, match="cached_audio has"):
        decode_edit(codec, z, before[..., :-1], 0, 5)
    with pytest.raises(NotImplementedError, match="latent='mel'"):
        decoder_radius(tiny_codec())
