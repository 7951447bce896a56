"""The built-in generator's weights in one module: the backbone (a MusicDiT, or a MusicUNet when its config is a
:class:`~accelerando.models.unet.MusicUNetConfig`) and the ControlEncoder feeding it. The backbone is the submodule
``dit`` whatever its kind, so weight files and every caller address it the same way.

Latents are normalised per channel with the training data's statistics (buffers saved with the weights) before the
backbone sees them. Dims: ``B`` batch, ``T`` frames, ``D`` latent channels.
"""

import torch
from torch import nn

from accelerando.conditioning.controls import ControlEncoder
from accelerando.models.dit import MusicDiT, MusicDiTConfig
from accelerando.models.unet import MusicUNet, MusicUNetConfig

__all__ = ["MusicGenerator", "backbone_config"]


def backbone_config(config: dict) -> MusicDiTConfig | MusicUNetConfig:
    """The backbone config stored with a generator's weights (a dict) -> its dataclass; DiT when unmarked."""
    config = dict(config)
    if config.get("backbone", "dit") == "unet":
        return MusicUNetConfig(**config)
    config.pop("backbone", None)
    return MusicDiTConfig(**config)


class MusicGenerator(nn.Module):
    def __init__(self, config: MusicDiTConfig | MusicUNetConfig | None = None):
        super().__init__()
        self.config = config or MusicDiTConfig()
        self.dit = MusicUNet(self.config) if isinstance(self.config, MusicUNetConfig) else MusicDiT(self.config)
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
