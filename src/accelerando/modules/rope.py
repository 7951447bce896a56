"""Rotary position embedding (RoPE) over one time axis. Dims: ``B`` batch, ``H`` heads, ``N`` tokens, ``D`` head dim."""

import torch

__all__ = ["rope_tables", "apply_rope"]


def rope_tables(
    n: int, dim: int, base: float = 10000.0, device=None, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [N, D/2] for positions ``offset .. offset + n - 1``."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))  # [D/2]
    pos = torch.arange(offset, offset + n, device=device, dtype=torch.float32)  # [N]
    ang = pos[:, None] * inv[None]  # [N, D/2]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of ``x`` [B, H, N, D] by the angles of the tables [N, D/2]."""
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]  # [B, H, N, D/2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # [B, H, N, D/2, 2]
    return out.flatten(-2).to(x.dtype)
