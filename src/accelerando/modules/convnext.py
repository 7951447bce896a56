"""1-D ConvNeXt blocks (as in Vocos): depthwise conv, LayerNorm, pointwise MLP, layer scale, residual.

Dims: ``B`` batch, ``D`` channels, ``T`` frames.
"""

import torch
from torch import nn

__all__ = ["ConvNeXtBlock", "ConvNeXtStack"]


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int = 7, layer_scale: float = 1e-2):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, D, T] -> [B, D, T]."""
        h = self.dwconv(x).transpose(1, 2)  # [B, T, D]
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class ConvNeXtStack(nn.Module):
    """Input projection, ``n_layers`` ConvNeXt blocks and a final LayerNorm: [B, D_in, T] -> [B, D, T]."""

    def __init__(self, in_dim: int, dim: int, n_layers: int, intermediate_dim: int | None = None):
        super().__init__()
        self.embed = nn.Conv1d(in_dim, dim, kernel_size=7, padding=3)
        self.norm_in = nn.LayerNorm(dim, eps=1e-6)
        inter = intermediate_dim or 3 * dim
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, inter, layer_scale=1.0 / n_layers) for _ in range(n_layers))
        self.norm_out = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_in(self.embed(x).transpose(1, 2)).transpose(1, 2)  # [B, D, T]
        for block in self.blocks:
            h = block(h)
        return self.norm_out(h.transpose(1, 2)).transpose(1, 2)
