"""Named quantization presets for the generator, and ``quantize_pipeline``, which calibrates and applies them.

>>> pipe = quantize_pipeline(TextToMusicPipeline.from_pretrained(), "w4a8-svd")  # doctest: +SKIP

========================  ==========================================================================================
preset                    config applied to the backbone's block Linears
========================  ==========================================================================================
``int8-dynamic``          :class:`Int8DynamicConfig` (torchao-equivalent W8A8 reference; no calibration)
``w8a8-rtn``              ``RTNConfig(8, 8)`` (per-channel int8 weights, per-token int8 activations, ``_int_mm``)
``w8a8-fp8``              :class:`Float8DynamicConfig` (e4m3 weights and per-token activations, ``_scaled_mm``)
``w4a8-rtn``              ``RTNConfig(4, 8, group_size)``
``w4a8-smooth``           ``SmoothQuantConfig(4, 8, alpha, group_size)``
``w4a8-svd``              ``SVDQuantConfig(4, 8, rank, group_size, calibration="mse", clip_search=True)``
``w4a8-svd-stft``         ``SVDQuantConfig(4, 8, rank, group_size, calibration="stft", clip_search=True)``
``w4a8-svd-stft-rec``     ``w4a8-svd-stft``, then low-rank recovery (:mod:`accelerando.quant.recovery`)
``w4a4-svd``              ``SVDQuantConfig(4, 4, rank, group_size, calibration="mse", clip_search=True)``
``w8a16-rtn``             ``RTNConfig(8, 16)``: weight-only int8 (activations float; U-Net convs run natively)
``w4a16-svd``             ``SVDQuantConfig(4, 16, rank, group_size, calibration="mse", clip_search=True)``: weight-only
                          4-bit + low rank
========================  ==========================================================================================

Which layers (:func:`dit_filter`): inside every DiT block, the self-attention ``q``/``kv``/``out``, the
cross-attention ``q``/``kv``/``out`` and the MLP's two Linears -- all the per-token GEMMs, i.e. nearly all of the
backbone's FLOPs and weight bytes. Kept in float, and why:

- ``in_proj``: the input embedding of the noisy latent, the known latent, its mask and the beat phases. Its inputs
  mix quantities of very different scales (a 0/1 mask next to latents and sin/cos phases), so per-token activation
  quantization would crush the small ones, and its error enters every block.
- ``out_proj`` / ``out_mod``: the final projection to the velocity; its error goes straight into every sampler
  step's update, without any later layer to average it out.
- ``t_embed``, ``adaln``, ``pooled_proj``, ``text_proj``: conditioning paths that run once per sample (``[B]`` rows)
  or once per text token, so they cost almost nothing, while ``adaln`` sets the scale, shift and gate of every block:
  an error there is a systematic, token-wide gain error. The control encoder is left alone for the same reason.

U-Net backbones (:func:`unet_conv_filter`): every residual block's ``conv1``, ``conv2`` and 1x1 ``skip``, and the
down- and upsampling convolutions, each first converted to unfold + Linear (:mod:`accelerando.quant.conv`), so the
same configs, calibration and kernels apply with ``K = C_in * kernel``; :func:`unet_filter` selects those Linears.
In float for the same reasons as above: ``in_conv`` (the mixed-scale input features), ``out_conv`` (the velocity),
and the per-sample conditioning Linears ``t_embed``, ``pooled_proj`` and each block's ``mod``. The stft search unit
(``stft_unit="block"``) is one residual block or one resampling conv.

Calibration runs across the denoising trajectory: ``calib_prompts`` train-split prompts (the shipped
:mod:`~accelerando.quant.calib_prompts` set, never test-split prompts) are generated with the float pipeline, with
classifier-free guidance on (``cfg`` != 1, so both the conditional and the unconditional branch run, in one batch),
prompt ``i`` with seed ``seed + i`` and ``steps + 2 * (i % 3)`` sampler steps, so the timesteps differ between
prompts. Forward pre-hooks on the backbone's Linears record every call: all timesteps, both branches. The
generations use the model's own guidance defaults, so a model with a ``default_guidance_interval`` contributes the
conditional branch alone at its unguided steps: calibration sees what the deployed sampler runs (deliberate; the
recovery teacher alone guides every step, see :mod:`accelerando.quant.recovery`).

``w4a8-svd-stft`` additionally builds an end-to-end objective: ``stft_prompts`` other train prompts are generated
by the float pipeline (``stft_seconds`` long, ``stft_steps`` steps, seeds ``seed + 1000 + i``) and decoded through
the codec; the objective regenerates them with the quantized backbone (same prompts, seeds and noise) and returns the
mean complex-STFT error (``accelerando.eval.paired.complex_stft_error``) against the float audio. The per-unit search
is :func:`accelerando.quant.stft_search.stft_refine_`; ``stft_unit="block"`` (default) searches each DiT block's
layers together, ``"layer"`` each layer alone (8x the objective calls). With ``stft_method="sensitivity"`` there
is no whole-pipeline objective: the float pipeline's teacher-forced trajectories of the ``stft_prompts`` prompts
give each layer output's complex-STFT sensitivity, and each layer picks its alpha, low-rank split and clipping on
the sensitivity-weighted output error (:mod:`accelerando.quant.sensitivity`); ``"uniform"`` is that with every
weight 1 and the plain split only (the ablation).
"""

import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from accelerando.errors import UserError
from accelerando.models.unet import MusicUNet
from accelerando.quant.api import default_filter, quant_plan, quantized_layers
from accelerando.quant.calibrate import calibrate_, record_activations
from accelerando.quant.configs import (
    Float8DynamicConfig,
    Int8DynamicConfig,
    QuantConfig,
    RTNConfig,
    SmoothQuantConfig,
    SVDQuantConfig,
)
from accelerando.quant.conv import fold_convs_, unfold_convs_

__all__ = [
    "PRESETS",
    "PRESET_OPTIONS",
    "preset_config",
    "dit_filter",
    "unet_filter",
    "prepare_backbone",
    "quantize_pipeline",
    "run_prompt",
    "state_bytes",
    "size_breakdown",
    "save_quantized_generator",
]

PRESETS = (
    "int8-dynamic",
    "w8a8-rtn",
    "w8a16-rtn",
    "w8a8-fp8",
    "w4a8-rtn",
    "w4a8-smooth",
    "w4a8-svd",
    "w4a8-svd-stft",
    "w4a8-svd-stft-rec",
    "w4a4-svd",
    "w4a16-svd",
)
RECOVER_PRESETS = ("w4a8-svd-stft-rec",)  # presets that run low-rank recovery by default
DEFAULT_RECOVER_STEPS = 60
OTHER_LINEARS = ("float", "w8a16")
STFT_METHODS = ("search", "sensitivity", "uniform")  # see quantize_pipeline's stft_method
# input features per weight scale of the 4-bit presets: on the built-in U-Net, one scale per output channel lost 21%
# of key adherence and group 64 lost 7%; folded group scales (quant/linear.py) cost no CPU speed (BENCHMARKS.md)
DEFAULT_GROUP_SIZE = 64

# option -> default; see quantize_pipeline
PRESET_OPTIONS: dict[str, object] = {
    "rank": 32,
    "group_size": DEFAULT_GROUP_SIZE,
    "alpha": 0.5,
    "act_scale": "token",
    "reduce_range": False,
    "clip_search": None,
    "steps": 8,
    "cfg": 3.0,
    "seconds": 5.0,
    "seed": 0,
    "max_rows": 1024,
    "stft_prompts": None,
    "stft_seconds": 2.0,
    "stft_steps": 4,
    "stft_unit": "block",
    "stft_min_gain": 0.0,
    "stft_accept": "mean",
    "stft_mode": "teacher",
    "stft_method": "sensitivity",
    "stft_projections": 2,
    "other_linears": "float",
    "recover_steps": None,
    "recover_prompts": 8,
    "recover_seconds": 5.0,
    "recover_lr": 2e-4,
    "recover_scale_lr": 3e-4,
    "recover_scales": True,
    "recover_lowrank": True,
    "prompts": None,
    "callback": None,
}

_DIT_LAYER = re.compile(r"(^|\.)blocks\.\d+\.(attn\.(q|kv|out)|cross\.(q|kv|out)|mlp\.(0|2))$")
_BLOCK = re.compile(r"^(.*?blocks\.\d+)\.")
_UNET_CONV = re.compile(r"^((down|up)\.\d+\.\d+|mid\.\d+)\.(conv1|conv2|skip)$|^(downsample|upsample)\.\d+$")
_UNET_BLOCK = re.compile(r"^((down|up)\.\d+\.\d+|mid\.\d+|downsample\.\d+|upsample\.\d+)\.")


def dit_filter(module: nn.Module, name: str) -> bool:
    """The DiT block Linears the presets quantize (see the module docstring for what stays in float and why)."""
    return bool(_DIT_LAYER.search(name)) and default_filter(module, name)


def unet_conv_filter(module: nn.Module, name: str) -> bool:
    """The U-Net convolutions the presets quantize: every residual block's ``conv1``, ``conv2`` and 1x1 ``skip``, and
    the down- and upsampling convolutions (names relative to the backbone)."""
    return type(module) is nn.Conv1d and bool(_UNET_CONV.match(name))


def unet_filter(module: nn.Module, name: str) -> bool:
    """The ``linear`` of each :func:`unet_conv_filter` convolution, once unfolded
    (:func:`~accelerando.quant.conv.unfold_convs_`)."""
    parent, _, leaf = name.rpartition(".")
    return leaf == "linear" and bool(_UNET_CONV.match(parent)) and default_filter(module, name)


def other_filter(module: nn.Module, name: str) -> bool:
    """The backbone's Linears outside the DiT blocks (``in_proj``, ``t_embed``, ``text_proj``, ``pooled_proj``,
    ``adaln``, ``out_mod``, ``out_proj``): what ``other_linears="w8a16"`` quantizes weight-only."""
    return not _DIT_LAYER.search(name) and ".blocks." not in f".{name}" and default_filter(module, name)


def size_breakdown(model: nn.Module) -> dict[str, int]:
    """Bytes of ``model``'s state dict as held, by kind: ``residual_codes`` (packed integer weights), ``weight_scales``,
    ``lowrank`` (``lora_up`` + ``lora_down``), ``smoothing`` (``inv_smooth`` and ``alpha``), ``quant_bias`` (biases
    of quantized layers), ``float`` (everything else: unquantized layers, norms, embeddings), and ``total``."""
    out = dict.fromkeys(("residual_codes", "weight_scales", "lowrank", "smoothing", "quant_bias", "float"), 0)
    quantized = [n + "." for n, m in model.named_modules() if hasattr(m, "quant_config")]
    for key, t in model.state_dict().items():
        nbytes = t.numel() * t.element_size()
        leaf = key.rsplit(".", 1)[-1]
        if not any(key.startswith(q) for q in quantized):
            kind = "float"
        else:
            kind = {
                "qweight": "residual_codes",
                "weight_scale": "weight_scales",
                "lora_up": "lowrank",
                "lora_down": "lowrank",
                "inv_smooth": "smoothing",
                "alpha": "smoothing",
                "bias": "quant_bias",
            }.get(leaf, "float")
        out[kind] += nbytes
    out["total"] = sum(out.values())
    return out


def prepare_backbone(backbone: nn.Module) -> Callable[[nn.Module, str], bool]:
    """The filter of the layers the presets quantize in ``backbone``: :func:`dit_filter` for a DiT; for a U-Net,
    :func:`unet_filter`, after converting its :func:`unet_conv_filter` convolutions to unfold + Linear in place
    (same outputs up to float rounding)."""
    if isinstance(backbone, MusicUNet):
        unfold_convs_(backbone, unet_conv_filter)
        return unet_filter
    return dit_filter


def _block_of(name: str) -> str:
    """The search unit of a layer: its DiT block, or its U-Net residual block / resampling conv."""
    m = _BLOCK.match(name) or _UNET_BLOCK.match(name)
    return m.group(1) if m else name


def preset_config(
    preset: str,
    rank: int = 32,
    group_size: int | None = DEFAULT_GROUP_SIZE,
    alpha: float = 0.5,
    act_scale: str = "token",
    reduce_range: bool = False,
    clip_search: bool | None = None,
) -> QuantConfig:
    """The config a preset applies; ``UserError`` naming an unknown preset and listing the valid ones, or a bad option.

    ``act_scale="tensor"``: the A8 presets with one activation scale per call, which runs a U-Net's quantized
    convolutions as oneDNN int8 convolutions on the CPU (``accelerando.quant.int8_conv``). ``reduce_range=True``:
    weight codes within [-64, 64], so that CPUs without VNNI run those convolutions through oneDNN too
    (``QuantLinear``). ``clip_search``: the MSE stage of the SVD presets picks each layer's residual clipping
    together with its alpha (``SVDQuantConfig``); None (default) turns it on for them, where it lowered the
    teacher-forced complex-STFT error by 9% per token (BENCHMARKS.md, "Residual clipping in the MSE calibration").
    """
    cfg = _preset_config(preset, rank, group_size, alpha)
    if clip_search is None:
        clip_search = isinstance(cfg, SVDQuantConfig) and cfg.calibration in ("mse", "stft")
    if act_scale not in ("token", "tensor"):
        raise UserError(f"act_scale={act_scale!r}; use 'token' or 'tensor'")
    for name, flag in (("reduce_range", reduce_range), ("clip_search", clip_search)):
        if not isinstance(flag, bool):
            raise UserError(f"{name}={flag!r}; use True or False")
    if reduce_range and act_scale != "tensor":  # only per-tensor A8 convolutions run through oneDNN
        raise UserError("reduce_range=True needs act_scale='tensor' (CLI: --reduce-range with --act-scale tensor)")
    given = (("act_scale", act_scale), ("reduce_range", reduce_range), ("clip_search", clip_search))
    changes = {k: v for k, v in given if v not in ("token", False)}
    missing = [k for k in changes if not hasattr(cfg, k)]
    if missing:
        raise UserError(f"preset {preset!r} has no {missing[0]} option (it is fixed for this preset)")
    try:
        return replace(cfg, **changes)
    except ValueError as err:
        raise UserError(f"preset {preset!r}: {err}") from None


def _preset_config(preset: str, rank: int, group_size: int | None, alpha: float) -> QuantConfig:
    try:
        if preset == "int8-dynamic":
            return Int8DynamicConfig()
        if preset == "w8a8-rtn":
            return RTNConfig(8, 8)
        if preset == "w8a8-fp8":
            return Float8DynamicConfig()
        if preset == "w4a8-rtn":
            return RTNConfig(4, 8, group_size)
        if preset == "w4a8-smooth":
            return SmoothQuantConfig(4, 8, alpha=alpha, group_size=group_size)
        if preset == "w4a8-svd":
            return SVDQuantConfig(4, 8, rank=rank, group_size=group_size, calibration="mse")
        if preset in ("w4a8-svd-stft", "w4a8-svd-stft-rec"):
            return SVDQuantConfig(4, 8, rank=rank, group_size=group_size, calibration="stft")
        if preset == "w4a4-svd":
            return SVDQuantConfig(4, 4, rank=rank, group_size=group_size, calibration="mse")
        if preset == "w8a16-rtn":
            return RTNConfig(8, 16)
        if preset == "w4a16-svd":
            return SVDQuantConfig(4, 16, rank=rank, group_size=group_size, calibration="mse")
    except ValueError as err:
        raise UserError(f"preset {preset!r}: {err}") from None
    raise UserError(f"unknown quantization preset {preset!r}; valid presets: {', '.join(PRESETS)}")


def state_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s state dict as held (parameters and buffers, quantized codes and scales included)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# Guidance applied to the velocity outside the backbone (pipelines/grid_guidance.py): off wherever recorded backbone
# calls must reproduce a trajectory (the recovery teacher) or a backbone replays another trajectory's states (the stft
# objective's teacher forcing), since the step added after the backbone would not be replayed.
NO_LATENT_GUIDANCE = {"grid_guidance": "off", "key_guidance": "off"}


def run_prompt(
    pipeline, p: dict, seconds: float, steps: int, cfg: float, seed: int, guidance_interval=None, **sampling
) -> torch.Tensor:
    """Generate manifest-style prompt ``p`` (caption and labels) at ``seed``; audio [1, 1, S]. ``guidance_interval``
    as the pipeline takes it (None: the model's default); ``sampling``: further pipeline keywords (e.g.
    :data:`NO_LATENT_GUIDANCE`)."""
    out = pipeline(
        p["caption"],
        bpm=float(p["bpm"]),
        key=p["key"],
        meter=p["meter"],
        instruments=p.get("instrumentation"),
        duration=seconds,
        steps=steps,
        cfg=cfg,
        guidance_interval=guidance_interval,
        generator=torch.Generator().manual_seed(seed),
        **sampling,
    )
    return out.audio  # [1, 1, S]


def _group_overrides(dit: nn.Module, cfg: QuantConfig, plan: dict[str, QuantConfig]) -> dict[str, QuantConfig]:
    """Per-channel (``group_size=None``) for layers whose in_features the preset's group size does not divide."""
    gs = getattr(cfg, "group_size", None)
    if not gs:
        return {}
    return {n: replace(c, group_size=None) for n, c in plan.items() if dit.get_submodule(n).in_features % gs}


@contextmanager
def _fold_back_on_failure(backbone: nn.Module):
    """On an exception inside, a backbone with nothing quantized yet gets its unfolded convs back as ``nn.Conv1d``
    (the float model as it came, same state dict keys); the exception propagates."""
    try:
        yield
    except BaseException:
        if not quantized_layers(backbone):
            fold_convs_(backbone)
        raise


def _int_option(name: str, value, low: int) -> None:
    """``UserError`` naming ``name`` unless ``value`` is an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{name}={value!r}; use an int >= {low}")


def quantize_pipeline(pipeline, preset: str, calib_prompts: int = 8, **options):
    """Quantize ``pipeline.model.dit`` (the generator backbone) in place with a named preset; returns ``pipeline``.

    Args:
        pipeline: a :class:`~accelerando.pipelines.text_to_music.TextToMusicPipeline` with a float generator.
        preset: one of :data:`PRESETS`.
        calib_prompts: how many shipped train-split calibration prompts to generate (1-64) for calibrated presets
            (``w4a8-smooth``, the SVD ones); RTN / int8-dynamic presets run no calibration.
        **options: ``rank`` (32), ``group_size`` (64 for the 4-bit presets; None: per output channel; layers it does not
            divide stay per channel), ``alpha`` (0.5, SmoothQuant), ``act_scale`` ("token", or "tensor" for A8
            presets: one uint8 activation scale per call, a U-Net's convs then run as oneDNN int8 convolutions),
            ``reduce_range`` (False; True: weight codes within [-64, 64], 8-bit weights rounded to 7 bits, so that
            a CPU without VNNI runs the per-tensor convolutions through oneDNN too), ``clip_search`` (None: on for
            the SVD presets, whose MSE stage then picks each layer's residual clipping with its alpha; False: alpha
            only, as before 2026-11-27),
            ``steps`` (8), ``cfg`` (3.0), ``seconds`` (5.0:
            calibration clip length), ``seed`` (0), ``max_rows`` (1024: activation rows kept per layer),
            ``stft_prompts`` (4 for the sensitivity form, 2 for the search), ``stft_seconds`` (2.0), ``stft_steps``
            (4), ``stft_unit`` ("block" or "layer"),
            ``stft_accept`` ("mean", or "all": a change must not raise any objective prompt's error),
            ``stft_method`` ("sensitivity", the default: each layer on its output error weighted by the decoded
            audio's complex-STFT sensitivity, :mod:`accelerando.quant.sensitivity`, recorded on the
            ``stft_prompts`` prompts generated with ``seconds`` and ``steps``; "search": the end-to-end search of
            :mod:`accelerando.quant.stft_search`, to which ``stft_seconds`` / ``stft_steps`` / ``stft_unit`` /
            ``stft_accept`` / ``stft_min_gain`` / ``stft_mode`` apply; "uniform": the sensitivity form's rows and
            alpha x clipping grid with every output weighted alike and the plain split, an ablation),
            ``stft_projections`` (2: random STFT projections per sensitivity prompt),
            ``prompts`` (a list of prompt dicts like the shipped ones, replacing them; train-split only),
            ``other_linears`` ("float": the Linears outside the DiT blocks stay float32; "w8a16": they become
            weight-only int8, see :func:`other_filter`), ``recover_steps`` (low-rank recovery steps,
            :mod:`accelerando.quant.recovery`; default 60 for ``w4a8-svd-stft-rec``, 0 = off otherwise; SVD /
            SmoothQuant presets only), ``recover_prompts`` (8: further train prompts, disjoint from the others),
            ``recover_seconds`` (5.0), ``recover_lr`` (2e-4, relative), ``recover_scale_lr`` (3e-4), ``recover_scales``
            (True: train the residual's weight scales too), ``recover_lowrank`` (True: train the low-rank factors),
            ``callback`` (``(stage, done, total)`` after each calibration generation / sensitivity prompt / stft
            objective call or refined layer / recovery step; stages "calibrate", "sensitivity", "stft", "recover").

    The report (``pipeline.model.quant_report``): preset, config, weight bytes before / after (whole generator state
    dict, and the quantized layers alone with their float version counted at 2 bytes per weight as bf16),
    calibration seconds, per-layer SQNR (dB) of each quantized layer against its float version on recorded
    calibration activations, and the stft search report for ``w4a8-svd-stft``.
    """
    unknown = sorted(set(options) - set(PRESET_OPTIONS))
    if unknown:
        raise UserError(f"unknown quantize_pipeline option(s) {unknown}; valid: {', '.join(PRESET_OPTIONS)}")
    o = {**PRESET_OPTIONS, **options}
    cfg = preset_config(
        preset, o["rank"], o["group_size"], o["alpha"], o["act_scale"], o["reduce_range"], o["clip_search"]
    )
    o["clip_search"] = bool(getattr(cfg, "clip_search", False))  # the report records what ran
    if o["stft_unit"] not in ("block", "layer"):
        raise UserError(f"stft_unit={o['stft_unit']!r}; use 'block' or 'layer'")
    if o["stft_method"] not in STFT_METHODS:
        raise UserError(f"stft_method={o['stft_method']!r}; use one of {', '.join(STFT_METHODS)}")
    _int_option("stft_projections", o["stft_projections"], 1)
    if o["stft_accept"] not in ("mean", "all"):
        raise UserError(f"stft_accept={o['stft_accept']!r}; use 'mean' or 'all'")
    if o["cfg"] == 1.0:
        raise UserError("cfg=1 runs only the conditional branch; calibrate with guidance on (e.g. cfg=3)")
    if not isinstance(calib_prompts, int) or calib_prompts < 1:
        raise UserError(f"calib_prompts={calib_prompts!r}; use an int >= 1")
    if o["other_linears"] not in OTHER_LINEARS:
        raise UserError(f"other_linears={o['other_linears']!r}; use one of {', '.join(OTHER_LINEARS)}")
    rec_steps = o["recover_steps"]
    if rec_steps is None:
        rec_steps = DEFAULT_RECOVER_STEPS if preset in RECOVER_PRESETS else 0
    _int_option("recover_steps", rec_steps, 0)
    if rec_steps and not isinstance(cfg, SmoothQuantConfig | SVDQuantConfig):
        raise UserError(f"low-rank recovery needs an SVD or SmoothQuant preset, not {preset!r}")
    n_rec = o["recover_prompts"] if rec_steps else 0
    if rec_steps:
        _int_option("recover_prompts", n_rec, 1)
    callback: Callable | None = o["callback"]
    model = pipeline.model
    dit = model.dit
    if quantized_layers(dit):
        raise UserError("this pipeline's generator is already quantized; start from the float model")

    bytes_before = state_bytes(model)
    bytes_bf16 = sum(
        2 * t.numel() if t.is_floating_point() else t.numel() * t.element_size() for t in model.state_dict().values()
    )
    t0 = time.perf_counter()
    prompts = o["prompts"]
    if prompts is None:
        from accelerando.quant.calib_prompts import load_calibration_prompts

        prompts = load_calibration_prompts()
    if any(p.get("split", "train") != "train" for p in prompts):
        raise UserError("calibration prompts must come from the train split")
    stft = isinstance(cfg, SVDQuantConfig) and cfg.calibration == "stft"
    n_stft = o["stft_prompts"] if stft else 0
    if stft and n_stft is None:  # the search evaluates whole generations per candidate: fewer, shorter prompts
        n_stft = 2 if o["stft_method"] == "search" else 4
    if stft:
        _int_option("stft_prompts", n_stft, 1)
    _int_option("max_rows", o["max_rows"], 1)
    if o["stft_mode"] not in ("teacher", "free"):
        raise UserError(f"stft_mode={o['stft_mode']!r}; use 'teacher' or 'free'")
    if calib_prompts + n_stft + n_rec > len(prompts):
        raise UserError(
            f"calib_prompts={calib_prompts} (+ {n_stft} for the stft objective, + {n_rec} for recovery) exceeds "
            f"the {len(prompts)} calibration prompts available"
        )
    # every argument is checked: from here the backbone changes (a U-Net's convs unfold, folded back on failure)
    layer_filter = prepare_backbone(dit)
    with _fold_back_on_failure(dit):
        plan = quant_plan(dit, cfg, layer_filter)
        if not plan:
            raise UserError(f"the generator has no layers the presets quantize ({layer_filter.__name__} matched none)")
        overrides = _group_overrides(dit, cfg, plan)
        plan.update(overrides)
        floats = {n: dit.get_submodule(n) for n in plan}
        float_weights_bf16 = sum(
            2 * m.weight.numel() + 2 * (0 if m.bias is None else m.bias.numel()) for m in floats.values()
        )
        calib = prompts[:calib_prompts]
        objective_prompts = prompts[calib_prompts : calib_prompts + n_stft]  # disjoint from the activation prompts
        rec_start = calib_prompts + n_stft
        recover_prompts = prompts[rec_start : rec_start + n_rec]  # disjoint from both
        teacher = None
        if rec_steps:  # the float pipeline's trajectories, recorded before anything is quantized
            from accelerando.quant.recovery import record_teacher

            teacher = record_teacher(
                pipeline, recover_prompts, o["recover_seconds"], o["steps"], o["cfg"], o["seed"] + 2000
            )

        def report(stage, done, total):
            if callback:
                callback(stage, done, total)

        def gen_batch(i, p):
            def run(_model):
                run_prompt(pipeline, p, o["seconds"], o["steps"] + 2 * (i % 3), o["cfg"], o["seed"] + i)
                report("calibrate", i + 1, len(calib))

            return run

        # one pass records every planned layer (rows for the SQNR report and for mse / stft alpha choice)
        stats = record_activations(
            dit, dict.fromkeys(plan, True), [gen_batch(i, p) for i, p in enumerate(calib)], o["max_rows"], o["seed"]
        )
        objective = sensitivity = None
        if stft and o["stft_method"] != "search":  # the float model's sensitivities, before quantizing
            from accelerando.quant.recovery import record_teacher
            from accelerando.quant.sensitivity import record_sensitivity

            sens_teacher = record_teacher(
                pipeline, objective_prompts, o["seconds"], o["steps"], o["cfg"], o["seed"] + 1000
            )
            sensitivity = record_sensitivity(
                pipeline,
                sens_teacher,
                list(plan),
                o["max_rows"],
                o["stft_projections"],
                o["seed"],
                callback=lambda d, t: report("sensitivity", d, t),
            )
            del sens_teacher
            if o["stft_method"] == "uniform":  # the ablation: the same rows and grid, every output weighted alike
                for d in sensitivity.values():
                    d["w"] = torch.ones_like(d["w"])
        elif stft:
            objective = _stft_objective(pipeline, objective_prompts, o)
        calibrate_(
            dit,
            cfg,
            [],
            filter_fn=layer_filter,
            overrides=overrides,
            objective=objective,
            unit_fn=_block_of if o["stft_unit"] == "block" else None,
            stats=stats,
            callback=(lambda d, t, e: report("stft", d, t)) if stft else None,
            min_gain=o["stft_min_gain"],
            accept=o["stft_accept"],
            sensitivity=sensitivity,
        )
        if sensitivity is not None:
            dit.stft_calibration["method"] = o["stft_method"]
    if o["other_linears"] == "w8a16":  # weight-only int8 for the rest: activations stay float, no calibration
        from accelerando.quant.api import quantize_

        quantize_(dit, RTNConfig(8, 16), filter_fn=other_filter)
    recovery = None
    if rec_steps:
        from accelerando.quant.recovery import recover_

        recovery = recover_(
            pipeline,
            teacher,
            steps=rec_steps,
            lr=o["recover_lr"],
            scale_lr=o["recover_scale_lr"],
            train_scales=bool(o["recover_scales"]),
            train_lowrank=bool(o["recover_lowrank"]),
            callback=lambda d, t, _loss: report("recover", d, t),
        )
    calib_seconds = time.perf_counter() - t0

    layers = []
    with torch.no_grad():
        for n, lin in floats.items():
            q = dit.get_submodule(n)
            x = stats[n]["sample"]
            from accelerando.testing.sqnr import sqnr

            layers.append(
                {
                    "name": f"dit.{n}",
                    "config": q.quant_config.to_dict(),
                    "in_features": lin.in_features,
                    "out_features": lin.out_features,
                    "sqnr_db": sqnr(lin(x), q(x)),
                    "alpha": float(q.alpha) if hasattr(q, "alpha") else None,
                    "rank": getattr(q, "rank", None),
                }
            )
    quant_bytes = sum(state_bytes(dit.get_submodule(n)) for n in plan)
    others = [n for n, m in dit.named_modules() if n not in plan and hasattr(m, "quant_config")]
    sq = sorted(layer["sqnr_db"] for layer in layers)
    model.quant_report = {
        "preset": preset,
        "config": cfg.to_dict(),
        "options": {k: v for k, v in o.items() if k not in ("prompts", "callback")},
        "calib_prompts": [p.get("clip_id", p["caption"]) for p in calib],
        "stft_objective_prompts": [p.get("clip_id", p["caption"]) for p in objective_prompts],
        "weight_bytes_before": bytes_before,
        "weight_bytes_after": state_bytes(model),
        "weight_bytes_bf16": bytes_bf16,
        "size": size_breakdown(model),
        "other_quantized_layers": [f"dit.{n}" for n in others],
        "quantized_layer_bytes_before_bf16": float_weights_bf16,
        "quantized_layer_bytes_after": quant_bytes,
        "calib_seconds": calib_seconds,
        "sqnr_db": {"min": sq[0], "median": sq[len(sq) // 2], "mean": sum(sq) / len(sq)},
        "layers": layers,
        "stft_calibration": getattr(dit, "stft_calibration", None),
        "recovery": recovery,
        "recover_prompts": [p.get("clip_id", p["caption"]) for p in recover_prompts],
    }
    return pipeline


class _TeacherForcing:
    """Patch ``dit.forward`` (instance attribute) to record the float model's inputs along its own trajectory, or to
    run the (quantized) model on those recorded inputs instead of its own: teacher forcing."""

    def __init__(self, dit: nn.Module):
        self.dit, self.inputs, self.mode, self.k = dit, [], None, 0

    def __enter__(self):
        cls_forward = type(self.dit).forward

        def forward(x, t, cond):
            if self.mode == "record":
                self.inputs.append(x.detach().clone())
            else:
                x = self.inputs[self.k].to(x.dtype)
                self.k += 1
            return cls_forward(self.dit, x, t, cond)

        self.dit.forward = forward
        return self

    def __exit__(self, *exc):
        del self.dit.forward


def _stft_objective(pipeline, prompts: list[dict], o: dict) -> Callable[[nn.Module], list[float]]:
    """The end-to-end objective of ``calibration="stft"``: mean complex-STFT error of the decoded audio against the
    float pipeline's on ``prompts`` (same seeds, so the same noise).

    ``stft_mode="free"``: the quantized pipeline samples its own trajectory. ``"teacher"`` (default): at every
    sampler step the quantized backbone sees the float trajectory's state (recorded once), and the sampler
    integrates its velocities from the same noise; the audio error is then the error the quantization adds over the
    whole trajectory to first order, without the chaotic divergence of two free-running trajectories, which on a few
    calibration clips is mostly noise that the search would otherwise fit.
    """
    from accelerando.eval.paired import complex_stft_error

    mode = o["stft_mode"]
    if mode not in ("teacher", "free"):
        raise UserError(f"stft_mode={mode!r}; use 'teacher' or 'free'")
    args = [(p, o["stft_seconds"], o["stft_steps"], o["cfg"], o["seed"] + 1000 + i) for i, p in enumerate(prompts)]
    recorders = [_TeacherForcing(pipeline.model.dit) for _ in args]
    ref = []
    for rec, a in zip(recorders, args, strict=True):
        rec.mode = "record"
        with rec:
            ref.append(run_prompt(pipeline, *a, **NO_LATENT_GUIDANCE))

    def objective(_model) -> list[float]:
        errs = []
        for rec, a, r in zip(recorders, args, ref, strict=True):
            if mode == "teacher":
                rec.mode, rec.k = "replay", 0
                with rec:
                    y = run_prompt(pipeline, *a, **NO_LATENT_GUIDANCE)
            else:
                y = run_prompt(pipeline, *a, **NO_LATENT_GUIDANCE)
            errs.append(complex_stft_error(y[0], r[0]))
        return errs  # one error per prompt: the search averages them (and with stft_accept="all" checks each)

    return objective


def save_quantized_generator(model: nn.Module, path, extra: dict | None = None):
    """Write a quantized :class:`~accelerando.models.generator.MusicGenerator` to ``path`` (safetensors, atomic).

    The metadata (``accelerando.quant/1``) holds each quantized layer's versioned config and ``model_config``
    ``{"kind": "generator", "config": <MusicDiTConfig dict>, **extra}``, which
    :func:`accelerando.pretrained.load_generator` recognises.
    """
    from accelerando.quant.io import save_quantized

    return save_quantized(
        model, path, model_config={"kind": "generator", "config": model.config.to_dict(), **(extra or {})}
    )
