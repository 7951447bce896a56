"""The built-in audio codec: log-mel analysis, a learned latent at 23.4 Hz, and a Vocos-style iSTFT decoder.

Encoder: log-mel spectrogram (100 bands, hop 256 at 24 kHz) -> ConvNeXt stack -> strided convs (x4 in time)
-> latent [B, D, T] at ``sample_rate / (hop * 4)`` frames per second. Decoder: latent -> transposed convs back to
the mel frame rate -> ConvNeXt stack -> linear head predicting log-magnitude and phase of every STFT bin -> inverse
STFT. The decoder never runs an iterative phase reconstruction, which is why it is fast on a CPU.

Channels are coded independently with shared weights and stacked on the latent axis, so a stereo signal has a
latent of ``2 * latent_dim`` channels. Dims: ``B`` batch, ``C`` channels, ``S`` samples, ``D`` latent channels,
``T`` latent frames, ``F`` STFT bins.
"""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from accelerando.audio.mel import MelSpectrogram
from accelerando.audio.stft import STFT
from accelerando.modules.convnext import ConvNeXtStack

__all__ = ["CodecConfig", "MelCodec"]

CODEC_CONFIG_VERSION = 1


@dataclass
class CodecConfig:
    sample_rate: int = 24000  # Hz
    channels: int = 1  # channels of the audio this codec is used for
    n_fft: int = 1024  # analysis and synthesis FFT size
    hop_length: int = 256  # samples per mel frame
    n_mels: int = 100
    latent: str = "learned"  # "learned": a trained bottleneck; "mel": the log-mel itself is the latent
    latent_dim: int = 64  # D per audio channel (n_mels when latent == "mel")
    time_downsample: int = 4  # mel frames per latent frame (a power of 2)
    enc_dim: int = 256
    enc_layers: int = 4
    dec_dim: int = 256
    dec_layers: int = 8
    version: int = CODEC_CONFIG_VERSION

    def __post_init__(self):
        if self.latent not in ("learned", "mel"):
            raise ValueError(f"latent={self.latent!r}; use 'learned' or 'mel'")
        if self.latent == "mel" and (self.time_downsample != 1 or self.latent_dim != self.n_mels):
            raise ValueError("latent='mel' needs time_downsample=1 and latent_dim=n_mels")
        if self.time_downsample < 1 or self.time_downsample & (self.time_downsample - 1):
            raise ValueError(f"time_downsample={self.time_downsample} must be a power of 2")
        if self.channels not in (1, 2):
            raise ValueError(f"channels={self.channels}; use 1 or 2")
        if self.version != CODEC_CONFIG_VERSION:
            raise ValueError(f"codec config version {self.version} is not supported (expected {CODEC_CONFIG_VERSION})")

    @classmethod
    def tiny(cls) -> "CodecConfig":
        """A random-weight test configuration that runs in milliseconds."""
        return cls(n_mels=32, latent_dim=8, enc_dim=16, enc_layers=1, dec_dim=24, dec_layers=2)

    @classmethod
    def mel_vocoder(cls, **kw) -> "CodecConfig":
        """The log-mel spectrogram as latent (100 x 93.75 Hz) with a trained decoder: a vocoder."""
        n_mels = kw.pop("n_mels", 100)
        return cls(latent="mel", n_mels=n_mels, latent_dim=n_mels, time_downsample=1, **kw)

    def to_dict(self) -> dict:
        return asdict(self)


class MelCodec(nn.Module):
    """Codec contract: ``encode(wav [B,C,S]) -> latent [B,C*D,T]``, ``decode(latent) -> wav [B,C,T*spf]``.

    ``spf`` is ``samples_per_frame`` (hop_length * time_downsample).
    """

    def __init__(self, config: CodecConfig | None = None):
        super().__init__()
        cfg = self.config = config or CodecConfig()
        self.mel = MelSpectrogram(cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels, power=1.0, log=True)
        n_down = int(math.log2(cfg.time_downsample))
        if cfg.latent == "learned":
            self.encoder = ConvNeXtStack(cfg.n_mels, cfg.enc_dim, cfg.enc_layers)
            self.down = nn.Sequential(
                *[
                    nn.Sequential(nn.Conv1d(cfg.enc_dim, cfg.enc_dim, 4, stride=2, padding=1), nn.GELU())
                    for _ in range(n_down)
                ]
            )
            self.to_latent = nn.Conv1d(cfg.enc_dim, cfg.latent_dim, 1)
        self.from_latent = nn.Conv1d(cfg.latent_dim, cfg.dec_dim, 3, padding=1)
        self.up = nn.Sequential(
            *[
                nn.Sequential(nn.GELU(), nn.ConvTranspose1d(cfg.dec_dim, cfg.dec_dim, 4, stride=2, padding=1))
                for _ in range(n_down)
            ]
        )
        self.decoder = ConvNeXtStack(cfg.dec_dim, cfg.dec_dim, cfg.dec_layers)
        self.head = nn.Linear(cfg.dec_dim, cfg.n_fft + 2)
        self.istft = STFT(cfg.n_fft, cfg.hop_length, center=True)

    # -- the Codec contract ------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def samples_per_frame(self) -> int:
        return self.config.hop_length * self.config.time_downsample

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.samples_per_frame

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim * self.config.channels

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav`` [B, C, S] -> latent [B, C*D, T] with ``T = ceil(S / samples_per_frame)`` (zero-padded)."""
        b, c, s = wav.shape
        spf = self.samples_per_frame
        t = max(1, math.ceil(s / spf))
        x = nn.functional.pad(wav.reshape(b * c, s), (0, t * spf - s))  # [B*C, S']
        mel = self.mel(x)[..., :-1]  # [B*C, n_mels, T*down]: drop the centred extra frame
        if self.config.latent == "mel":
            z = mel  # [B*C, n_mels, T]
        else:
            z = self.to_latent(self.down(self.encoder(mel)))  # [B*C, D, T]
        return z.reshape(b, c * z.shape[1], t)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``latent`` [B, C*D, T] -> ``wav`` [B, C, T * samples_per_frame]."""
        b, cd, t = latent.shape
        d = self.config.latent_dim
        if cd % d:
            raise ValueError(f"latent has {cd} channels, not a multiple of latent_dim={d}")
        c = cd // d
        h = self.decoder(self.up(self.from_latent(latent.reshape(b * c, d, t))))  # [B*C, dec_dim, T*down]
        spec = self.head(h.transpose(1, 2)).transpose(1, 2).float()  # [B*C, n_fft+2, T*down]
        log_mag, phase = spec.chunk(2, dim=1)  # [B*C, F, T*down] each
        mag = torch.exp(log_mag).clamp(max=1e2)
        stft = torch.polar(mag, phase)  # complex [B*C, F, T*down]
        wav = self.istft.inverse(stft, length=t * self.samples_per_frame)  # [B*C, S]
        return wav.reshape(b, c, -1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``wav`` [B, C, S] -> [B, C, S]."""
        return self.decode(self.encode(wav))[..., : wav.shape[-1]]
