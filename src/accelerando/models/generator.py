"""The built-in generator's weights in one module: the MusicDiT backbone and the ControlEncoder feeding it.

Latents are normalised per channel with the training data's statistics (buffers saved with the weights) before the
backbone sees them. Dims: ``B`` batch, ``T`` frames, ``D`` latent channels.
"""

import torch
from torch import nn

from accelerando.conditioning.controls import ControlEncoder
from accelerando.models.dit import MusicDiT, MusicDiTConfig

__all__ = ["MusicGenerator"]


class MusicGenerator(nn.Module):
    def __init__(self, config: MusicDiTConfig | None = None):
        super().__init__()
        self.config = config or MusicDiTConfig()
        self.dit = MusicDiT(self.config)
        self.controls = ControlEncoder(dim=self.config.width)

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-channel latent mean and std [D] of the training data."""
        self.dit.latent_mean.copy_(mean)
        self.dit.latent_std.copy_(std)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Codec latent [B, T, D] -> normalised latent [B, T, D]."""
        return (z - self.dit.latent_mean) / self.dit.latent_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised latent [B, T, D] -> codec latent [B, T, D]."""
        return x * self.dit.latent_std + self.dit.latent_mean
