"""Low-rank branch recovery: fine-tune the 16-bit low-rank factors (and the residual's weight scales) of an
SVD-quantized generator so that its decoded audio matches the float model's under a complex-STFT loss.

>>> teacher = record_teacher(float_pipeline, prompts)          # before quantizing  # doctest: +SKIP
>>> quantize_pipeline(pipe, "w4a8-svd")                        # doctest: +SKIP
>>> report = recover_(pipe, teacher, steps=60)                 # doctest: +SKIP

What trains: every :class:`~accelerando.quant.svd.SVDQuantLinear`'s ``lora_up`` [N, r] and ``lora_down`` [r, K]
(fp32 master copies, written back as bf16) and, with ``train_scales`` (default), its residual's ``weight_scale``
[N, G] (as ``scale0 * exp(g)``, one trainable log-gain per output channel and group). The integer codes
(``residual.qweight``), the smoothing factors and the biases stay frozen: the quantized residual stays exactly the
quantized residual, only the 16-bit side and the scales the integers are multiplied by move.

Gradient path: the loss reaches an early layer's factors through every later layer, so the later layers' quantized
residuals must pass a gradient to their *input*. The forward value is the exact quantized one (per-token int8
activations, integer GEMM); the backward is that of a float matmul with the dequantized residual weight (a
straight-through estimator for the activation rounding only; the weights are not trained and need none).

Objective (teacher-forced, decoded audio). The float pipeline generates each recovery prompt once (Euler sampler,
classifier-free guidance) while :func:`record_teacher` records every backbone call (the sampler state it saw, its
time, the conditioning, the float velocity) and the final latent. A training step runs the quantized backbone on
one prompt's recorded calls (all of them in one batch), combines the guidance branches as the pipeline does, and
integrates the velocity differences with the sampler's steps:

    z_q = z_fp + std * sum_k dt_k * (g(v_q,k) - g(v_fp,k)),      g: the pipeline's guidance (combine_guidance)

which is exactly the final latent the pipeline would produce if the quantized backbone saw the float trajectory's
states (teacher forcing, as the ``stft`` calibration's objective). ``z_q`` is decoded by the codec, with gradients,
and the loss is the mean over three resolutions (FFT 512/1024/2048, hop a quarter) of the relative complex-STFT error
``||X_q - X_fp||^2 / ||X_fp||^2`` against the decoded float latent -- the paired ``complex_stft`` metric
(FFT 1024, hop 256) is one of the three. Why the decoded audio and not the latent: with the
codec's decode and its backward in every step, a step on 5 s clips still takes only about 1.6 s on one core for the
shipped model, so there is no need for a latent proxy, and the codec decides which latent errors are audible (and
what the phase does).
Why teacher forcing rather than backpropagating through the free-running sampler: it costs one batched backbone
call per prompt instead of a sequential chain of ``steps`` calls kept in memory, and on few prompts the free-running
difference of two trajectories is dominated by chaotic divergence that the fit would chase (see the stft calibration
notes in ``docs/quantization.md``).

Safety: the objective is evaluated exactly (normal quantized forward, no surrogate) on all recovery prompts before
and after; if training did not lower it, every trained tensor is restored (``report["reverted"]``).
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from accelerando.modules.precision import autocast
from accelerando.quant.api import has_per_tensor_layers
from accelerando.quant.svd import SVDQuantLinear

__all__ = ["Teacher", "record_teacher", "recover_", "complex_stft_loss", "teacher_forced_audio", "RECOVERY_RESOLUTIONS"]

RECOVERY_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop)


def complex_stft_loss(pred: torch.Tensor, ref: torch.Tensor, resolutions=RECOVERY_RESOLUTIONS) -> torch.Tensor:
    """Mean over ``resolutions`` of ``||STFT(pred) - STFT(ref)||^2 / ||STFT(ref)||^2`` (Hann window), differentiable.

    ``pred`` / ``ref``: audio [..., S] (flattened to rows); a scalar tensor.
    """
    p, r = pred.reshape(-1, pred.shape[-1]).float(), ref.reshape(-1, ref.shape[-1]).float()
    total = p.new_zeros(())
    for n_fft, hop in resolutions:
        win = torch.hann_window(n_fft, device=p.device)
        sp = torch.stft(p, n_fft, hop, window=win, return_complex=True)
        sr = torch.stft(r, n_fft, hop, window=win, return_complex=True)
        total = total + (sp - sr).abs().square().sum() / sr.abs().square().sum().clamp(min=1e-12)
    return total / len(resolutions)


@dataclass
class _Item:
    """One recovery prompt: the float pipeline's backbone calls, batched, and its final latent."""

    x: torch.Tensor  # [C * nb, T, D]: the sampler states the backbone saw (C calls, nb rows each)
    t: torch.Tensor  # [C * nb]
    cond: object  # DiTConditioning, every tensor field concatenated over the calls
    v: torch.Tensor  # [C * nb, T, D] float32: the float backbone's output
    dt: torch.Tensor  # [C]: the Euler step of each call
    latent: torch.Tensor  # [1, D, T]: the float pipeline's final (denormalised) latent, as the codec gets it
    audio: torch.Tensor  # [1, 1, S]: codec.decode(latent)
    calls: int
    nb: int


@dataclass
class Teacher:
    """What :func:`record_teacher` recorded; :func:`recover_` fits the quantized model to it."""

    items: list[_Item]
    cfg: float
    prompts: list[str]
    rhythm_cfg: float | None = None  # the pipeline's resolved rhythm scale (None: plain guidance, two branches)


def _plain(t):
    """A normal (non-inference) copy of a tensor recorded under ``torch.inference_mode``."""
    return t.clone() if isinstance(t, torch.Tensor) else t


def record_teacher(
    pipeline, prompts: list[dict], seconds: float = 2.0, steps: int = 8, cfg: float = 3.0, seed: int = 0
) -> Teacher:
    """Generate ``prompts`` (manifest-style dicts) with the FLOAT ``pipeline`` (prompt ``i`` at seed ``seed + i``,
    Euler, ``steps`` steps, guidance ``cfg``) and record its backbone calls and final latents for :func:`recover_`.

    Raises ``RuntimeError`` if the recorded calls do not reproduce the final latent with the Euler steps (a sampler
    this module does not model)."""
    from accelerando.pipelines.text_to_music import guidance_branches
    from accelerando.quant.presets import NO_LATENT_GUIDANCE, run_prompt
    from accelerando.schedulers.flow_match_euler import FlowMatchEulerScheduler

    if cfg == 1.0:
        raise ValueError("recovery records both guidance branches; use cfg != 1")
    rhythm = pipeline.resolve_rhythm_cfg(None)  # run_prompt uses the model's default rhythm scale
    branches = guidance_branches(cfg, rhythm)
    dit, codec = pipeline.model.dit, pipeline.codec
    sched = FlowMatchEulerScheduler()
    sched.set_timesteps(steps)
    dt = (sched.t_grid[1:] - sched.t_grid[:-1]).float()  # [steps], negative
    items = []
    cls_forward = type(dit).forward
    for i, p in enumerate(prompts):
        calls, latents = [], []
        decode = codec.decode

        def forward(x, t, cond, _calls=calls):
            out = cls_forward(dit, x, t, cond)
            _calls.append((x, t, cond, out.float()))
            return out

        def capture(latent, _latents=latents, _decode=decode):
            _latents.append(latent)
            return _decode(latent)

        dit.forward, codec.decode = forward, capture
        try:
            run_prompt(pipeline, p, seconds, steps, cfg, seed + i, guidance_interval="all", **NO_LATENT_GUIDANCE)
        finally:
            del dit.forward, codec.decode
        if len(calls) != steps or len(latents) != 1:
            raise RuntimeError(f"expected {steps} backbone calls and one decode, got {len(calls)} and {len(latents)}")
        cond0 = calls[0][2]
        if cond0.extras:
            raise RuntimeError("recovery does not support conditioning extras")
        cat = {
            f.name: (
                torch.cat([_plain(getattr(c[2], f.name)) for c in calls])
                if isinstance(getattr(cond0, f.name), torch.Tensor)
                else getattr(cond0, f.name)
            )
            for f in fields(cond0)
        }
        item = _Item(
            x=torch.cat([_plain(c[0]) for c in calls]).float(),
            t=torch.cat([_plain(c[1]) for c in calls]),
            cond=replace(cond0, **cat),
            v=torch.cat([_plain(c[3]) for c in calls]),
            dt=dt.clone(),
            latent=_plain(latents[0]).float(),
            audio=None,
            calls=steps,
            nb=calls[0][0].shape[0],
        )
        if item.nb != branches:
            raise RuntimeError(f"expected all {branches} guidance branches in one backbone call, got {item.nb}")
        # check: x_0 + sum_k dt_k g(v_k) must give the final latent the codec decoded
        x0 = item.x[0:1]
        g = _guided(item.v, item.calls, cfg, rhythm)  # [C, T, D]
        x_end = x0 + (item.dt[:, None, None] * g).sum(0, keepdim=True)
        lat = pipeline.model.denormalize(x_end).transpose(1, 2)
        if not torch.allclose(lat, item.latent, rtol=1e-3, atol=1e-3 * float(item.latent.abs().max())):
            raise RuntimeError("recorded backbone calls do not reproduce the final latent with Euler steps")
        with torch.no_grad():
            item.audio = codec.decode(item.latent)
        items.append(item)
    return Teacher(items, cfg, [p.get("clip_id", p["caption"]) for p in prompts], rhythm)


def _guided(v: torch.Tensor, calls: int, cfg: float, rhythm_cfg: float | None = None) -> torch.Tensor:
    """Backbone outputs [C * n, T, D] (the ``n`` guidance branches of each call in a row, as the pipeline batches
    them) -> guided velocity [C, T, D], combined as the pipeline does (``combine_guidance``)."""
    from accelerando.pipelines.text_to_music import combine_guidance

    n = v.shape[0] // calls
    return torch.stack([combine_guidance(v[k * n : (k + 1) * n], cfg, rhythm_cfg)[0] for k in range(calls)])


def _rows(cond, a: int, b: int):
    """Rows ``[a, b)`` of a batched conditioning (no extras: see ``record_teacher``)."""
    return replace(cond, **{f: None if v is None else v[a:b] for f, v in vars(cond).items() if f != "extras"})


def _item_loss(pipeline, item: _Item, cfg: float, rhythm_cfg: float | None = None) -> torch.Tensor:
    """Complex-STFT loss of the teacher-forced quantized audio of ``item`` against the float audio."""
    return complex_stft_loss(teacher_forced_audio(pipeline, item, cfg, rhythm_cfg), item.audio)


def teacher_forced_audio(pipeline, item: _Item, cfg: float, rhythm_cfg: float | None = None) -> torch.Tensor:
    """The audio [1, 1, S] ``pipeline`` would decode if its backbone saw the float trajectory of ``item`` (a
    :class:`Teacher` item): the recorded final latent plus the Euler-integrated guided velocity differences."""
    dit, model = pipeline.model.dit, pipeline.model
    with autocast("cpu"):  # the pipeline's precision on the CPU (bf16 only with bf16 hardware)
        if has_per_tensor_layers(
            dit
        ):  # one activation scale per call, as in generation: one backbone call per sampler call
            n = item.x.shape[0] // item.calls
            starts = range(0, len(item.x), n)
            v = torch.cat([dit(item.x[a : a + n], item.t[a : a + n], _rows(item.cond, a, a + n)) for a in starts])
            v = v.float()
        else:  # per-token scales: the C calls batched together give the same values
            v = dit(item.x, item.t, item.cond).float()  # [C * n, T, D], n guidance branches per call
    guided = _guided(v, item.calls, cfg, rhythm_cfg) - _guided(item.v, item.calls, cfg, rhythm_cfg)
    delta = (item.dt[:, None, None] * guided).sum(0)
    latent = item.latent + (delta * model.dit.latent_std).T[None]  # [1, D, T]
    return pipeline.codec.decode(latent)


def _stored(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A trained scale in the layer's storage dtype (float16 group scales: kept within its finite, non-zero range)."""
    if dtype == torch.float16:
        scale = scale.clamp(min=2.0**-24, max=65504.0)
    return scale.to(dtype)


class _Trainable:
    """fp32 master copies of one layer's trainable tensors, and the training forward that uses them."""

    def __init__(self, m: SVDQuantLinear, train_scales: bool, train_lowrank: bool = True):
        self.m = m
        self.up = m.lora_up.detach().float().clone().requires_grad_(train_lowrank and m.rank > 0)
        self.down = m.lora_down.detach().float().clone().requires_grad_(train_lowrank and m.rank > 0)
        self.scale0 = m.residual.weight_scale.detach().float().clone()  # fp32 master (stored float16 when grouped)
        self.log_gain = torch.zeros_like(self.scale0).requires_grad_(train_scales)
        self.wint = m.residual.int_weight().float()  # [N, K], frozen codes
        self.saved = (m.lora_up.clone(), m.lora_down.clone(), m.residual.weight_scale.clone())

    def params(self) -> list[torch.Tensor]:
        return [p for p in (self.up, self.down, self.log_gain) if p.requires_grad]

    def scale(self) -> torch.Tensor:
        return self.scale0 * self.log_gain.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.m
        xs = x * m.inv_smooth.to(x.dtype)
        ws = self.scale()  # [N, G]
        with torch.no_grad():  # the exact quantized residual (int8 activations, integer GEMM)
            m.residual.weight_scale = _stored(ws.detach(), self.saved[2].dtype)  # as write_back will store it
            exact = m.residual(xs)
        gs = m.residual.group_size
        w = self.wint * (ws.repeat_interleave(gs, dim=1) if gs else ws)  # [N, K] dequantized residual
        surrogate = F.linear(xs, w, m.residual.bias)  # straight-through: its gradient, the exact value
        y = surrogate + (exact - surrogate).detach()
        if m.rank:
            low = F.linear(F.linear(xs.float(), self.down), self.up)
            y = y + low.to(y.dtype)
        return y

    def write_back(self) -> None:
        with torch.no_grad():
            self.m.lora_up = self.up.detach().bfloat16()
            self.m.lora_down = self.down.detach().bfloat16()
            self.m.residual.weight_scale = _stored(self.scale().detach(), self.saved[2].dtype)

    def restore(self) -> None:
        self.m.lora_up, self.m.lora_down, self.m.residual.weight_scale = (t.clone() for t in self.saved)


def _exact_loss(pipeline, teacher: Teacher) -> float:
    with torch.no_grad():
        losses = [float(_item_loss(pipeline, it, teacher.cfg, teacher.rhythm_cfg)) for it in teacher.items]
        return sum(losses) / len(losses)


def recover_(
    pipeline,
    teacher: Teacher,
    steps: int = 60,
    lr: float = 2e-4,
    scale_lr: float = 3e-4,
    train_scales: bool = True,
    callback: Callable[[int, int, float], None] | None = None,
    train_lowrank: bool = True,
) -> dict:
    """Fine-tune the low-rank factors (and weight scales) of ``pipeline``'s SVD-quantized backbone in place.

    Args:
        pipeline: a pipeline whose ``model.dit`` holds :class:`SVDQuantLinear` layers (any rank; rank 0 layers only
            train their scales).
        teacher: :func:`record_teacher` of the float pipeline.
        steps: optimizer steps (Adam, cosine decay); step ``i`` uses recovery prompt ``i mod len(prompts)``.
        lr: learning rate of the factors, relative to each factor's RMS (Adam moves an element by about
            ``lr * rms`` per step).
        scale_lr: learning rate of the per-channel log-gains of the residual's weight scales.
        train_scales: train the weight scales too.
        train_lowrank: train the low-rank factors (off: scales only).
        callback: ``callback(done, steps, loss)`` after every step.

    Returns ``{"start", "end", "steps", "seconds", "history", "reverted", "trained_tensors"}``: ``start`` / ``end``
    are the exact teacher-forced loss (mean over prompts) before and after.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps={steps!r}; use an int >= 1")
    dit = pipeline.model.dit
    layers = [m for m in dit.modules() if isinstance(m, SVDQuantLinear)]
    if not layers:
        raise ValueError("recovery needs SVDQuant / SmoothQuant layers (SVDQuantLinear); this backbone has none")
    t0 = time.perf_counter()
    state = [_Trainable(m, train_scales, train_lowrank) for m in layers]
    groups = []
    for s in state:
        for p in (s.up, s.down):
            if p.requires_grad:
                rms = float(p.detach().pow(2).mean().sqrt()) or 1e-3
                groups.append({"params": [p], "lr": lr * rms})
        if s.log_gain.requires_grad:
            groups.append({"params": [s.log_gain], "lr": scale_lr})
    if not groups:
        raise ValueError("nothing to train: no low-rank factors (rank 0 or train_lowrank off) and train_scales off")
    start = _exact_loss(pipeline, teacher)
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
    base = [g["lr"] for g in opt.param_groups]
    history = []
    frozen = [p for p in dit.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    for s in state:
        s.m.forward = s.forward
    try:
        for i in range(steps):
            decay = 0.5 * (1 + math.cos(math.pi * i / steps))
            for g, b in zip(opt.param_groups, base, strict=True):
                g["lr"] = b * decay
            item = teacher.items[i % len(teacher.items)]
            loss = _item_loss(pipeline, item, teacher.cfg, teacher.rhythm_cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            if callback:
                callback(i + 1, steps, history[-1])
    finally:
        for s in state:
            del s.m.forward
            s.write_back()
        for p in frozen:
            p.requires_grad_(True)
    end = _exact_loss(pipeline, teacher)
    reverted = not end < start
    if reverted:
        for s in state:
            s.restore()
        end = start
    return {
        "start": start,
        "end": end,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
        "history": history,
        "reverted": reverted,
        "trained_tensors": sum(len(s.params()) for s in state),
        "prompts": teacher.prompts,
    }
