"""MusicDiT: a flow-matching diffusion transformer over codec latents, with musical time in every token.

Input per latent frame: the noisy latent ``x_t``, the known latent and its mask (masked conditioning: extend,
inpaint, continuation and plain generation are the same operation) and the frame's beat and bar phase. Frames are
grouped ``patch`` at a time into tokens. Each block has self-attention with rotary positions, cross-attention to the
text encoder's tokens, and an MLP, all modulated by one shared adaptive-LayerNorm signal (PixArt's "adaLN-single")
computed from the flow time, the pooled text and the explicit controls (bpm, key, meter, instrumentation).
All attention goes through :func:`accelerando.modules.attention.attention`.

Dims: ``B`` batch, ``T`` latent frames, ``D`` latent channels, ``N`` tokens, ``W`` width, ``L`` text tokens,
``E`` text-encoder width.
"""

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from accelerando.modules.attention import attention
from accelerando.modules.rope import apply_rope, rope_tables

__all__ = ["MusicDiTConfig", "MusicDiT", "DiTConditioning"]

DIT_CONFIG_VERSION = 1


@dataclass
class MusicDiTConfig:
    latent_dim: int = 100  # D: codec latent channels
    patch: int = 4  # latent frames per token
    width: int = 384  # W
    depth: int = 8
    heads: int = 6
    mlp_ratio: float = 4.0
    text_dim: int = 384  # E: all-MiniLM-L6-v2
    phase_features: int = 4  # sin/cos of beat phase and bar phase
    frame_rate: float = 93.75  # latent frames per second (of the codec this model was trained with)
    max_seconds: float = 60.0  # longest clip the model was trained for
    # Trained with the beat grid dropped (phases zeroed) whenever the controls were dropped, so the unconditional
    # classifier-free-guidance branch runs without a grid and guidance also pushes the output onto the beats.
    phase_guidance: bool = False
    default_cfg: float = 3.0  # the guidance scale the pipeline uses when none is given (chosen on the valid split)
    # separate guidance for controls and beat grid when none is given (None: plain guidance; see the pipeline)
    default_rhythm_cfg: float | None = None
    # flow times (t_lo, t_hi) at which guidance runs when a call gives none (None: every step; see the pipeline)
    default_guidance_interval: list[float] | None = None
    # beat-grid guidance strength when a call gives none (None: off; see pipelines/grid_guidance.py)
    default_grid_guidance: float | None = None
    # key guidance strength when a call gives none (None: off; see pipelines/key_guidance.py)
    default_key_guidance: float | None = None
    version: int = DIT_CONFIG_VERSION

    def __post_init__(self):
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width={self.width} must split into {self.heads} heads of even size")
        if self.patch < 1 or self.depth < 1:
            raise ValueError(f"patch={self.patch} and depth={self.depth} must be positive")
        if self.version != DIT_CONFIG_VERSION:
            raise ValueError(f"MusicDiT config version {self.version} is not supported (expected {DIT_CONFIG_VERSION})")

    @classmethod
    def tiny(cls, latent_dim: int = 8, text_dim: int = 16) -> "MusicDiTConfig":
        return cls(latent_dim=latent_dim, patch=2, width=32, depth=2, heads=2, text_dim=text_dim)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DiTConditioning:
    """Everything the backbone is conditioned on, besides the noisy latent and the time."""

    text_tokens: torch.Tensor  # [B, L, E]
    text_mask: torch.Tensor  # [B, L] bool, True for real tokens
    text_pooled: torch.Tensor  # [B, E]
    control: torch.Tensor  # [B, W]: output of a ControlEncoder (accelerando.conditioning)
    phases: torch.Tensor  # [B, T, phase_features]
    known: torch.Tensor | None = None  # [B, T, D]: latent frames to keep (zeros elsewhere)
    known_mask: torch.Tensor | None = None  # [B, T] float/bool: 1 where ``known`` holds real frames
    drop_text: torch.Tensor | None = None  # [B] bool: replace the text by the learned null text (CFG)
    extras: dict = field(default_factory=dict)


def _timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Sinusoidal features of flow time ``t`` [B] in [0, 1] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_dim or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x, context=None, mask=None, rope=None):
        """``x`` [B, N, W], ``context`` [B, M, W'] (self-attention when None), boolean ``mask`` [B, 1, 1, M]."""
        b, n, w = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)  # [B, H, N, Dh]
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # 2 x [B, H, M, Dh]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = attention(q, k, v, mask)  # [B, H, N, Dh]
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class _Block(nn.Module):
    def __init__(self, cfg: MusicDiTConfig):
        super().__init__()
        w = cfg.width
        self.norm1 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(w, cfg.heads)
        self.norm_x = nn.LayerNorm(w, eps=1e-6)
        self.cross = _Attention(w, cfg.heads, kv_dim=w)
        self.norm2 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        hidden = int(w * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(w, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, w))
        self.mod_table = nn.Parameter(torch.randn(6, w) / w**0.5)  # per-block offsets to the shared modulation

    def forward(self, x, mod, text, text_mask, rope):
        """``x`` [B, N, W]; ``mod`` [B, 6, W]; ``text`` [B, L, W]; ``text_mask`` [B, 1, 1, L]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.mod_table[None]).unbind(1)  # 6 x [B, W]
        h = self.norm1(x) * (1 + scale1[:, None]) + shift1[:, None]
        x = x + gate1[:, None] * self.attn(h, rope=rope)
        x = x + self.cross(self.norm_x(x), context=text, mask=text_mask)
        h = self.norm2(x) * (1 + scale2[:, None]) + shift2[:, None]
        return x + gate2[:, None] * self.mlp(h)


class MusicDiT(nn.Module):
    """Backbone contract: ``forward(x [B,T,D], t [B], cond) -> velocity [B,T,D]``."""

    def __init__(self, config: MusicDiTConfig | None = None):
        super().__init__()
        cfg = self.config = config or MusicDiTConfig()
        w, p, d = cfg.width, cfg.patch, cfg.latent_dim
        self.in_proj = nn.Linear(p * (2 * d + 1 + cfg.phase_features), w)
        self.t_embed = nn.Sequential(nn.Linear(256, w), nn.SiLU(), nn.Linear(w, w))
        self.text_proj = nn.Linear(cfg.text_dim, w)
        self.pooled_proj = nn.Linear(cfg.text_dim, w)
        self.null_text = nn.Parameter(torch.zeros(w))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(w, 6 * w))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.out_mod = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.out_proj = nn.Linear(w, p * d)
        # latent normalisation statistics of the training data, saved with the weights
        self.register_buffer("latent_mean", torch.zeros(d))
        self.register_buffer("latent_std", torch.ones(d))
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.adaln[-1], self.out_mod[-1], self.out_proj):  # adaLN-zero: every block starts as identity
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: DiTConditioning) -> torch.Tensor:
        """Predict the flow velocity. ``x`` [B, T, D] (normalised latent), ``t`` [B] -> [B, T, D]."""
        cfg = self.config
        b, frames, d = x.shape
        p = cfg.patch
        pad = (-frames) % p
        known = cond.known if cond.known is not None else torch.zeros_like(x)
        kmask = cond.known_mask if cond.known_mask is not None else x.new_zeros(b, frames)
        kmask = kmask.to(x.dtype)[..., None]  # [B, T, 1]
        feats = torch.cat([x, known * kmask, kmask, cond.phases.to(x.dtype)], dim=-1)  # [B, T, 2D+1+4]
        feats = F.pad(feats, (0, 0, 0, pad))
        n = feats.shape[1] // p
        h = self.in_proj(feats.reshape(b, n, p * feats.shape[-1]))  # [B, N, W]

        text = self.text_proj(cond.text_tokens.to(h.dtype))  # [B, L, W]
        text_mask = cond.text_mask.bool()
        pooled = self.pooled_proj(cond.text_pooled.to(h.dtype))  # [B, W]
        # at inference no ``.any()`` check (it would sync the device and break CUDA-graph capture; ``where`` with an
        # all-False mask changes nothing); in training it keeps ``null_text`` out of the steps that drop no text
        if cond.drop_text is not None and (not torch.is_grad_enabled() or cond.drop_text.any()):
            drop = cond.drop_text.bool()
            text = torch.where(drop[:, None, None], self.null_text.to(h.dtype), text)
            text_mask = torch.where(drop[:, None], torch.ones_like(text_mask), text_mask)
            pooled = torch.where(drop[:, None], torch.zeros_like(pooled), pooled)
        c = self.t_embed(_timestep_embedding(t).to(h.dtype)) + pooled + cond.control.to(h.dtype)  # [B, W]
        mod = self.adaln(c).view(b, 6, -1)  # [B, 6, W]
        rope = rope_tables(n, cfg.width // cfg.heads, device=x.device)
        mask = text_mask[:, None, None, :]  # [B, 1, 1, L]
        for block in self.blocks:
            h = block(h, mod, text, mask, rope)
        shift, scale = self.out_mod(c).chunk(2, dim=-1)  # [B, W] each
        h = self.norm_out(h) * (1 + scale[:, None]) + shift[:, None]
        out = self.out_proj(h).reshape(b, n * p, d)  # [B, T + pad, D]
        return out[:, :frames]
