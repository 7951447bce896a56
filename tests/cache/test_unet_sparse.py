"""The conv U-Net backbone and its windowed calls with cached GroupNorm statistics (SIGE-Audio, conv part)."""

import pytest
import torch

from accelerando.cache.unet_sparse import (
    NormStats,
    chunk_frames,
    norm_radii,
    receptive_radius,
    sparse_windows,
    unet_forward,
)
from accelerando.models.dit import DiTConditioning
from accelerando.models.unet import MusicUNet, MusicUNetConfig

D, E = 8, 16


def _unet(seed: int = 0, dtype=torch.float64) -> MusicUNet:
    torch.manual_seed(seed)
    cfg = MusicUNetConfig(latent_dim=D, channels=[16, 32, 32], blocks=1, kernel=3, groups=4, width=32, text_dim=E)
    unet = MusicUNet(cfg)
    for p in unet.parameters():  # zero-initialised output layers would hide any error
        p.data.add_(0.2 * torch.randn_like(p))
    return unet.to(dtype).eval()


def _inputs(frames: int, b: int = 2, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, frames, D, generator=g, dtype=dtype)
    known_mask = (torch.rand(b, frames, generator=g) < 0.5).to(dtype)
    cond = DiTConditioning(
        text_tokens=torch.zeros(b, 1, E, dtype=dtype),
        text_mask=torch.ones(b, 1, dtype=torch.bool),
        text_pooled=torch.randn(b, E, generator=g, dtype=dtype),
        control=torch.randn(b, 32, generator=g, dtype=dtype),
        phases=torch.randn(b, frames, 4, generator=g, dtype=dtype),
        known=torch.randn(b, frames, D, generator=g, dtype=dtype),
        known_mask=known_mask,
        drop_text=torch.tensor([False, True][:b]),
    )
    return x, torch.rand(b, generator=g, dtype=dtype), cond


@pytest.mark.parametrize("frames", [64, 61])
def test_forward_shapes_and_recording_changes_nothing(frames):
    unet = _unet()
    x, t, cond = _inputs(frames)
    with torch.no_grad():
        v = unet(x, t, cond)
        v_rec, stats = unet_forward(unet, x, t, cond, record=True)
    assert v.shape == (2, frames, D) and torch.isfinite(v).all()
    assert torch.equal(v, v_rec)
    assert len(stats.mean) == sum(isinstance(m, torch.nn.GroupNorm) for m in unet.modules())
    k = -(-(frames + (-frames) % 4) // chunk_frames(unet))
    assert stats.mean[0].shape == (2, 4, k) and all(c.sum() == frames + (-frames) % 4 for c in stats.count)
    assert "forward" not in vars(unet.norm_out)  # the GroupNorms are restored after the call
    # the chunks combine into the clip's statistics
    h = unet.input_features(x, cond)
    out = unet.in_conv(h)  # the input of the first GroupNorm
    var, mean = torch.var_mean(out.reshape(2, 4, -1), dim=-1, correction=0)
    m, rstd = stats.totals(0, 16 // 4, 1, 1e-5)
    torch.testing.assert_close(m, mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rstd, torch.rsqrt(var + 1e-5), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "ranges", [[(100, 120)], [(0, 10)], [(190, 203)], [(30, 40), (150, 170)], [(50, 60), (70, 80)]]
)
def test_windowed_call_equals_the_full_call_on_the_edited_frames(ranges):
    unet = _unet()
    x, t, cond = _inputs(203)
    with torch.no_grad():
        full, stats = unet_forward(unet, x, t, cond, record=True)
        sparse, _ = unet_forward(unet, x, t, cond, windows=ranges, stats=stats)
    inside = torch.zeros(203, dtype=torch.bool)
    for a, b in ranges:
        inside[a:b] = True
    torch.testing.assert_close(sparse[:, inside], full[:, inside], rtol=1e-10, atol=1e-10)
    assert torch.count_nonzero(sparse[:, ~inside]) == 0


def test_windows_are_stride_aligned_merged_and_smaller_than_the_clip():
    unet = _unet()
    r, stride = receptive_radius(unet), unet.config.stride
    ((a, b, w0, w1),) = sparse_windows(unet, 1000, [(500, 520)])
    assert (a, b) == (500, 520) and w0 % stride == 0 and w1 % stride == 0
    assert w0 <= 500 - r and w1 >= 520 + r and w1 - w0 < 20 + 2 * r + 2 * stride
    assert len(sparse_windows(unet, 1000, [(100, 110), (112, 130)])) == 1
    assert len(sparse_windows(unet, 1000, [(100, 110), (800, 830)])) == 2
    with pytest.raises(ValueError, match=r"\[990, 1010\)"):
        sparse_windows(unet, 1000, [(990, 1010)])


def test_radii_bound_the_reach_of_a_change():
    """With the GroupNorms switched off, changing one input frame changes no frame of any GroupNorm's input (or of
    the output) farther away than that GroupNorm's radius (the receptive radius)."""
    unet = _unet()
    x, t, cond = _inputs(256, b=1)
    radii, r = norm_radii(unet), receptive_radius(unet)
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    seen: dict[int, list[torch.Tensor]] = {}
    hooks = [
        n.register_forward_pre_hook(lambda m, a, k=k: seen.setdefault(k, []).append(a[0])) for k, n in enumerate(norms)
    ]
    for n in norms:
        n.forward = lambda h: h  # identity: no clip-wide statistics, only convolutions
    x2 = x.clone()
    x2[:, 128] += 5.0
    with torch.no_grad():
        base, moved = unet(x, t, cond), unet(x2, t, cond)
    for n in norms:
        del n.forward
    for h in hooks:
        h.remove()
    assert len(seen) == len(radii)
    for k, (a, b) in seen.items():
        scale = 256 // a.shape[-1]
        p = ((b - a).abs().amax(dim=(0, 1)) > 1e-12).nonzero().flatten()  # changed frames at this resolution
        assert len(p) and (p * scale - radii[k] <= 128).all() and ((p + 1) * scale - 1 + radii[k] >= 128).all(), k
    changed = ((moved - base).abs().amax(dim=(0, 2)) > 1e-12).nonzero().flatten()
    assert changed.min() >= 128 - r and changed.max() <= 128 + r
    assert changed.max() - changed.min() > r  # the bound is not wildly loose


def test_live_statistics_track_an_edit():
    """Replacing the chunks a window computes exactly keeps the windowed call close to the full one after an edit;
    normalising with the recorded statistics as they are (SIGE's plain reuse) is further off."""
    unet = _unet(dtype=torch.float32)
    x, t, cond = _inputs(512, dtype=torch.float32)
    with torch.no_grad():
        _, stats = unet_forward(unet, x, t, cond, record=True)
        x2 = x.clone()
        x2[:, 192:256] = torch.randn(2, 64, D, generator=torch.Generator().manual_seed(5))
        full, before = unet(x2, t, cond)[:, 192:256], unet(x, t, cond)[:, 192:256]
        live, merged = unet_forward(unet, x2, t, cond, windows=[(192, 256)], stats=stats, record=True)
        stale, _ = unet_forward(unet, x2, t, cond, windows=[(192, 256)], stats=stats, live_stats=False)
    err = (live[:, 192:256] - full).norm() / (full - before).norm()
    err_stale = (stale[:, 192:256] - full).norm() / (full - before).norm()
    assert err < 0.03 and err < err_stale / 2, f"live {err:.4f}, stale {err_stale:.4f}"
    # a windowed recording replaces the chunks it computes exactly and keeps the others
    _, fresh = unet_forward(unet, x2, t, cond, record=True)
    c = chunk_frames(unet)
    k0, k1 = 192 // c, 256 // c  # exact at every GroupNorm: the edited frames themselves
    for old, new, ref in zip(stats.mean, merged.mean, fresh.mean, strict=True):
        moved = (new[..., k0:k1] - ref[..., k0:k1]).norm() / (old[..., k0:k1] - ref[..., k0:k1]).norm()
        assert moved < 0.2  # most of the way from the recorded clip's chunk statistics to the edited clip's
        assert torch.equal(new[..., :1], old[..., :1]) and torch.equal(new[..., -1:], old[..., -1:])


def test_windowed_call_needs_matching_statistics():
    unet = _unet()
    x, t, cond = _inputs(64)
    with pytest.raises(ValueError, match="statistics"):
        unet_forward(unet, x, t, cond, windows=[(0, 8)])
    with pytest.raises(ValueError, match="GroupNorms"):
        one = NormStats([torch.zeros(2, 4, 2)], [torch.ones(2, 4, 2)], [torch.tensor([32, 32])], 32)
        unet_forward(unet, x, t, cond, windows=[(0, 8)], stats=one)


def test_extend_past_the_recorded_chunks():
    """Statistics recorded on the first 200 frames, then a window over the extension to 300: every GroupNorm keeps
    counts that match its own chunks (deeper ones replace fewer), and the first GroupNorm's combined statistics are
    the full call's."""
    unet = _unet()
    x, t, cond = _inputs(300)
    cut = {
        k: (v[:, :200] if torch.is_tensor(v) and v.dim() > 1 and v.shape[1] == 300 else v)
        for k, v in vars(cond).items()
    }
    with torch.no_grad():
        _, stats = unet_forward(unet, x[:, :200], t, DiTConditioning(**cut), record=True)
        v, merged = unet_forward(unet, x, t, cond, windows=[(200, 300)], stats=stats, record=True)
    c, k = chunk_frames(unet), -(-300 // chunk_frames(unet))
    assert torch.isfinite(v).all() and all(n.shape == (k,) for n in merged.count)
    assert merged.count[0].sum() == 300  # the shallowest GroupNorm replaced the whole extension
    fresh = torch.clamp(300 - c * torch.arange(k), max=c)
    for old, new in zip(stats.count, merged.count, strict=True):  # each chunk: recomputed whole, or as recorded
        old = torch.nn.functional.pad(old, (0, k - old.shape[0]))
        assert ((new == fresh) | (new == old)).all()
    # the old clip's short tail chunk: recomputed whole near the input, kept (8 frames) by the deepest GroupNorms
    assert merged.count[0][6] == c and merged.count[-1][6] == 8
    with torch.no_grad():
        h = unet.in_conv(unet.input_features(x, cond))  # the first GroupNorm's input on the whole new clip
    var, mean = torch.var_mean(h.reshape(2, 4, -1), dim=-1, correction=0)
    m, rstd = merged.totals(0, 16 // 4, 1, 1e-5)
    torch.testing.assert_close(m, mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(rstd, torch.rsqrt(var + 1e-5), rtol=1e-9, atol=1e-9)


def test_unet_config_rejects_bad_values():
    with pytest.raises(ValueError, match="kernel=4"):
        MusicUNetConfig(kernel=4)
    with pytest.raises(ValueError, match="channels"):
        MusicUNetConfig(channels=[30], groups=4)


def test_frame_norm_unet_windows_are_exact_without_statistics():
    """With per-frame normalisation nothing mixes the clip: a window equals the full call even after an edit."""
    torch.manual_seed(0)
    cfg = MusicUNetConfig(
        latent_dim=D, channels=[16, 32, 32], blocks=1, kernel=3, groups=4, width=32, text_dim=E, norm="frame"
    )
    unet = MusicUNet(cfg)
    for p in unet.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    unet = unet.double().eval()
    x, t, cond = _inputs(203)
    x2 = x.clone()
    x2[:, 90:130] = torch.randn(2, 40, D, dtype=x.dtype)
    with torch.no_grad():
        full = unet(x2, t, cond)
        sparse, rec = unet_forward(unet, x2, t, cond, windows=[(90, 130), (180, 203)])
        assert unet_forward(unet, x2, t, cond, record=True)[1] is None  # nothing to record
    torch.testing.assert_close(sparse[:, 90:130], full[:, 90:130], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sparse[:, 180:], full[:, 180:], rtol=1e-10, atol=1e-10)
    assert rec is None and torch.count_nonzero(sparse[:, :90]) == 0
    # the norm is per frame: one frame's output does not depend on another frame's scale
    from accelerando.models.unet import FrameGroupNorm

    fn = FrameGroupNorm(2, 4).double()
    y = torch.randn(1, 4, 6, dtype=torch.float64)
    z = y.clone()
    z[..., 3:] *= 100
    torch.testing.assert_close(fn(y)[..., :3], fn(z)[..., :3])
    ref = (y.reshape(1, 2, 2, 6) - y.reshape(1, 2, 2, 6).mean(2, keepdim=True)) / (
        y.reshape(1, 2, 2, 6).var(2, keepdim=True, correction=0) + 1e-5
    ).sqrt()
    torch.testing.assert_close(fn(y), ref.reshape(1, 4, 6))
    assert set(unet.state_dict()) == set(MusicUNet(MusicUNetConfig(**{**cfg.to_dict(), "norm": "group"})).state_dict())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_frame_norm_is_bit_identical_on_any_window(dtype):
    """Each frame's statistics are summed in the same order whatever the clip length and the frame's position, so a
    window of frames normalises exactly as the same frames inside the whole clip (a reduction kernel over the
    channel axis rounded some frames differently, and guidance amplified that bit into an audible difference)."""
    from accelerando.models.unet import FrameGroupNorm

    fn = FrameGroupNorm(16, 384)
    with torch.no_grad():
        fn.weight.normal_()
        fn.bias.normal_()
    x = (torch.randn(3, 384, 1407, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    with torch.no_grad():
        full = fn(x)
        for w0 in range(0, 1200, 37):
            for n in (100, 216, 301):
                assert torch.equal(fn(x[..., w0 : w0 + n]), full[..., w0 : w0 + n]), (w0, n)
