"""Train the built-in codec (models/codec.py) on a pack of audio segments.

Checkpoints every ``ckpt_every`` steps into ``out/checkpoint/`` (weights as safetensors, optimizer state loaded
back with ``torch.load(weights_only=True)``, step counter as JSON), logs losses to ``out/train_log.csv`` and
validation scores to ``out/eval_log.csv``, and exports ``out/codec.safetensors`` at the end. Rerunning with the same
``out`` resumes from the last checkpoint.
"""

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from accelerando.models.codec import CodecConfig, MelCodec
from accelerando.models.io import save_model
from accelerando.modules.precision import use_bf16
from accelerando.training.audio_pack import read_pack
from accelerando.training.checkpoint import Checkpoint
from accelerando.training.loop import LoopConfig, run_loop
from accelerando.training.losses import MelLoss, MultiResolutionSTFTLoss

__all__ = ["CodecTrainConfig", "train_codec"]


@dataclass
class CodecTrainConfig:
    steps: int = 20000
    batch_size: int = 16
    segment_samples: int = 24576  # training crop, a multiple of the codec's samples per frame
    lr: float = 5e-4
    warmup: int = 500
    weight_decay: float = 0.01
    mel_weight: float = 1.0
    stft_weight: float = 1.0
    latent_l2: float = 1e-4  # keeps the latent small and centred for the generator
    log_every: int = 50
    ckpt_every: int = 1000
    eval_every: int = 1000
    max_minutes: float | None = None  # stop (with a checkpoint) before this wall-clock budget runs out
    bf16: bool | None = None  # None: bf16 autocast where the device has bf16 arithmetic (modules/precision)
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "segment_samples", "log_every", "ckpt_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")


def _batch(segments: np.ndarray, n: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    idx = rng.integers(0, len(segments), n)
    starts = rng.integers(0, segments.shape[1] - length + 1, n)
    x = np.stack([segments[i, s : s + length] for i, s in zip(idx, starts, strict=True)])
    gain = rng.uniform(0.3, 1.0, (n, 1)).astype(np.float32)  # level augmentation
    return torch.from_numpy(x * gain)  # [B, S]


def _evaluate(model: MelCodec, val: np.ndarray, device: str, mel_loss, stft_loss) -> dict:
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(val[:, : (val.shape[1] // model.samples_per_frame) * model.samples_per_frame]).to(device)
        mel, mr = [], []
        for chunk in x.split(8):
            y = model(chunk[:, None])[:, 0]
            mel.append(mel_loss(y, chunk).item())
            mr.append(stft_loss(y, chunk).item())
    model.train()
    return {"mel_l1": float(np.mean(mel)), "mrstft": float(np.mean(mr))}


def train_codec(
    pack: Path,
    out: Path,
    codec_cfg: CodecConfig | None = None,
    cfg: CodecTrainConfig | None = None,
    val_pack: Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a codec on ``pack``; returns the path of the exported ``codec.safetensors``."""
    cfg = cfg or CodecTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.bf16 is None:
        cfg = replace(cfg, bf16=use_bf16(device))
    torch.manual_seed(cfg.seed)
    ckpt = Checkpoint(out, "codec")
    step = 0
    if ckpt.exists():
        st = ckpt.state()
        codec_cfg = CodecConfig(**st["codec_config"])
        model = MelCodec(codec_cfg).to(device)
        ckpt.load_weights(model)
        step = st["step"]
    else:
        codec_cfg = codec_cfg or CodecConfig()
        model = MelCodec(codec_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.8, 0.99))
    if step:
        ckpt.load_optimizer(opt, device)
    segments, _ = read_pack(pack)
    val = read_pack(val_pack)[0][:64] if val_pack else segments[-32:]
    mel_loss = MelLoss(codec_cfg.sample_rate, n_mels=codec_cfg.n_mels).to(device)
    stft_loss = MultiResolutionSTFTLoss().to(device)
    rng = np.random.default_rng(cfg.seed + step)
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32

    def step_fn(_step: int):
        x = _batch(segments, cfg.batch_size, cfg.segment_samples, rng).to(device)
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=cfg.bf16):
            z = model.encode(x[:, None])
            y = model.decode(z)[:, 0]
        y = y.float()
        lm, ls = mel_loss(y, x), stft_loss(y, x)
        ms = z.float().pow(2).mean()
        loss = cfg.mel_weight * lm + cfg.stft_weight * ls + cfg.latent_l2 * ms
        return loss, {"mel": lm.detach(), "mrstft": ls.detach(), "latent_rms": ms.detach().sqrt()}

    def evaluate(at: int):
        scores = _evaluate(model, val, device, mel_loss, stft_loss)
        with open(out / "eval_log.csv", "a") as fh:
            fh.write(f"{at},{scores['mel_l1']:.4f},{scores['mrstft']:.4f}\n")

    def save_checkpoint(at: int):
        state = {"step": at, "codec_config": codec_cfg.to_dict(), "train": asdict(cfg)}
        ckpt.save(model, opt, codec_cfg.to_dict(), state)

    run_loop(
        model,
        opt,
        LoopConfig.of(cfg),
        step,
        step_fn,
        save_checkpoint,
        out / "train_log.csv",
        ["mel", "mrstft", "latent_rms"],
        evaluate=evaluate,
        desc="codec",
        progress=progress,
    )
    return save_model(model, out / "codec.safetensors", "codec", codec_cfg.to_dict())
