"""MusicUNet: a 1-D convolutional U-Net over codec latents, the second backbone of the built-in generator.

Same contract as :class:`~accelerando.models.dit.MusicDiT`: ``forward(x [B,T,D], t [B], cond) -> velocity
[B,T,D]`` with the same :class:`~accelerando.models.dit.DiTConditioning` (noisy latent, known latent and mask, beat
and bar phases per frame, pooled text, controls). It exists for SIGE's own setting: every layer is a convolution
over time, so an edit changes only the frames within the network's receptive field of the edited region, and the
only quantities that mix the whole clip are the GroupNorm statistics (which the sparse engine,
``accelerando.cache.unet_sparse``, reuses from a cache). With ``norm="frame"`` each GroupNorm normalises every frame
on its own (over its channel groups, like a LayerNorm per frame), so nothing mixes the clip at all and a windowed
edit is exact with no cache. Text enters through the pooled sentence embedding only
(no cross-attention), alongside the controls and the flow time, as a per-block scale and shift.

Layout: input conv -> ``len(channels)`` levels of ``blocks`` residual blocks, a stride-2 convolution between
levels -> two middle blocks -> the mirrored up path (nearest x2 + conv, concatenated skips) -> GroupNorm, SiLU,
output conv. Frames are padded at the end to a multiple of ``2 ** (levels - 1)``.

Dims: ``B`` batch, ``T`` frames, ``D`` latent channels, ``C`` feature channels, ``W`` conditioning width, ``E``
text embedding.
"""

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.models.dit import DiTConditioning, _timestep_embedding

__all__ = ["MusicUNetConfig", "MusicUNet"]

UNET_CONFIG_VERSION = 1


@dataclass
class MusicUNetConfig:
    latent_dim: int = 100  # D
    channels: list[int] = field(default_factory=lambda: [192, 256, 384])  # C per level
    blocks: int = 2  # residual blocks per level (down path; the up path has one more per level)
    kernel: int = 3  # odd temporal kernel of the residual blocks
    groups: int = 16  # GroupNorm groups
    norm: str = "group"  # "group": statistics over each group and the whole clip; "frame": over each group per frame
    width: int = 256  # W: conditioning vector (flow time + pooled text + controls)
    text_dim: int = 384  # E: all-MiniLM-L6-v2
    phase_features: int = 4
    frame_rate: float = 93.75
    max_seconds: float = 60.0
    phase_guidance: bool = False  # as MusicDiTConfig.phase_guidance
    default_cfg: float = 3.0  # the guidance scale the pipeline uses when none is given (chosen on the valid split)
    # separate guidance for controls and beat grid when none is given (None: plain guidance; see the pipeline)
    default_rhythm_cfg: float | None = None
    # flow times (t_lo, t_hi) at which guidance runs when a call gives none (None: every step; see the pipeline)
    default_guidance_interval: list[float] | None = None
    # beat-grid guidance strength when a call gives none (None: off; see pipelines/grid_guidance.py)
    default_grid_guidance: float | None = None
    # key guidance strength when a call gives none (None: off; see pipelines/key_guidance.py)
    default_key_guidance: float | None = None
    backbone: str = "unet"
    version: int = UNET_CONFIG_VERSION

    def __post_init__(self):
        if self.backbone != "unet":
            raise ValueError(f"backbone={self.backbone!r}: a MusicUNetConfig describes a 'unet'")
        if self.version != UNET_CONFIG_VERSION:
            raise ValueError(
                f"MusicUNet config version {self.version} is not supported (expected {UNET_CONFIG_VERSION})"
            )
        if not self.channels or any(c % self.groups for c in self.channels):
            raise ValueError(f"channels={self.channels} must be non-empty multiples of groups={self.groups}")
        if self.norm not in ("group", "frame"):
            raise ValueError(f"norm={self.norm!r}; use 'group' (clip statistics) or 'frame' (per-frame statistics)")
        if self.kernel < 1 or self.kernel % 2 == 0 or self.blocks < 1:
            raise ValueError(f"kernel={self.kernel} must be odd and blocks={self.blocks} positive")

    @classmethod
    def tiny(cls, latent_dim: int = 8, text_dim: int = 16) -> "MusicUNetConfig":
        return cls(latent_dim=latent_dim, channels=[16, 32], blocks=1, kernel=3, groups=4, width=32, text_dim=text_dim)

    @property
    def stride(self) -> int:
        """Frames per lowest-resolution step: the padding multiple and the alignment of sparse windows."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _channel_sum(xg: torch.Tensor) -> torch.Tensor:
    """``xg`` [B, G, n, T] -> its sum over ``n`` [B, G, 1, T], added in index order.

    Every frame's sum is then the same float whatever the clip length and the frame's position in it. A reduction
    kernel over this strided axis vectorises along ``T`` and rounds some frames differently depending on where they
    fall; one such bit, amplified by guidance over the sampler's steps, made a windowed edit differ from full
    regeneration. Elementwise adds cost about 1.5x the reduction here (measured on the dev CPU), a negligible part
    of a backbone call.
    """
    s = xg[:, :, 0].clone()
    for j in range(1, xg.shape[2]):
        s += xg[:, :, j]
    return s.unsqueeze(2)


class FrameGroupNorm(nn.Module):
    """GroupNorm whose statistics are taken per frame: each frame's channels, in ``num_groups`` groups, are
    normalised to zero mean and unit variance, then scaled and shifted per channel. Parameters as ``nn.GroupNorm``.
    ``x`` [B, C, T] -> [B, C, T]."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups, self.eps = num_groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        xg = x.reshape(b, self.num_groups, c // self.num_groups, t)
        dt = torch.promote_types(x.dtype, torch.float32)  # float32 statistics under bf16 autocast
        # two passes (mean, then centred squares), each summed in channel order by elementwise adds
        xg = xg.to(dt)
        n = xg.shape[2]
        xc = xg - _channel_sum(xg) / n  # [B, G, C/G, T]
        var = _channel_sum(xc.square()) / n  # [B, G, 1, T]
        y = (xc * torch.rsqrt(var + self.eps)).reshape(b, c, t).to(x.dtype)
        return y * self.weight.to(y.dtype)[:, None] + self.bias.to(y.dtype)[:, None]


def _norm(cfg: "MusicUNetConfig", channels: int) -> nn.Module:
    if cfg.norm == "frame":
        return FrameGroupNorm(cfg.groups, channels, eps=1e-5)
    return nn.GroupNorm(cfg.groups, channels, eps=1e-5)


class _ResBlock(nn.Module):
    """GroupNorm, SiLU, conv, per-channel scale and shift from the conditioning, GroupNorm, SiLU, conv; residual."""

    def __init__(self, c_in: int, c_out: int, cfg: MusicUNetConfig):
        super().__init__()
        self.norm1 = _norm(cfg, c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, cfg.kernel, padding=cfg.kernel // 2)
        self.mod = nn.Linear(cfg.width, 2 * c_out)
        self.norm2 = _norm(cfg, c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, cfg.kernel, padding=cfg.kernel // 2)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C_in, T], ``c`` [B, W] -> [B, C_out, T]."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.mod(c).unsqueeze(-1).chunk(2, dim=1)  # [B, C_out, 1] each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class MusicUNet(nn.Module):
    """Backbone contract: ``forward(x [B,T,D], t [B], cond) -> velocity [B,T,D]``."""

    def __init__(self, config: MusicUNetConfig | None = None):
        super().__init__()
        cfg = self.config = config or MusicUNetConfig()
        d, ch = cfg.latent_dim, cfg.channels
        self.in_conv = nn.Conv1d(2 * d + 1 + cfg.phase_features, ch[0], 3, padding=1)
        self.t_embed = nn.Sequential(nn.Linear(256, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.pooled_proj = nn.Linear(cfg.text_dim, cfg.width)
        self.null_text = nn.Parameter(torch.zeros(cfg.width))
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(ch):
            self.down.append(nn.ModuleList(_ResBlock(c, c, cfg) for _ in range(cfg.blocks)))
            if i + 1 < len(ch):
                self.downsample.append(nn.Conv1d(c, ch[i + 1], 4, stride=2, padding=1))
        self.mid = nn.ModuleList(_ResBlock(ch[-1], ch[-1], cfg) for _ in range(2))
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch))):
            self.up.append(
                nn.ModuleList(_ResBlock(2 * ch[i] if k == 0 else ch[i], ch[i], cfg) for k in range(cfg.blocks + 1))
            )
            if i > 0:
                self.upsample.append(nn.Conv1d(ch[i], ch[i - 1], 3, padding=1))
        self.norm_out = _norm(cfg, ch[0])
        self.out_conv = nn.Conv1d(ch[0], d, 3, padding=1)
        self.register_buffer("latent_mean", torch.zeros(d))
        self.register_buffer("latent_std", torch.ones(d))
        for m in self.modules():  # every block starts as the identity, the output at zero
            if isinstance(m, _ResBlock):
                nn.init.zeros_(m.conv2.weight)
                nn.init.zeros_(m.conv2.bias)
                nn.init.zeros_(m.mod.weight)
                nn.init.zeros_(m.mod.bias)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def input_features(self, x: torch.Tensor, cond: DiTConditioning) -> torch.Tensor:
        """``x`` [B, T, D] and the per-frame conditioning -> padded input features [B, 2D+1+P, T_pad]."""
        b, frames, _ = x.shape
        known = cond.known if cond.known is not None else torch.zeros_like(x)
        kmask = cond.known_mask if cond.known_mask is not None else x.new_zeros(b, frames)
        kmask = kmask.to(x.dtype)[..., None]  # [B, T, 1]
        feats = torch.cat([x, known * kmask, kmask, cond.phases.to(x.dtype)], dim=-1)  # [B, T, 2D+1+P]
        return F.pad(feats, (0, 0, 0, (-frames) % self.config.stride)).transpose(1, 2)

    def condition(self, t: torch.Tensor, cond: DiTConditioning, dtype: torch.dtype) -> torch.Tensor:
        """Flow time [B], pooled text (or the null text where ``cond.drop_text``) and controls -> [B, W]."""
        pooled = self.pooled_proj(cond.text_pooled.to(dtype))  # [B, W]
        if cond.drop_text is not None:
            pooled = torch.where(cond.drop_text.bool()[:, None], self.null_text.to(pooled.dtype), pooled)
        return self.t_embed(_timestep_embedding(t).to(dtype)) + pooled + cond.control.to(dtype)

    def features(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The convolutional body: input features [B, 2D+1+P, T_pad], conditioning [B, W] -> [B, D, T_pad]."""
        h = self.in_conv(h)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, c)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for block in self.mid:
            h = block(h, c)
        for j, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, c)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out_conv(F.silu(self.norm_out(h)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: DiTConditioning) -> torch.Tensor:
        """Predict the flow velocity. ``x`` [B, T, D] (normalised latent), ``t`` [B] -> [B, T, D]."""
        h = self.input_features(x, cond)
        out = self.features(h, self.condition(t, cond, h.dtype))  # [B, D, T_pad]
        return out.transpose(1, 2)[:, : x.shape[1]]
