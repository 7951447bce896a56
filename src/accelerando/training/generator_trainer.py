"""Train the built-in generator (MusicDiT + ControlEncoder) with rectified flow on a latent pack.

Each example is a random crop of a clip. Convention: ``x_t = (1 - t) x0 + t noise``, target velocity
``noise - x0``, t drawn logit-normal. Masked conditioning: a random part of the crop is given as known latent
(nothing, a prefix for continuation, a suffix, or inner spans for inpainting), and the loss covers the unknown
frames. Classifier-free guidance: text and controls are dropped independently.

Tempo augmentation (``tempo_stretch`` > 0): each crop is resampled along time by a random factor ``r`` (log-uniform
within ``exp(+-tempo_stretch)``, kept inside :data:`BPM_RANGE`), its bpm multiplied by ``r`` and its beats moved with
the frames. The latents are log-mel frames, so resampling them changes tempo and keeps pitch; the same notes seen at
many tempi make the model take its periodicity from the bpm and beat grid rather than from the prompt.

Checkpoints (safetensors + optimizer via ``torch.load(weights_only=True)``) every ``ckpt_every`` steps in
``out/checkpoint``; ``out/train_log.csv``; resume by rerunning with the same ``out``; ``out/generator.safetensors``
at the end.
"""

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from accelerando.models.dit import DiTConditioning, MusicDiTConfig
from accelerando.models.generator import MusicGenerator, backbone_config
from accelerando.models.io import save_model
from accelerando.models.unet import MusicUNetConfig
from accelerando.modules.precision import use_bf16
from accelerando.training.checkpoint import Checkpoint
from accelerando.training.latent_pack import LatentPack
from accelerando.training.loop import LoopConfig, run_loop

__all__ = ["GeneratorTrainConfig", "train_generator", "make_batch"]


@dataclass
class GeneratorTrainConfig:
    steps: int = 20000
    batch_size: int = 16
    seconds: float = 10.0  # crop length
    lr: float = 3e-4
    warmup: int = 500
    weight_decay: float = 0.01
    p_drop_text: float = 0.15
    p_drop_controls: float = 0.15
    p_mask: float = 0.5  # probability that part of the crop is given as known latent
    log_every: int = 50
    ckpt_every: int = 1000
    max_minutes: float | None = None
    bf16: bool | None = None  # None: bf16 autocast where the device has bf16 arithmetic (modules/precision)
    seed: int = 0
    # None keeps the model's own setting; True/False switches phase guidance on/off (also when fine-tuning a run
    # that was trained without it; see MusicDiTConfig.phase_guidance)
    phase_guidance: bool | None = None
    tempo_stretch: float = 0.0  # max |log r| of the tempo augmentation; 0 switches it off
    # decay of an exponential moving average of the weights, updated after every step and exported instead of the
    # raw weights (0 = off; 0.999 averages over about the last 1,000 steps)
    ema: float = 0.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.seconds <= 0:
            raise ValueError(f"seconds={self.seconds} must be positive")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema={self.ema} must be in [0, 1) (0 = off)")
        if not 0.0 <= self.tempo_stretch <= 0.7:
            raise ValueError(f"tempo_stretch={self.tempo_stretch} must be between 0 and 0.7 (a factor of 2)")


def _known_mask(frames: int, rng: np.random.Generator, p_mask: float) -> torch.Tensor:
    """[frames] float: 1 where the latent is given. Types: none, prefix, suffix, one or two inner spans."""
    m = torch.zeros(frames)
    if rng.random() >= p_mask:
        return m
    kind = rng.integers(0, 3)
    if kind == 0:  # continuation: a known prefix
        m[: rng.integers(frames // 8, frames * 3 // 4)] = 1
    elif kind == 1:  # a known suffix
        m[rng.integers(frames // 4, frames * 7 // 8) :] = 1
    else:  # inpaint: known everywhere except one or two holes
        m[:] = 1
        for _ in range(int(rng.integers(1, 3))):
            a = int(rng.integers(0, frames - frames // 8))
            m[a : a + int(rng.integers(frames // 16, frames // 3))] = 0
    return m


def _stretch_factor(bpm: float, rng: np.random.Generator, max_log: float) -> float:
    """Random tempo factor, log-uniform in ``exp(+-max_log)`` and narrowed so ``bpm * r`` stays in BPM_RANGE."""
    from accelerando.conditioning.controls import BPM_RANGE

    lo = max(-max_log, math.log(BPM_RANGE[0] / bpm))
    hi = min(max_log, math.log(BPM_RANGE[1] / bpm))
    return 1.0 if lo >= hi else math.exp(rng.uniform(lo, hi))


def _resample_frames(z: torch.Tensor, frames: int) -> torch.Tensor:
    """Latent frames [N, D] -> [frames, D] by linear interpolation in time (antialiased when shrinking)."""
    if len(z) == frames:
        return z
    out = torch.nn.functional.interpolate(
        z.T[None, None], size=(z.shape[1], frames), mode="bilinear", align_corners=False, antialias=True
    )
    return out[0, 0].T.contiguous()


def make_batch(
    pack: LatentPack,
    model: MusicGenerator,
    idx: list[int],
    frames: int,
    rng,
    p_mask: float = 0.5,
    tempo_stretch: float = 0.0,
):
    """Latents [B, T, D] (normalised), phases [B, T, 4], known masks [B, T], control tensors and text.

    With ``tempo_stretch`` > 0 each crop is time-resampled by a random tempo factor (module docstring); the
    returned ``bpm`` control and the beat grid are those of the resampled crop.
    """
    from accelerando.conditioning.controls import frame_phases

    t = pack.t
    lengths = pack.lengths()
    fr = pack.frame_rate
    xs, phases, masks, bpms = [], [], [], []
    for i in idx:
        bpm = float(t["bpm"][i])
        r = _stretch_factor(bpm, rng, tempo_stretch) if tempo_stretch > 0 else 1.0
        n_src = max(1, int(round(frames * r)))
        r = n_src / frames  # the factor actually applied
        start = int(rng.integers(0, max(1, int(lengths[i]) - n_src)))
        xs.append(_resample_frames(pack.latent(i, start, n_src), frames))
        off = start / fr
        # source frame k sits at output frame (k + 0.5) / r - 0.5 (interpolate's half-pixel convention)
        moved = {
            name: [(((b - off) * fr + 0.5) / r - 0.5) / fr for b in pack.times(name, i)]
            for name in ("beats", "downbeats")
        }
        phases.append(frame_phases(frames, fr, bpm * r, int(t["beats_per_bar"][i]), **moved))
        masks.append(_known_mask(frames, rng, p_mask))
        bpms.append(bpm * r)
    x0 = model.normalize(torch.stack(xs).to(model.dit.latent_mean.device))
    ctrl = {k: t[k][idx] for k in ("key_pc", "key_mode", "meter_idx", "instr_idx")}
    ctrl["bpm"] = torch.tensor(bpms, dtype=torch.float32)
    text = (t["text_tokens"][idx].float(), t["text_mask"][idx], t["text_pooled"][idx].float())
    return x0, torch.stack(phases), torch.stack(masks), ctrl, text


def train_generator(
    pack_path: Path,
    out: Path,
    dit_cfg: MusicDiTConfig | MusicUNetConfig | None = None,
    cfg: GeneratorTrainConfig | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) the generator on a latent pack; returns the exported ``generator.safetensors``."""
    cfg = cfg or GeneratorTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.bf16 is None:
        cfg = replace(cfg, bf16=use_bf16(device))
    torch.manual_seed(cfg.seed)
    pack = LatentPack(pack_path)
    ckpt = Checkpoint(out, "generator")
    step = 0
    if ckpt.exists():
        st = ckpt.state()
        model = MusicGenerator(backbone_config(st["dit_config"]))
        ckpt.load_weights(model)
        step = st["step"]
        if cfg.phase_guidance is not None:
            model.config.phase_guidance = cfg.phase_guidance
    else:
        dit_cfg = replace(  # the pack decides the latent width, text width and frame rate
            dit_cfg or MusicDiTConfig(),
            latent_dim=int(pack.t["latents"].shape[1]),
            text_dim=int(pack.t["text_pooled"].shape[1]),
            frame_rate=pack.frame_rate,
        )
        if cfg.phase_guidance is not None:
            dit_cfg = replace(dit_cfg, phase_guidance=cfg.phase_guidance)
        model = MusicGenerator(dit_cfg)
        z = pack.t["latents"][:: max(1, len(pack.t["latents"]) // 20000)].float()
        z = z / 255 * (pack.hi - pack.lo) + pack.lo
        model.set_latent_stats(z.mean(0), z.std(0).clamp(min=1e-3))
    model.to(device).train()
    ema = None
    if cfg.ema:  # torch's AveragedModel with an EMA update; started from the checkpoint's EMA when it has one
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        if step and ckpt.has_ema():
            ckpt.load_ema(ema.module)
            ema.n_averaged.fill_(1)  # else the first update would copy the weights instead of averaging them in
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    if step:
        ckpt.load_optimizer(opt, device)
    frames = int(round(cfg.seconds * pack.frame_rate))
    usable = [i for i, n in enumerate(pack.lengths().tolist()) if n >= frames // 2]
    rng = np.random.default_rng(cfg.seed + step)

    def step_fn(_step: int):
        idx = [usable[int(i)] for i in rng.integers(0, len(usable), cfg.batch_size)]
        x0, phases, known, ctrl, (tok, tmask, pooled) = make_batch(
            pack, model, idx, frames, rng, cfg.p_mask, cfg.tempo_stretch
        )
        x0, phases, known = x0.to(device), phases.to(device), known.to(device)
        b = x0.shape[0]
        t = torch.sigmoid(torch.randn(b, device=device))  # logit-normal flow time
        noise = torch.randn_like(x0)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        xt = torch.where(known[..., None] > 0, x0, xt)  # known frames are clean
        drop_text = torch.from_numpy(rng.random(b) < cfg.p_drop_text).to(device)
        drop_ctrl = torch.from_numpy(rng.random(b) < cfg.p_drop_controls).to(device)
        if model.config.phase_guidance:  # no beat grid where the controls are dropped
            phases = torch.where(drop_ctrl[:, None, None], 0.0, phases)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=cfg.bf16):
            control = model.controls(**{k: v.to(device) for k, v in ctrl.items()}, drop=drop_ctrl)
            cond = DiTConditioning(
                text_tokens=tok.to(device),
                text_mask=tmask.to(device),
                text_pooled=pooled.to(device),
                control=control,
                phases=phases,
                known=x0 * known[..., None],
                known_mask=known,
                drop_text=drop_text,
            )
            v = model.dit(xt, t, cond)
        err = (v.float() - (noise - x0)).pow(2).mean(-1)  # [B, T]
        weight = 1 - known
        return (err * weight).sum() / weight.sum().clamp(min=1), {}

    def save_checkpoint(at: int):
        state = {"step": at, "dit_config": model.config.to_dict(), "train": asdict(cfg)}
        ckpt.save(model, opt, model.config.to_dict(), state, ema=None if ema is None else ema.module)

    run_loop(
        model,
        opt,
        LoopConfig.of(cfg),
        step,
        step_fn,
        save_checkpoint,
        out / "train_log.csv",
        [],
        desc="generator",
        progress=progress,
        after_step=None if ema is None else (lambda _step: ema.update_parameters(model)),
    )
    final = model if ema is None else ema.module
    return save_model(final, out / "generator.safetensors", "generator", model.config.to_dict())
