"""A tiny synthetic latent pack for generator-training tests (the layout of :mod:`accelerando.training.latent_pack`)."""

import torch
from safetensors.torch import save_file

__all__ = ["write_latent_pack"]


def write_latent_pack(path, n: int = 4, frames: int = 200, d: int = 8, e: int = 16) -> None:
    """Write a synthetic latent pack with the real layout to ``path``: ``n`` clips of ``frames`` frames of ``d``
    channels, a pulse every 25 frames (4 beats a bar at 120 bpm, 50 frames/s), text embeddings of width ``e``."""
    g = torch.Generator().manual_seed(0)
    lat = torch.full((n * frames, d), 60, dtype=torch.uint8)
    lat[::25] = 200
    beats = [[i * 0.5 for i in range(frames // 25)] for _ in range(n)]
    flat = torch.tensor([b for bs in beats for b in bs])
    offs = torch.tensor([0] + [len(bs) * (k + 1) for k, bs in enumerate(beats)])
    down = torch.tensor([b for bs in beats for b in bs[::4]])
    doffs = torch.tensor([0] + [len(bs[::4]) * (k + 1) for k, bs in enumerate(beats)])
    t = {
        "latents": lat,
        "latent_offsets": torch.arange(n + 1) * frames,
        "text_tokens": torch.randn(n, 24, e, generator=g).half(),
        "text_mask": torch.ones(n, 24, dtype=torch.bool),
        "text_pooled": torch.randn(n, e, generator=g).half(),
        "beats": flat,
        "beat_offsets": offs,
        "downbeats": down,
        "downbeat_offsets": doffs,
        "beats_per_bar": torch.full((n,), 4),
        "bpm": torch.full((n,), 120.0),
        "key_pc": torch.zeros(n, dtype=torch.long),
        "key_mode": torch.zeros(n, dtype=torch.long),
        "meter_idx": torch.ones(n, dtype=torch.long),
        "instr_idx": torch.ones(n, dtype=torch.long),
    }
    save_file(
        t, str(path), metadata={"frame_rate": "50.0", "lo": "-11.6", "hi": "4.0", "split": "train", "clips": "[]"}
    )
