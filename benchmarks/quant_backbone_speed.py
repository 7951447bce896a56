"""Backbone speed of the quantized execution paths against the shipped bf16-autocast default, in one process.

    .venv/bin/python benchmarks/quant_backbone_speed.py [--model PATH] [--seconds 30] [--repeats 7] [--threads 1]
        [--variants fp32,bf16,...] [--fresh-cache] [--kernel-source OTHER.cpp] [--json OUT]

One guided backbone evaluation (batch 2: the conditional and the unconditional branch) on ``--seconds`` of latent
(30 s -> 703 tokens -> M = 1406 rows per Linear; a U-Net: one row per frame at each level), the real backbone
(MusicDiT or MusicUNet) loaded with
``accelerando.pretrained.load_generator``. Variants, all built from the same float weights and timed round-robin
(one call of each per round, ``--repeats`` rounds after a warm-up call each, median):

- ``fp32``: float32, no autocast;
- ``bf16``: bf16 autocast (the shipped default; every ratio is ``variant / bf16``);
- ``w8a8-eager`` / ``w4a8-eager``: RTN (``quantize_`` + ``RTNConfig``, the presets' layers) on the eager path;
- ``w8a16-eager`` / ``w4a16-eager``: weight-only RTN (activations float; a U-Net's convs run as native convs on
  the dequantized weight);
- ``w8a8-fused`` / ``w4a8-fused``: the same modules under ``use_fused_kernels(True)`` (M marked dynamic);
- ``w8a8-fused-static``: ``use_fused_kernels(True, shapes="static")``;
- ``w4a8-fused-cache``: ``use_fused_kernels(True, cache_int4=True)`` (unpacked int8 copy of the 4-bit weights);
- ``w4a8g64-eager`` / ``w4a8g64-fused``: RTN W4A8 with a scale per group of 64 inputs, its group scales folded into
  int8 codes (one GEMM per layer, the default; ``use_group_folding``); ``w4a8g64-exact``: the same layers with one
  GEMM per group (``use_group_folding(False)``);
- ``w8a8t-eager`` / ``w4a8g64t-eager``: RTN with one activation scale per call (``act_scale="tensor"``), a
  U-Net's convs then run as oneDNN int8 convolutions (:mod:`accelerando.quant.int8_conv`); ``w8a8t-unfold``: the
  same layers on the unfold + int8 GEMM reference path (``use_int8_convs(False)``); ``w8a8tr-eager`` /
  ``w4a8g64tr-eager``: the same with ``reduce_range=True`` (weight codes within [-64, 64]), which a CPU without
  VNNI also runs through oneDNN's int8 convolution (elsewhere the per-tensor convs there are float32 convolutions
  of the codes);
- ``w4a8svd-eager`` / ``w4a8svdt-eager``: SVDQuant W4A8, rank 32, group 64, smoothing alpha 0.5, calibrated on
  one backbone call of the timed inputs (speed only: the quality figures come from ``quant_generator.py``), per-token
  or per-tensor activations (the latter through oneDNN, its low-rank branch as convolutions); ``w4a8svdtr-eager``:
  per tensor with ``reduce_range=True``;
- ``NAME+cnorm`` (any variant above): the same with the U-Net's per-frame norms compiled
  (:func:`accelerando.kernels.compile_frame_norms`, bit-identical output), e.g. ``bf16+cnorm``, ``w8a8t-eager+cnorm``;
- ``NAME+zp`` (after everything but ``+oldk``): the same with oneDNN given the activation zero point, the int8 conv path
  before the zero point was folded into the bias (:func:`accelerando.quant.int8_conv.conv_codes`). Faithful with
  ``+f32`` only: under bf16 autocast oneDNN then writes bf16, and that output's relayout runs eagerly;
- ``NAME+oldk`` (after everything else): the same with the norm-codes library (the C++ passes around the oneDNN
  int8 convolutions and the fused block norms) built from ``--kernel-source`` instead of the package's, e.g. the
  version before a change: ``git show HASH:src/accelerando/quant/csrc/norm_codes.cpp > /tmp/old.cpp``;
- ``NAME+f32`` (last but ``+zp`` and ``+oldk``): the same without bf16 autocast (float32 activations), what the
  pipeline runs on a CPU without bf16 arithmetic (:mod:`accelerando.modules.precision`), e.g. ``w8a8-eager+f32``
  against ``fp32``;
- ``NAME+fnorm`` (after ``+cnorm`` if both): the U-Net's residual blocks feed their oneDNN int8 convolutions from
  the fused norm + SiLU + quantize kernel (:func:`accelerando.quant.norm_codes.fuse_block_norms`), e.g.
  ``w8a8t-eager+cnorm+fnorm``;
- ``bf16-compiled`` / ``w8a8-compiled``: the whole backbone under ``torch.compile`` (static shapes; bf16, or RTN
  W8A8 on the eager modules traced into the same graph): what fusing everything around the GEMMs can give;
- ``bf16-unfold`` (U-Net only): bf16 with the quantizable convolutions run as unfold + Linear
  (:mod:`accelerando.quant.conv`), the float cost of the layout the quantized variants use;
- ``bf16-no-linears``: bf16 with the 48 quantizable block Linears (a U-Net: its unfolded conv Linears) replaced
  by a zero output of the right shape, so ``bf16 - bf16-no-linears`` is the time those Linears take (the part
  quantization can speed up: Amdahl ceiling).

The process keeps freed memory as the ``accelerando`` command does (:mod:`accelerando.runtime`;
``ACCELERANDO_MALLOC=default`` for glibc's own settings, as before 2026-11-27).

Also reported: each fused variant's first call (compile included; ``--fresh-cache`` points inductor at an empty
cache directory so this is the cold figure; without it a warm on-disk cache may serve it) and the first call at a
different length (``--seconds2``: recompile cost of a new clip length).
"""

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

DEFAULT_MODEL = Path.home() / ".cache" / "accelerando" / "generator_v0.safetensors"
ALL = (
    "fp32,bf16,bf16-no-linears,w8a8-eager,w8a8-fused,w8a8-fused-static,w4a8-eager,w4a8-fused,w4a8-fused-cache"
).split(",")


class _ZeroLinear(nn.Module):
    """Stands in for a Linear ``K -> N``: zeros of the autocast dtype (the cost of the Linear removed)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        dt = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        return x.new_zeros(*x.shape[:-1], self.n, dtype=dt)


def _compile_norms():
    from accelerando.kernels import compile_frame_norms

    return compile_frame_norms


def _fuse_norms():
    from accelerando.quant.norm_codes import fuse_block_norms

    return fuse_block_norms


# variant suffix -> (the in-place patch, imported when used; what the backbone lacks when it patches nothing)
_PATCHES = {
    "+cnorm": (_compile_norms, "no per-frame norms to compile"),
    "+fnorm": (_fuse_norms, "no per-frame-norm residual blocks to fuse"),
}


def _variant(name: str, base_dit, inputs=None):
    """(backbone module, fused-kernel settings or None, autocast on)."""
    if name.endswith("+oldk"):
        mod, opts, ac = _variant(name[: -len("+oldk")], base_dit, inputs)
        return mod, {**(opts or {"eager": True}), "kernel": "old"}, ac
    if name.endswith("+zp"):
        mod, opts, ac = _variant(name[: -len("+zp")], base_dit, inputs)
        return mod, {**(opts or {"eager": True}), "fold_zp": False}, ac
    if name.endswith("+f32"):
        mod, opts, _ = _variant(name[: -len("+f32")], base_dit, inputs)
        return mod, opts, False
    for suffix, (apply, missing) in _PATCHES.items():
        if name.endswith(suffix):
            mod, opts, ac = _variant(name[: -len(suffix)], copy.deepcopy(base_dit), inputs)
            if not apply()(mod):
                raise SystemExit(f"{name}: this backbone has {missing}")
            return mod, opts, ac
    from accelerando.quant import RTNConfig, SVDQuantConfig, calibrate_, quantize_
    from accelerando.quant.presets import prepare_backbone

    if name == "fp32":
        return base_dit, None, False
    if name == "bf16":
        return base_dit, None, True
    if name == "bf16-compiled":
        return torch.compile(base_dit, dynamic=False), None, True
    dit = copy.deepcopy(base_dit)
    layer_filter = prepare_backbone(dit)  # a U-Net's convs become unfold + Linear here
    if name == "bf16-unfold":
        return dit, None, True
    if name == "bf16-no-linears":
        for n, m in list(dit.named_modules()):
            for cn, c in list(m.named_children()):
                full = f"{n}.{cn}" if n else cn
                if layer_filter(c, full):
                    setattr(m, cn, _ZeroLinear(c.out_features))
        return dit, None, True
    if name.startswith("w4a8svd"):
        act = "tensor" if name.startswith("w4a8svdt") else "token"
        reduce_range = name.startswith("w4a8svdtr")  # weight codes within [-64, 64] (group scales folded in eighths)
        cfg = SVDQuantConfig(4, 8, rank=32, group_size=64, calibration=None, act_scale=act, reduce_range=reduce_range)
        x, t, cond = inputs
        with torch.no_grad():
            calibrate_(dit, cfg, [lambda m: m(x, t, cond)], filter_fn=layer_filter)
        return dit, None, True
    bits = 8 if name.startswith("w8") else 4
    a_bits = 16 if name.startswith(("w8a16", "w4a16")) else 8  # weight-only: float activations
    group = 64 if name.startswith("w4a8g64") else None
    head = name.split("-")[0]
    reduce_range = head.endswith("tr")  # w8a8tr-..., w4a8g64tr-...
    act = "tensor" if head.removesuffix("r").endswith("t") else "token"  # w8a8t-..., w4a8g64t-...
    cfg = RTNConfig(bits, a_bits, group, act_scale=act, reduce_range=reduce_range)
    quantize_(dit, cfg, filter_fn=layer_filter)
    if name.endswith("unfold"):
        return dit, {"eager": True, "convs": False}, True
    if name.endswith("exact"):
        return dit, {"eager": True, "fold": False}, True
    if name.endswith("eager"):
        return dit, None, True
    if name.endswith("compiled"):
        return torch.compile(dit, dynamic=False), None, True
    return (
        dit,
        {"shapes": "static" if name.endswith("static") else "dynamic", "cache_int4": name.endswith("cache")},
        True,
    )


def _conv_modes(module) -> dict[str, int]:
    """How many quantized convolutions of ``module`` ran as oneDNN int8 convolutions ("onednn") or float32
    convolutions of the codes ("float") in its last call (:mod:`accelerando.quant.int8_conv`'s packed weights)."""
    from accelerando.quant import int8_conv
    from accelerando.quant.linear import QuantLinear

    counts: dict[str, int] = {}
    for m in module.modules():
        hit = int8_conv._packed.get(m) if isinstance(m, QuantLinear) else None
        if hit is not None and hit[1] is not None:
            counts[hit[1].mode] = counts.get(hit[1].mode, 0) + 1
    return counts


_OTHER_KERNEL: dict = {"lib": None}  # the library built from --kernel-source, for the +oldk variants


def _other_kernel(source: str):
    """The norm-codes library built from ``source`` (same flags, same ABI as the package's), bound for calls."""
    from accelerando.quant import norm_codes

    try:
        return norm_codes.load_source(Path(source))
    except RuntimeError as err:
        raise SystemExit(f"--kernel-source {source!r}: {err}") from None


def _caller(dit, fused_opts, autocast: bool, inputs):
    from accelerando.quant import int8_conv, use_fused_kernels, use_group_folding
    from accelerando.quant.switches import use_int8_convs

    x, t, cond = inputs
    opts = dict(fused_opts or {})
    fold = opts.pop("fold", True)
    convs = opts.pop("convs", True)
    fold_zp = opts.pop("fold_zp", True)
    lib = None
    if opts.pop("kernel", None) == "old":
        lib = _OTHER_KERNEL["lib"]
        if lib is None:
            raise SystemExit("a +oldk variant without the library of --kernel-source")
    fused = fused_opts is not None and not opts.pop("eager", False)

    @torch.inference_mode()
    def run():
        from accelerando.quant import norm_codes

        own = norm_codes._state["lib"]
        int8_conv._state["fold_zp"] = fold_zp
        norm_codes._state["lib"] = lib or own
        try:
            with use_fused_kernels(fused, **opts), use_group_folding(fold), use_int8_convs(convs):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    return dit(x, t, cond)
        finally:
            int8_conv._state["fold_zp"] = True
            norm_codes._state["lib"] = own

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seconds2", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(ALL))
    ap.add_argument("--fresh-cache", action="store_true")
    ap.add_argument("--kernel-source", default=None, help="the norm-codes C++ source the +oldk variants run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from accelerando.runtime import apply_malloc_setting

    apply_malloc_setting()  # as the accelerando command runs (ACCELERANDO_MALLOC=default: glibc's own settings)
    if any("+oldk" in n for n in args.variants.split(",")):
        if args.kernel_source is None:
            raise SystemExit("the +oldk variants need --kernel-source")
        _OTHER_KERNEL["lib"] = _other_kernel(args.kernel_source)
    if args.fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
    torch.set_num_threads(args.threads)
    from accelerando.eval.efficiency import time_interleaved
    from accelerando.pretrained import load_generator
    from accelerando.quant.fused import fused_status
    from accelerando.testing.models import backbone_inputs

    dit = load_generator(args.model).dit.eval()
    inputs = backbone_inputs(dit.config, args.seconds)
    names = args.variants.split(",")
    calls, first, outs, modes = {}, {}, {}, {}
    for name in names:
        mod, opts, ac = _variant(name, dit, inputs)
        calls[name] = _caller(mod, opts, ac, inputs)
        t = time.perf_counter()
        outs[name] = calls[name]().float()  # warm-up; for the fused variants this call compiles
        first[name] = time.perf_counter() - t
        modes[name] = _conv_modes(mod)
    times = time_interleaved(calls, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med.get("bf16")
    results = {}
    for k in names:
        r = {"median_ms": 1e3 * med[k], "first_call_ms": 1e3 * first[k], "all_ms": [1e3 * v for v in times[k]]}
        if modes[k]:
            r["conv_modes"] = modes[k]
        if ref:
            r["ratio_to_bf16"] = med[k] / ref
        if "fp32" in med:  # the baseline on a CPU without bf16 arithmetic
            r["ratio_to_fp32"] = med[k] / med["fp32"]
        if "bf16" in outs and k != "bf16-no-linears":
            r["max_abs_diff_vs_bf16"] = float((outs[k] - outs["bf16"]).abs().max())
        results[k] = r
    # a new clip length: what a fused variant pays the first time it sees another M
    other = backbone_inputs(dit.config, args.seconds2)
    for k in [n for n in names if "fused" in n]:
        mod, opts, ac = _variant(k, dit, other)
        fn = _caller(mod, opts, ac, other)
        t = time.perf_counter()
        fn()
        first2 = time.perf_counter() - t
        t = time.perf_counter()
        fn()
        results[k]["new_length_first_call_ms"] = 1e3 * first2
        results[k]["new_length_second_call_ms"] = 1e3 * (time.perf_counter() - t)
    if "bf16" in med and "bf16-no-linears" in med:
        share = (med["bf16"] - med["bf16-no-linears"]) / med["bf16"]
        results["linear_share_of_bf16"] = share
        results["amdahl_max_speedup_if_linears_free"] = 1 / (1 - share) if share < 1 else float("inf")
    frames = round(args.seconds * dit.config.frame_rate)
    tokens = -(-frames // dit.config.patch) if hasattr(dit.config, "patch") else frames  # U-Net: one row per frame
    report = {
        "args": vars(args),
        "rows_per_linear": 2 * tokens,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "fused_status": {k: v for k, v in fused_status().items() if k != "first_call_seconds"},
        "results": results,
    }
    print(json.dumps(report, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
