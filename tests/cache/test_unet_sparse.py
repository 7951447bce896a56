"""The conv U-Net backbone and its windowed calls with cached GroupNorm statistics (SIGE-Audio, conv part)."""

import pytest
import torch

from accelerando.cache.unet_sparse import NormStats, receptive_radius, sparse_windows, unet_forward
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
    assert stats.mean[0].shape == (2, 4) and stats.nbytes() < 10_000
    assert "forward" not in vars(unet.norm_out)  # the GroupNorms are restored after the call


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


def test_receptive_radius_bounds_the_reach_of_a_change():
    """With the statistics held fixed, changing one input frame changes no output frame farther than R away."""
    unet = _unet()
    x, t, cond = _inputs(256, b=1)
    r = receptive_radius(unet)
    with torch.no_grad():
        base, stats = unet_forward(unet, x, t, cond, record=True)
        x2 = x.clone()
        x2[:, 128] += 5.0
        moved, _ = unet_forward(unet, x2, t, cond, windows=[(0, 256)], stats=stats)
    changed = (moved - base).abs().amax(dim=(0, 2)) > 1e-12  # [T]
    where = changed.nonzero().flatten()
    assert changed[128] and where.min() >= 128 - r and where.max() <= 128 + r
    assert where.max() - where.min() > r // 2  # the bound is not wildly loose


def test_stale_statistics_are_a_small_approximation_after_an_edit():
    unet = _unet(dtype=torch.float32)
    x, t, cond = _inputs(256, dtype=torch.float32)
    with torch.no_grad():
        _, stats = unet_forward(unet, x, t, cond, record=True)
        x2 = x.clone()
        x2[:, 120:140] = torch.randn(2, 20, D)
        full = unet(x2, t, cond)[:, 120:140]
        sparse = unet_forward(unet, x2, t, cond, windows=[(120, 140)], stats=stats)[0][:, 120:140]
        before = unet(x, t, cond)[:, 120:140]
    err = (sparse - full).norm() / (full - before).norm()
    assert err < 0.2, f"stale-statistics error {err:.3f} of the edit's own change"


def test_windowed_call_needs_matching_statistics():
    unet = _unet()
    x, t, cond = _inputs(64)
    with pytest.raises(ValueError, match="statistics"):
        unet_forward(unet, x, t, cond, windows=[(0, 8)])
    with pytest.raises(ValueError, match="GroupNorms"):
        unet_forward(unet, x, t, cond, windows=[(0, 8)], stats=NormStats([torch.zeros(2, 4)], [torch.ones(2, 4)]))


def test_unet_config_rejects_bad_values():
    with pytest.raises(ValueError, match="kernel=4"):
        MusicUNetConfig(kernel=4)
    with pytest.raises(ValueError, match="channels"):
        MusicUNetConfig(channels=[30], groups=4)
