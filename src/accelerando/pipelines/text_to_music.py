"""TextToMusicPipeline: prompt + exact controls -> audio, and the edits (extend, inpaint, remix) as one operation.

Generation, continuation and inpainting differ only in which latent frames are known: the backbone was trained
with random known masks, so the pipeline just sets the mask. Remix starts the flow from a partly noised version of
the input (``strength`` = the starting flow time). Classifier-free guidance runs the conditional and unconditional
(text and controls dropped) branches as one batch.

Dims: ``B`` outputs, ``C`` channels, ``S`` samples, ``T`` latent frames, ``D`` latent channels.

Device: the pipeline runs where its model is (``pipe.to("cuda")`` moves the generator and the codec; the text
encoder stays on the CPU and its output is moved). Autocast to bfloat16 follows that device, where it has bf16
arithmetic (``accelerando.modules.precision``; float32 elsewhere, e.g. on AVX2 CPUs). Noise is drawn on the
generator's device and moved, so a seed gives the same starting noise everywhere; audio comes back on the CPU.
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from accelerando.conditioning.controls import ControlSpec, collate, frame_phases
from accelerando.errors import UserError
from accelerando.models.dit import DiTConditioning
from accelerando.modules.precast import WeightCastCache
from accelerando.modules.precision import autocast, use_bf16
from accelerando.pipelines.grid_guidance import check_grid_guidance, make_grid_guidance
from accelerando.pipelines.key_guidance import make_key_guidance
from accelerando.schedulers import FlowMatchEulerScheduler, FlowMatchHeunScheduler, randn_tensor, sample

__all__ = [
    "AudioOutput",
    "TextToMusicPipeline",
    "check_guidance_interval",
    "combine_guidance",
    "guidance_branches",
    "slice_conditioning",
]

_CROSSFADE_S = 0.02  # seam crossfade when splicing generated audio into kept audio


@dataclass
class AudioOutput:
    audio: torch.Tensor  # [B, C, S] float32
    sample_rate: int
    metadata: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def save(self, path: str | Path, index: int = 0) -> Path:
        from accelerando.audio import save

        return save(path, self.audio[index], self.sample_rate)


def guidance_branches(cfg: float, rhythm_cfg: float | None) -> int:
    """Backbone batch rows per output: 1 unguided, 2 plain guidance, 3 with a separate rhythm scale."""
    if rhythm_cfg is not None:
        return 3
    return 2 if cfg != 1.0 else 1


def combine_guidance(v: torch.Tensor, cfg: float, rhythm_cfg: float | None) -> torch.Tensor:
    """Backbone outputs of the guidance branches stacked on dim 0 -> the guided velocity.

    Plain guidance: ``v`` [2B, ...] = (conditional, unconditional) -> ``v_u + cfg (v_c - v_u)``. With ``rhythm_cfg``:
    ``v`` [3B, ...] = (all conditions, text only, nothing) -> ``v_u + cfg (v_t - v_u) + rhythm_cfg (v_c - v_t)``.
    """
    if rhythm_cfg is None:
        vc, vu = v.chunk(2)
        return vu + cfg * (vc - vu)
    vc, vt, vu = v.chunk(3)
    return vu + cfg * (vt - vu) + rhythm_cfg * (vc - vt)


def check_guidance_interval(interval) -> tuple[float, float]:
    """``(t_lo, t_hi)`` flow times with ``0 <= t_lo <= t_hi <= 1``, as floats; UserError naming the bad value."""
    try:
        if isinstance(interval, str | bytes):
            raise TypeError
        lo, hi = (float(v) for v in list(interval))
    except (TypeError, ValueError):
        raise UserError(
            f"guidance_interval={interval!r}; give two flow times (t_lo, t_hi) in [0, 1], or 'all'"
        ) from None
    if not 0 <= lo <= hi <= 1:
        raise UserError(f"guidance_interval=({lo}, {hi}); use 0 <= t_lo <= t_hi <= 1 (1 = noise, 0 = data)")
    return lo, hi


def slice_conditioning(cond: DiTConditioning, n: int) -> DiTConditioning:
    """The first ``n`` rows of every batched field of ``cond`` (the conditional branch of a guided batch)."""
    rows = {f: getattr(cond, f) for f in cond.__dataclass_fields__ if f != "extras"}
    return DiTConditioning(**{f: None if v is None else v[:n] for f, v in rows.items()}, extras=dict(cond.extras))


class TextToMusicPipeline:
    def __init__(self, model, codec, text_encoder):
        self._weight_casts = WeightCastCache()  # bf16 copies of the backbone's weights (modules/precast.py)
        self.model = model.eval()
        self.codec = codec.eval()
        self.text_encoder = text_encoder
        self.frame_rate = codec.frame_rate

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "builtin", text_encoder=None) -> "TextToMusicPipeline":
        from accelerando.conditioning.text import TextEncoder
        from accelerando.pretrained import load_codec, load_generator

        # the default text encoder loads now, with the weights: importing transformers' BERT takes about 2.5 s on
        # the dev CPU, which would otherwise land in the first generation's wall time
        return cls(load_generator(name_or_path), load_codec("builtin"), text_encoder or TextEncoder().load())

    @property
    def device(self) -> torch.device:
        """Where the generator's parameters live; the sampling runs there."""
        return next(self.model.parameters()).device

    @property
    def model(self):
        """The generator (``MusicGenerator``); assigning another one drops the cached bf16 weight copies."""
        return self._model

    @model.setter
    def model(self, model) -> None:
        self._model = model
        self._weight_casts.clear()

    def to(self, device: str | torch.device) -> "TextToMusicPipeline":
        """Move the generator and the codec to ``device`` (the text encoder stays on the CPU); returns self."""
        self.model.to(device)
        self.codec.to(device)
        self._weight_casts.clear()
        return self

    def _autocast(self):
        """bf16 autocast where this device has bf16 arithmetic, else float32 (``accelerando.modules.precision``)."""
        return autocast(self.device)

    @property
    def default_rhythm_cfg(self) -> float | None:
        """The rhythm guidance scale used when a call gives none (None: plain guidance), recorded with the weights."""
        value = getattr(self.model.config, "default_rhythm_cfg", None)
        return None if value is None else float(value)

    def resolve_rhythm_cfg(self, rhythm_cfg: float | str | None) -> float | None:
        """``rhythm_cfg`` as the call uses it: None -> the model's default, ``"off"`` -> None (plain guidance)."""
        if rhythm_cfg is None:
            return self.default_rhythm_cfg
        if rhythm_cfg == "off":
            return None
        if isinstance(rhythm_cfg, str) or not 0 <= rhythm_cfg <= 20:
            raise UserError(f"rhythm_cfg={rhythm_cfg!r}; use a guidance scale between 0 and 20, or 'off'")
        return float(rhythm_cfg)

    @property
    def default_guidance_interval(self) -> tuple[float, float] | None:
        """The flow-time interval guided when a call gives none (None: every step), recorded with the weights."""
        value = getattr(self.model.config, "default_guidance_interval", None)
        return None if value is None else check_guidance_interval(value)

    def resolve_guidance_interval(self, interval) -> tuple[float, float] | None:
        """``guidance_interval`` as the call uses it: None -> the model's default, ``"all"`` -> None (every step
        guided), ``(t_lo, t_hi)`` with ``0 <= t_lo <= t_hi <= 1`` -> itself."""
        if interval is None:
            return self.default_guidance_interval
        if isinstance(interval, str) and interval == "all":
            return None
        return check_guidance_interval(interval)

    @property
    def default_grid_guidance(self) -> float:
        """The beat-grid guidance strength used when a call gives none (0: off), recorded with the weights."""
        return self._latent_guidance_default("grid_guidance")

    @property
    def default_key_guidance(self) -> float:
        """The key guidance strength used when a call gives none (0: off), recorded with the weights."""
        return self._latent_guidance_default("key_guidance")

    def _latent_guidance_default(self, name: str) -> float:
        value = getattr(self.model.config, f"default_{name}", None)
        return 0.0 if value is None else check_grid_guidance(value, f"default_{name}")

    def resolve_grid_guidance(self, grid_guidance: float | str | None) -> float:
        """``grid_guidance`` as the call uses it: None -> the model's default, ``"off"`` -> 0; UserError for a
        strength out of range, or for a codec whose latent is not a log-mel (no onsets to read)."""
        return self._resolve_latent_guidance("grid_guidance", grid_guidance, "onsets")

    def resolve_key_guidance(self, key_guidance: float | str | None) -> float:
        """``key_guidance`` as :meth:`resolve_grid_guidance` resolves ``grid_guidance``."""
        return self._resolve_latent_guidance("key_guidance", key_guidance, "pitch content")

    def _resolve_latent_guidance(self, name: str, value, what: str) -> float:
        given = f"{name}={value!r}" if value is not None else f"the model's default_{name}"
        strength = self._latent_guidance_default(name) if value is None else check_grid_guidance(value, name)
        latent = getattr(getattr(self.codec, "config", None), "latent", "mel")
        if strength and latent != "mel":
            raise UserError(
                f"{given} ({strength:g}) reads {what} from a log-mel latent; this codec's latent is {latent!r}"
                f" (pass {name}='off')"
            )
        return strength

    @property
    def max_seconds(self) -> float:
        return float(self.model.config.max_seconds)

    @property
    def default_cfg(self) -> float:
        """The guidance scale used when a call gives none: the one recorded with the model's weights."""
        return float(self.model.config.default_cfg)

    def check_inputs(
        self, prompt, spec_args: dict, duration: float, steps: int, cfg: float, sampler: str
    ) -> ControlSpec:
        """Validate everything before any compute; raise UserError naming the argument, the value and the fix."""
        if not isinstance(prompt, str):
            raise UserError(f"prompt must be a string, got {type(prompt).__name__}")
        if not (0 < duration <= self.max_seconds):
            raise UserError(f"duration={duration} s is outside 0-{self.max_seconds:.0f} s, the model's maximum")
        if steps < 1 or steps > 200:
            raise UserError(f"steps={steps}; use 1-200")
        if not (0 <= cfg <= 20) or math.isnan(cfg):
            raise UserError(f"cfg={cfg}; use a guidance scale between 0 and 20")
        if sampler not in ("euler", "heun"):
            raise UserError(f"sampler={sampler!r}; use 'euler' or 'heun'")
        try:
            return ControlSpec.from_user(duration=duration, **spec_args)
        except ValueError as err:
            raise UserError(str(err)) from None

    def _prepare_audio(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Input audio [C, S] at any rate -> mono float32 [S] at the codec's rate (mixed down, then resampled)."""
        from accelerando.audio import resample

        mono = audio.float().mean(dim=0)  # [S_in]
        if sample_rate != self.codec.sample_rate:
            mono = resample(mono, sample_rate, self.codec.sample_rate)
        return mono

    def _encode_audio(self, mono: torch.Tensor) -> torch.Tensor:
        """Mono audio [S] at the codec's rate -> normalised latent [1, T, D]."""
        z = self.codec.encode(mono[None, None].to(self.device)).transpose(1, 2)  # [1, T, D]
        return self.model.normalize(z)

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str,
        *,
        bpm: float = 120.0,
        key: str = "C major",
        meter: str = "4/4",
        instruments: str | None = None,
        duration: float = 10.0,
        steps: int = 8,
        cfg: float | None = None,
        sampler: str = "euler",
        num_outputs: int = 1,
        generator: torch.Generator | None = None,
        init_audio: torch.Tensor | None = None,
        init_sample_rate: int | None = None,
        regions: list[tuple[float, float]] | None = None,
        strength: float | None = None,
        rhythm_cfg: float | str | None = None,
        guidance_interval: tuple[float, float] | str | None = None,
        grid_guidance: float | str | None = None,
        key_guidance: float | str | None = None,
        callback=None,
    ) -> AudioOutput:
        """Generate (no ``init_audio``), extend (``init_audio`` [C, S] shorter than ``duration``), inpaint
        (``regions`` in seconds) or remix (``strength``; the output keeps the input's length).

        Returns audio [num_outputs, 1, round(duration * sample_rate)]. ``cfg`` None: the model's ``default_cfg``.

        ``rhythm_cfg``: a separate guidance scale for the controls and the beat grid. Three branches run (all
        conditions ``v_c``; text only ``v_t``; nothing ``v_u``) and combine as
        ``v_u + cfg (v_t - v_u) + rhythm_cfg (v_c - v_t)``; with ``rhythm_cfg == cfg`` that is plain guidance.
        None: the model's ``default_rhythm_cfg``; ``"off"``: plain guidance, two branches.

        ``guidance_interval``: ``(t_lo, t_hi)``, the flow times (1 = noise, 0 = data) at which guidance runs; steps
        outside it run the conditional branch alone (one backbone row per output instead of two or three). None:
        the model's ``default_guidance_interval``; ``"all"``: every step guided. A remix (``strength`` < 1) starts
        at flow time ``strength`` and scales the interval by it, ``(t_lo * strength, t_hi * strength)``, so that it
        guides the same share of its trajectory. Bounds are inclusive (to 1e-6, as the sampler's times are float32).

        ``grid_guidance``: strength (0-4) of beat-grid guidance (:mod:`accelerando.pipelines.grid_guidance`): at
        flow times in its ``GRID_INTERVAL`` (scaled by a remix's strength, as above) the clean-latent estimate is
        moved so that its onsets correlate with the requested beats. None: the model's ``default_grid_guidance``
        (0 when it has none); ``"off"``: 0.

        ``key_guidance``: strength (0-4) of key guidance (:mod:`accelerando.pipelines.key_guidance`), at the same
        flow times: the estimate's pitch-class content is moved towards the requested key's scale. None: the
        model's ``default_key_guidance``; ``"off"``: 0.
        """
        t_start = time.perf_counter()
        cfg = self.default_cfg if cfg is None else cfg
        rhythm_cfg = self.resolve_rhythm_cfg(rhythm_cfg)
        interval = self.resolve_guidance_interval(guidance_interval)
        grid_strength = self.resolve_grid_guidance(grid_guidance)
        key_strength = self.resolve_key_guidance(key_guidance)
        fr, sr = self.frame_rate, self.codec.sample_rate
        if strength is not None and not 0 <= strength <= 1:
            raise UserError(f"strength={strength}; use a value between 0 and 1")
        if init_audio is not None:
            if init_audio.dim() == 1:
                init_audio = init_audio[None]  # [S] -> [1, S]
            if init_audio.dim() != 2 or init_audio.shape[-1] == 0:
                raise UserError(f"init_audio must be [C, S] audio, got shape {tuple(init_audio.shape)}")
            if strength is not None:  # remix keeps the input's length
                duration = init_audio.shape[-1] / (init_sample_rate or sr)
        elif regions or strength is not None:
            raise UserError("regions and strength edit an input: pass init_audio as well")
        for a, b in regions or []:
            if not 0 <= a < b <= duration:
                raise UserError(f"region ({a}, {b}) must satisfy 0 <= start < end <= {duration:.2f} s")
        spec = self.check_inputs(
            prompt, {"bpm": bpm, "key": key, "meter": meter, "instruments": instruments}, duration, steps, cfg, sampler
        )
        n_frames = max(1, math.ceil(duration * fr))
        known = known_mask = x_init = None
        if init_audio is not None:
            init_mono = self._prepare_audio(init_audio, init_sample_rate or sr)  # [S_in] at the codec's rate
            z = self._encode_audio(init_mono)  # [1, T_in, D]
            if strength is not None:
                x_init = z[:, :n_frames].expand(num_outputs, -1, -1)
            else:
                t_in = min(z.shape[1], n_frames)
                known = torch.zeros(num_outputs, n_frames, z.shape[2], device=z.device)
                known[:, :t_in] = z[:, :t_in]
                known_mask = torch.zeros(num_outputs, n_frames, device=z.device)
                known_mask[:, :t_in] = 1
                for a, b in regions or []:
                    known_mask[:, max(0, int(a * fr)) : min(n_frames, math.ceil(b * fr))] = 0
        t_text = time.perf_counter()
        dev = self.device
        tokens, tmask, pooled = (x.to(dev) for x in self.text_encoder.encode([prompt]))
        ctrl = {k: v.to(dev) for k, v in collate([spec]).items()}
        phases = frame_phases(n_frames, fr, spec.bpm, spec.beats_per_bar)[None].to(dev)  # [1, T, 4]
        b = num_outputs
        branches = guidance_branches(cfg, rhythm_cfg)
        guided = branches > 1
        nb = branches * b

        def rep(x):
            return x.expand(nb, *x.shape[1:]) if x.shape[0] == 1 else torch.cat([x] * (nb // x.shape[0]))

        drop = torch.zeros(nb, dtype=torch.bool, device=dev)  # controls (and beat grid) dropped
        drop[b:] = True
        drop_text = torch.zeros(nb, dtype=torch.bool, device=dev)
        drop_text[(branches - 1) * b if guided else nb :] = True  # the last branch is the unconditional one
        phases = rep(phases)
        if guided and self.model.config.phase_guidance:
            phases = torch.where(drop[:, None, None], 0.0, phases)  # the unconditional branch has no beat grid
        with self._autocast():
            control = self.model.controls(**{k: rep(v) for k, v in ctrl.items()}, drop=drop)
        cond = DiTConditioning(
            text_tokens=rep(tokens),
            text_mask=rep(tmask),
            text_pooled=rep(pooled),
            control=control,
            phases=phases,
            known=None if known is None else rep(known),
            known_mask=None if known_mask is None else rep(known_mask),
            drop_text=drop_text,
        )

        cond_only = slice_conditioning(cond, b) if guided and interval is not None else cond
        active = interval  # the flow times guided in this call
        if interval is not None and x_init is not None:  # remix: the same share of a shorter trajectory
            active = (interval[0] * strength, interval[1] * strength)

        edit = {
            "scale": strength if x_init is not None else 1.0,
            "free": None if known_mask is None else 1 - known_mask,
            "known": known,
        }
        latent_guides = [
            g
            for g in (
                make_grid_guidance(phases[0], grid_strength, self.model, **edit),
                make_key_guidance(key, key_strength, self.model, self.codec, **edit),
            )
            if g is not None
        ]

        bf16 = use_bf16(self.device)  # decided once per call: the autocast and the bf16 weight copies agree

        def model_fn(x, t):
            now = guided and (active is None or active[0] - 1e-6 <= float(t[0]) <= active[1] + 1e-6)
            c = cond if now or not guided else cond_only
            xx = torch.cat([x] * branches) if now else x
            if known is not None:
                xx = torch.where(c.known_mask[..., None] > 0, c.known, xx)
            cast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
            with cast, self._weight_casts.swap(self.model.dit, enabled=bf16 and not torch.is_grad_enabled()):
                v = self.model.dit(xx, t[:1].expand(xx.shape[0]), c).float()
            v = combine_guidance(v, cfg, rhythm_cfg) if now else v
            for guide in latent_guides:  # moves of the clean estimate, after the backbone (grid, then key)
                v = guide(x, float(t[0]), v)
            return v

        scheduler = FlowMatchEulerScheduler() if sampler == "euler" else FlowMatchHeunScheduler()
        noise = randn_tensor((b, n_frames, self.model.config.latent_dim), generator, device=dev)
        t_sample = time.perf_counter()
        x = sample(
            model_fn,
            noise,
            scheduler,
            steps,
            t_max=strength if x_init is not None else 1.0,
            x_init=x_init,
            callback=callback,
        )
        if known is not None:
            x = torch.where(known_mask[..., None] > 0, known, x)
        t_decode = time.perf_counter()
        latent = self.model.denormalize(x).transpose(1, 2)  # [B, D, T]
        audio = self.codec.decode(latent)[..., : int(round(duration * sr))].cpu()  # [B, 1, S]
        if init_audio is not None and strength is None:
            audio = self._splice(audio, init_mono, regions)
        t_end = time.perf_counter()
        wall = t_end - t_start
        return AudioOutput(
            audio=audio.float(),
            sample_rate=sr,
            metadata={
                "prompt": prompt,
                "bpm": spec.bpm,
                "key": key,
                "meter": spec.meter,
                "steps": steps,
                "cfg": cfg,
                "rhythm_cfg": rhythm_cfg,
                "guidance_interval": None if interval is None else list(interval),
                "grid_guidance": grid_strength,
                "key_guidance": key_strength,
                "sampler": sampler,
                "duration": duration,
            },
            timings={
                "check_and_encode_s": t_text - t_start,
                "text_s": t_sample - t_text,
                "sampling_s": t_decode - t_sample,
                "decode_s": t_end - t_decode,
                "wall_s": wall,
                "rtf": duration * b / wall,
            },
        )

    def _splice(self, audio, orig, regions):
        """Keep ``orig`` (mono [S], codec rate) sample-exactly outside the generated parts, crossfading each seam."""
        sr = self.codec.sample_rate
        n = audio.shape[-1]
        keep = torch.zeros(n)
        keep[: min(n, orig.shape[-1])] = 1
        for a, b in regions or []:
            keep[int(a * sr) : int(b * sr)] = 0
        fade = max(1, int(_CROSSFADE_S * sr))
        # soften the keep mask only inside the generated side of each seam, so kept samples stay exact
        soft = keep.clone()
        ramp = torch.linspace(1, 0, fade + 2)[1:-1]
        edges = torch.nonzero(keep[1:] != keep[:-1]).flatten().tolist()
        for e in edges:
            if keep[e] == 1:  # kept -> generated at e+1
                seg = soft[e + 1 : e + 1 + fade]
                soft[e + 1 : e + 1 + fade] = torch.maximum(seg, ramp[: len(seg)])
            else:  # generated -> kept at e+1
                lo = max(0, e + 1 - fade)
                soft[lo : e + 1] = torch.maximum(soft[lo : e + 1], ramp.flip(0)[-(e + 1 - lo) :])
        padded = torch.zeros(n)
        padded[: min(n, orig.shape[-1])] = orig[:n]
        return soft * padded + (1 - soft) * audio
