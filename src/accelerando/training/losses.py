"""Spectral reconstruction losses for training the codec.

Dims: ``B`` batch, ``S`` samples, ``F`` bins, ``T`` frames.
"""

import torch
from torch import nn

from accelerando.audio.mel import MelSpectrogram
from accelerando.audio.stft import STFT

__all__ = ["MultiResolutionSTFTLoss", "MelLoss"]


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence + L1 of log magnitudes (Yamamoto et al., Parallel WaveGAN)."""

    def __init__(
        self,
        fft_sizes: tuple[int, ...] = (512, 1024, 2048),
        hop_sizes: tuple[int, ...] = (128, 256, 512),
        eps: float = 1e-5,
    ):
        super().__init__()
        self.stfts = nn.ModuleList(STFT(n, h) for n, h in zip(fft_sizes, hop_sizes, strict=True))
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target`` [B, S] -> scalar loss."""
        total = pred.new_zeros(())
        for stft in self.stfts:
            p = stft(pred).abs().clamp(min=self.eps)  # [B, F, T]
            t = stft(target).abs().clamp(min=self.eps)
            sc = torch.linalg.norm(t - p, dim=(-2, -1)) / torch.linalg.norm(t, dim=(-2, -1)).clamp(min=self.eps)
            total = total + sc.mean() + (p.log() - t.log()).abs().mean()
        return total / len(self.stfts)


class MelLoss(nn.Module):
    """L1 distance between natural-log mel spectrograms."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 100):
        super().__init__()
        self.mel = MelSpectrogram(sample_rate, n_fft, hop_length, n_mels, power=1.0, log=True)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target`` [B, S] -> scalar loss."""
        return (self.mel(pred) - self.mel(target)).abs().mean()
