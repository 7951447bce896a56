"""Write a log-mel spectrogram picture of a clip as PNG (matplotlib, Agg backend; no display needed).

Optionally marks requested beat times as thin vertical lines, so tempo adherence can be checked by eye.
"""

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_spectrogram_png"]


def save_spectrogram_png(
    path: str | os.PathLike,
    wav: torch.Tensor,
    sample_rate: int,
    title: str = "",
    beats: np.ndarray | None = None,
    n_mels: int = 128,
) -> Path:
    """Render ``wav`` ``[C, S]`` or ``[S]`` (mixed to mono) as a dB log-mel spectrogram and write it atomically.

    Args:
        path: destination ``.png``.
        wav: audio in ``[-1, 1]``.
        sample_rate: Hz.
        title: figure title.
        beats: optional beat times in seconds, drawn as vertical lines at the top of the plot.
        n_mels: mel bands.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from accelerando.audio.mel import MelSpectrogram

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"spectrogram path must end in .png, got {path}")
    x = torch.as_tensor(wav, dtype=torch.float32)
    if x.dim() == 2:
        x = x.mean(0)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"wav must be [C, S] or [S] with samples, got shape {tuple(torch.as_tensor(wav).shape)}")
    hop = 256
    mel = MelSpectrogram(sample_rate=sample_rate, n_fft=1024, hop_length=hop, n_mels=n_mels, power=2.0, log=False)
    with torch.no_grad():
        s = mel(x[None])[0].numpy()
    db = 10 * np.log10(np.maximum(s, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    seconds = x.numel() / sample_rate
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, n_mels))
    if beats is not None:
        for b in np.asarray(beats, dtype=float):
            if 0 <= b <= seconds:
                ax.axvline(b, ymin=0.93, ymax=1.0, color="white", linewidth=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="dB", pad=0.01)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
