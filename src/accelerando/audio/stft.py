"""Short-time Fourier transform as an ``nn.Module`` around ``torch.stft`` / ``torch.istft``.

Dims: ``S`` samples, ``F`` frequency bins (``n_fft // 2 + 1``), ``T`` frames; ``...`` any leading dims.
"""

import torch
from torch import nn

__all__ = ["STFT", "make_window"]

_WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "rectangular": torch.ones,
}


def make_window(window: str, win_length: int) -> torch.Tensor:
    """Periodic window ``[win_length]`` (float32), the convention of librosa and ``scipy.signal.get_window``.

    ``window`` is one of ``"hann"``, ``"hamming"``, ``"blackman"`` or ``"rectangular"``.
    """
    if window not in _WINDOWS:
        raise ValueError(f"window must be one of {sorted(_WINDOWS)}, got {window!r}")
    if window == "rectangular":
        return torch.ones(win_length)
    return _WINDOWS[window](win_length, periodic=True)


class STFT(nn.Module):
    """Complex STFT and its inverse.

    The window is a non-persistent buffer: it follows ``.to(device)`` but stays out of ``state_dict``. It is cast to
    the input's dtype on each call.

    Args:
        n_fft: FFT size; ``F = n_fft // 2 + 1``.
        hop_length: samples between frames.
        win_length: window size, ``<= n_fft`` (zero-padded to ``n_fft`` on both sides); ``None`` means ``n_fft``.
        window: window name, see :func:`make_window`.
        center: pad ``n_fft // 2`` samples on both ends so frame ``t`` is centred on sample ``t * hop_length``.
        pad_mode: padding used when ``center`` (``torch.stft``'s default ``"reflect"``, or ``"constant"``, which
            librosa >= 0.10 uses; ``"reflect"`` needs ``S > n_fft // 2``).
    """

    def __init__(
        self,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int | None = None,
        window: str = "hann",
        center: bool = True,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        if n_fft <= 0:
            raise ValueError(f"n_fft must be positive, got {n_fft}")
        if hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {hop_length}")
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be in (0, n_fft={n_fft}], got {win_length}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.center = center
        self.pad_mode = pad_mode
        self.register_buffer("window", make_window(window, win_length), persistent=False)

    @property
    def n_freqs(self) -> int:
        """Number of frequency bins ``F``."""
        return self.n_fft // 2 + 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Real audio ``[..., S]`` -> complex spectrogram ``[..., F, T]``.

        With ``center=True``, ``T = S // hop_length + 1``; otherwise ``T = 1 + (S - n_fft) // hop_length``.
        """
        lead, num_samples = wav.shape[:-1], wav.shape[-1]
        spec = torch.stft(
            wav.reshape(-1, num_samples),  # [N, S]
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(wav.dtype),
            center=self.center,
            pad_mode=self.pad_mode,
            return_complex=True,
        )  # [N, F, T]
        return spec.reshape(*lead, *spec.shape[-2:])

    def inverse(self, spec: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Complex spectrogram ``[..., F, T]`` -> real audio ``[..., S]`` by windowed overlap-add.

        Pass the original ``length`` to recover ``S`` exactly; otherwise ``S = (T - 1) * hop_length`` when
        ``center``. The window must satisfy the nonzero overlap-add condition (NOLA); with ``center=False`` a Hann
        window does not, because its first sample is zero.
        """
        lead = spec.shape[:-2]
        wav = torch.istft(
            spec.reshape(-1, *spec.shape[-2:]),  # [N, F, T]
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(spec.real.dtype),
            center=self.center,
            length=length,
        )  # [N, S]
        return wav.reshape(*lead, wav.shape[-1])
