"""Sparse encoding of an edited clip: the spliced latent equals a full encode bit for bit, or the update declines."""

import pytest
import torch

from accelerando.cache.sparse_encode import MIN_FRAMES, changed_samples, encode_frames, encode_update
from accelerando.models.codec import CodecConfig, MelCodec
from accelerando.pretrained import load_codec


@pytest.fixture(scope="module", params=["builtin", "tiny"])
def codec(request):
    if request.param == "builtin":
        return load_codec("builtin")
    torch.manual_seed(0)
    return MelCodec(CodecConfig.mel_vocoder(n_mels=16, dec_dim=16, dec_layers=2)).eval()


def _full(codec, mono):
    with torch.no_grad():
        return codec.encode(mono[None, None])[0].transpose(0, 1)  # [T, D]


@pytest.mark.parametrize("seconds", [1.3, 7.0])
def test_stretches_equal_the_full_encode_bit_for_bit(codec, seconds):
    g = torch.Generator().manual_seed(int(seconds * 10))
    mono = torch.randn(int(seconds * codec.sample_rate), generator=g) * 0.2
    full = _full(codec, mono)
    t = full.shape[0]
    starts = [0, 1, 17, t // 2, max(0, t - MIN_FRAMES)]  # the clip's edges use the reflect padding
    for f0 in starts:
        f1 = min(t, f0 + MIN_FRAMES + f0 % 7)
        assert torch.equal(encode_frames(codec, mono, f0, f1), full[f0:f1]), (f0, f1)


def test_update_splices_only_the_changed_frames(codec):
    g = torch.Generator().manual_seed(3)
    sr = codec.sample_rate
    old = torch.randn(6 * sr, generator=g) * 0.2
    new = old.clone()
    new[int(2.5 * sr) : int(2.9 * sr)] = torch.randn(int(2.9 * sr) - int(2.5 * sr), generator=g) * 0.3
    norm = lambda z: (z - 0.5) / 2.0  # noqa: E731 -- any elementwise normalisation
    old_latent = norm(_full(codec, old))
    latent, n = encode_update(codec, norm, old, new, old_latent)
    assert torch.equal(latent, norm(_full(codec, new)))
    assert MIN_FRAMES <= n < old_latent.shape[0] / 2
    assert changed_samples(old, new) == (int(2.5 * sr), int(2.9 * sr))


def test_update_declines_what_it_cannot_prove(codec):
    sr = codec.sample_rate
    old = torch.randn(3 * sr) * 0.2
    old_latent = _full(codec, old)
    same, n = encode_update(codec, lambda z: z, old, old.clone(), old_latent)
    assert n == 0 and same is old_latent  # nothing changed: nothing encoded
    new = old.clone()
    new[sr : sr + 100] += 0.5
    assert encode_update(codec, lambda z: z, old, torch.cat([new, new[:10]]), old_latent) is None  # length changed
    wrong = old_latent.clone()
    wrong += 1e-3  # the session's latent is not this clip's encode: the margin check fails
    assert encode_update(codec, lambda z: z, old, new, wrong) is None


def test_learned_latent_codecs_are_not_spliced():
    torch.manual_seed(0)
    codec = MelCodec(CodecConfig.tiny()).eval()
    x = torch.randn(codec.sample_rate)
    lat = _full(codec, x)
    assert encode_update(codec, lambda z: z, x, x + 1e-3, lat) is None
