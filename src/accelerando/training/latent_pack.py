"""A compact, self-contained training set for the generator: codec latents, text embeddings and exact labels.

One safetensors file holds everything a training run needs, so it can travel to a GPU machine that has neither the
corpus nor the text encoder. Latents (log-mel frames) are stored as uint8 between ``lo`` and ``hi`` (about 0.06
nats per step, far below what the generator resolves); text as float16. Only train and valid clips are packed.

Tensors: ``latents`` uint8 [F_total, D]; ``latent_offsets`` int64 [N+1]; ``text_tokens`` float16 [N, L, E];
``text_mask`` bool [N, L]; ``text_pooled`` float16 [N, E]; ``bpm`` float32 [N]; ``key_pc``, ``key_mode``,
``meter_idx``, ``instr_idx`` int64 [N]; ``beats``/``downbeats`` float32 [*] with ``*_offsets`` int64 [N+1].
"""

import json
import random
from pathlib import Path

import numpy as np
import torch

from accelerando.data.split import training_splits

__all__ = ["build_latent_pack", "LatentPack", "LATENT_LO", "LATENT_HI"]

LATENT_LO, LATENT_HI = -11.6, 4.0  # log-mel range (natural log of magnitudes clamped at 1e-5)
_MAX_TEXT = 24


def _quantize(z: torch.Tensor) -> torch.Tensor:
    return ((z.clamp(LATENT_LO, LATENT_HI) - LATENT_LO) / (LATENT_HI - LATENT_LO) * 255).round().to(torch.uint8)


def _ragged(seqs: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = np.cumsum([0] + [len(s) for s in seqs])
    flat = np.concatenate([np.asarray(s, dtype=np.float32) for s in seqs]) if offsets[-1] else np.zeros(0)
    return torch.from_numpy(flat.astype(np.float32)), torch.from_numpy(offsets.astype(np.int64))


def build_latent_pack(
    corpus: Path,
    out: Path,
    max_clips: int | None = None,
    split: str = "train",
    seed: int = 0,
    max_seconds: float | None = None,
    progress: bool = True,
) -> dict:
    """Encode ``split`` clips of ``corpus`` with the built-in codec and the text encoder into ``out`` (safetensors).

    With ``max_seconds``, each clip contributes one window of at most that length starting at a random labelled
    downbeat (its beats and downbeats are shifted to the window), so more clips fit in the same bytes.
    """
    import soundfile as sf
    from safetensors.torch import save_file
    from tqdm import tqdm

    from accelerando.conditioning.controls import ControlSpec, collate
    from accelerando.conditioning.text import TextEncoder
    from accelerando.pretrained import load_codec

    if split not in training_splits() and split != "valid":
        raise ValueError(f"split={split!r} may not be used for training; use one of {training_splits()} or 'valid'")
    from accelerando.data.build import read_manifest

    rows = read_manifest(corpus, split)
    rng = random.Random(seed)
    rng.shuffle(rows)
    rows = rows[:max_clips] if max_clips else rows
    codec = load_codec("builtin")
    text = TextEncoder()
    latents, labels = [], []
    for r in tqdm(rows, desc="encode", disable=not progress):
        label = json.loads((corpus / r["path"] / "label.json").read_text())
        y, sr = sf.read(corpus / r["path"] / "mix.flac", dtype="float32", always_2d=True)
        if sr != codec.sample_rate:
            raise ValueError(f"{r['clip_id']} is at {sr} Hz; the codec needs {codec.sample_rate} Hz")
        if max_seconds is not None and len(y) > max_seconds * sr:
            starts = [d for d in label["downbeats"] if d + max_seconds <= len(y) / sr] or [0.0]
            a = rng.choice(starts)
            y = y[int(round(a * sr)) : int(round((a + max_seconds) * sr))]
            label = dict(label)
            label["beats"] = [b - a for b in label["beats"] if a - 1e-9 <= b < a + max_seconds]
            label["downbeats"] = [b - a for b in label["downbeats"] if a - 1e-9 <= b < a + max_seconds]
        with torch.no_grad():
            z = codec.encode(torch.from_numpy(y.T.copy())[None])[0]  # [D, T]
        latents.append(_quantize(z.T))  # [T, D]
        labels.append(label)
    specs = [ControlSpec.from_label(lab) for lab in labels]
    ctrl = collate(specs)
    tokens, mask, pooled = [], [], []
    for i in range(0, len(labels), 64):
        tk, mk, pl = text.encode([lab["caption"] for lab in labels[i : i + 64]])
        tk, mk = tk[:, :_MAX_TEXT], mk[:, :_MAX_TEXT]
        tk = torch.nn.functional.pad(tk, (0, 0, 0, _MAX_TEXT - tk.shape[1]))
        mk = torch.nn.functional.pad(mk, (0, _MAX_TEXT - mk.shape[1]))
        tokens.append(tk.half())
        mask.append(mk.bool())
        pooled.append(pl.half())
    beats, beat_off = _ragged([lab["beats"] for lab in labels])
    downbeats, down_off = _ragged([lab["downbeats"] for lab in labels])
    tensors = {
        "latents": torch.cat(latents),
        "latent_offsets": torch.tensor(np.cumsum([0] + [len(z) for z in latents]), dtype=torch.int64),
        "text_tokens": torch.cat(tokens),
        "text_mask": torch.cat(mask),
        "text_pooled": torch.cat(pooled),
        "beats": beats,
        "beat_offsets": beat_off,
        "downbeats": downbeats,
        "downbeat_offsets": down_off,
        "beats_per_bar": torch.tensor([s.beats_per_bar for s in specs], dtype=torch.int64),
        **{k: v for k, v in ctrl.items()},
    }
    meta = {
        "frame_rate": str(codec.frame_rate),
        "lo": str(LATENT_LO),
        "hi": str(LATENT_HI),
        "split": split,
        "clips": json.dumps([lab["clip_id"] for lab in labels]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out), metadata=meta)
    return {"clips": len(labels), "frames": int(tensors["latents"].shape[0]), "bytes": out.stat().st_size}


class LatentPack:
    """Random access to a latent pack; ``crop(i, frames, start)`` returns one training example."""

    def __init__(self, path: Path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        self.t = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
        self.frame_rate = float(meta["frame_rate"])
        self.lo, self.hi = float(meta["lo"]), float(meta["hi"])
        self.n = len(self.t["latent_offsets"]) - 1

    def lengths(self) -> torch.Tensor:
        off = self.t["latent_offsets"]
        return off[1:] - off[:-1]

    def latent(self, i: int, start: int, frames: int) -> torch.Tensor:
        """Dequantised latent frames [frames, D] of clip ``i`` from ``start`` (zero-padded past the end)."""
        off = self.t["latent_offsets"]
        a = int(off[i]) + start
        b = min(int(off[i + 1]), a + frames)
        z = self.t["latents"][a:b].float() / 255 * (self.hi - self.lo) + self.lo
        if len(z) < frames:
            z = torch.cat([z, torch.full((frames - len(z), z.shape[1]), self.lo)])
        return z

    def times(self, name: str, i: int) -> list[float]:
        """Labelled ``"beats"`` or ``"downbeats"`` of clip ``i``, in seconds from the clip start."""
        off = self.t[{"beats": "beat_offsets", "downbeats": "downbeat_offsets"}[name]]
        return self.t[name][int(off[i]) : int(off[i + 1])].tolist()
