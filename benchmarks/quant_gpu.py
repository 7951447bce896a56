"""GPU kernels of the quantized linears: correctness against the float layer and speed against cuBLAS bf16.

    python benchmarks/quant_gpu.py [--model builtin] [--seconds 30] [--json OUT.json]

Needs a CUDA device (and Triton for the ``triton`` variants). Two parts, one process, one card:

1. **GEMMs**: every distinct ``(M, K, N)`` of the quantized Linears (a U-Net's convolutions unfolded, ``K = C_in *
   kernel``) in one guided backbone call on ``--seconds`` of latent (batch 2), plus two large square shapes where
   the card is compute-bound. Variants: ``bf16`` (cuBLAS via ``F.linear``), ``int_mm`` (``torch._int_mm`` on
   pre-quantized operands: the bare int8 GEMM), ``fp8_mm`` (``torch._scaled_mm`` on pre-quantized e4m3 operands
   with row-wise scales, Hopper's FP8 path), the quantized layers (``w8a8``/``w4a8`` RTN, ``svd-w4a8`` rank 32) run
   ``eager`` (``torch._int_mm`` plus PyTorch ops for quantization, unpacking and the epilogue) and ``triton``
   (:mod:`accelerando.quant.triton_kernels`: two launches), and ``triton-gemm`` (the fused GEMM alone on
   pre-quantized activations). Times are ``triton.testing.do_bench`` medians (CUDA events); each row also gives
   the SQNR of the output against float32 ``F.linear``.
2. **Backbone**: the shipped backbone (the MusicDiT before 2026-11-26, the conv U-Net since), one guided call,
   bf16 autocast, with every layer the presets quantize swapped for each variant (:func:`quantized_backbones`;
   also ``fp8``: :class:`~accelerando.quant.Float8Linear`, one ``torch._scaled_mm`` per layer); eager launches
   and, where capture works, CUDA-graph replay (launch gaps removed). Output SQNR against the bf16 backbone,
   weight bytes and peak allocated memory.

End-to-end generation on the GPU: ``benchmarks/gpu_generation.py``.
"""

import argparse
import copy
import json
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from accelerando.quant.fp8 import fp8_rows
from accelerando.testing.sqnr import sqnr

DEVICE = "cuda"  # --device cpu (with TRITON_INTERPRET=1 and --tiny) dry-runs the script's logic without a GPU


def _bench(fn) -> float:
    if DEVICE != "cuda":
        import statistics
        import time

        def once():
            t0 = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - t0)

        return statistics.median(once() for _ in range(3))
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _graph_ms(fn) -> float:
    """Median ms of replaying ``fn`` captured in a CUDA graph (launch overhead removed); call ``fn`` once first."""
    if DEVICE != "cuda":
        raise RuntimeError("no CUDA graphs off CUDA")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        fn()
    return _bench(graph.replay)


def gemm_rows(m: int, k: int, n: int, svd: bool = True) -> list[dict]:
    """Every GEMM variant at ``x`` [m, k] x ``W`` [n, k]^T: median ms, TOPS and SQNR against float32."""
    from accelerando.quant import Float8Linear, QuantLinear, SVDQuantLinear
    from accelerando.quant import triton_kernels as tk
    from accelerando.quant.primitives import quantize_per_token

    g = torch.Generator(device=DEVICE).manual_seed(m + k + n)
    lin = torch.nn.Linear(k, n, device=DEVICE)
    x = torch.randn(m, k, device=DEVICE, generator=g).bfloat16()
    ref = F.linear(x.float(), lin.weight.float(), lin.bias.float())
    wb, bb = lin.weight.bfloat16(), lin.bias.bfloat16()
    layers = {
        "w8a8": QuantLinear.from_float(lin, 8, 8),
        "w4a8": QuantLinear.from_float(lin, 4, 8),
        "fp8": Float8Linear.from_float(lin),
    }
    if svd:  # the float64 SVD of a large square weight takes longer than the whole GEMM table
        layers["svd-w4a8"] = SVDQuantLinear.from_float(lin, x.float().abs().amax(0), 0.5, 4, 8, None, 32)
    qa, sa = quantize_per_token(x)
    qw8 = layers["w8a8"].qweight
    a8, fa = fp8_rows(x)
    w8, fw = fp8_rows(lin.weight)
    fns = {
        "bf16": lambda: F.linear(x, wb, bb),
        "int_mm": lambda: torch._int_mm(qa, qw8.t()),
        "fp8_mm": lambda: torch._scaled_mm(
            a8, w8.t(), scale_a=fa, scale_b=fw.t().contiguous(), out_dtype=torch.bfloat16
        ),
    }
    post = {  # turn the bare GEMMs' outputs into the layer's output for the SQNR column
        "int_mm": lambda out: out.float() * sa * layers["w8a8"].weight_scale[:, 0] + lin.bias,
        "fp8_mm": lambda out: out.float() + lin.bias,
    }
    for name, layer in layers.items():
        for path in ("eager", "triton"):
            if path == "triton" and not tk.available():
                continue

            def run(layer=layer, on=path == "triton"):
                with tk.use_triton_kernels(on):
                    return layer(x)

            fns[f"{name}-{path}"] = run
    if tk.available():
        w4 = layers["w4a8"]
        fns["w4a8-triton-gemm"] = lambda: tk.int8_gemm(qa, sa, w4.qweight, w4.weight_scale, w4.bias, 4, None, x.dtype)
    rows = []
    for name, fn in fns.items():
        row = {"m": m, "k": k, "n": n, "variant": name}
        try:
            with torch.no_grad():
                out = post.get(name, lambda o: o)(fn())
            row["sqnr_db"] = sqnr(ref, out.float())
            with torch.no_grad():
                ms = _bench(fn)
            row["ms"] = ms
            row["tops"] = 2 * m * k * n / (ms * 1e-3) / 1e12
            try:
                with torch.no_grad():
                    row["graph_ms"] = _graph_ms(fn)
                row["graph_tops"] = 2 * m * k * n / (row["graph_ms"] * 1e-3) / 1e12
            except Exception as err:  # noqa: BLE001
                row["graph_error"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"[:300]
        except Exception as err:  # noqa: BLE001 -- a variant this card or build cannot run is reported, not fatal
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        rows.append(row)
    return rows


def _to(cond, device):
    import dataclasses

    return dataclasses.replace(
        cond,
        **{
            f.name: getattr(cond, f.name).to(device)
            for f in dataclasses.fields(cond)
            if isinstance(getattr(cond, f.name), torch.Tensor)
        },
    )


def _param_bytes(mod: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))


VARIANTS = tuple(
    [f"w{b}a8-{m}" for b in (8, 4) for m in ("eager", "triton", "triton-conv")]
    + ["fp8-eager", "fp8-triton"]
    + [f"svd-w4a8-{m}" for m in ("eager", "triton", "triton-conv")]
)


def check_variants(spec: str | None) -> list[str] | None:
    """``--variants`` (comma-separated) -> the names, or None for all; SystemExit naming an unknown one."""
    if not spec:
        return None
    names = [v for v in spec.split(",") if v and v != "bf16"]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}; choose from bf16, {', '.join(VARIANTS)}")
    return names


def quantized_backbones(
    base: torch.nn.Module, calib_call, only: list[str] | None = None
) -> dict[str, tuple[torch.nn.Module, str | None]]:
    """``base`` (a DiT or U-Net backbone) and copies of it quantized the presets' way -> ``{name: (module,
    mode)}``: ``bf16`` (``base`` itself, None), RTN ``w8a8`` / ``w4a8``, ``fp8`` and SVDQuant ``svd-w4a8`` (rank 32,
    alpha 0.5, calibrated on ``calib_call(module)`` under bf16 autocast), each ``-eager``, ``-triton`` and (int8)
    ``-triton-conv`` (:func:`kernel_mode`). A U-Net's convolutions are unfolded to Linears first
    (:func:`~accelerando.quant.presets.prepare_backbone`); every variant runs per-token activations."""
    from accelerando.quant import Float8DynamicConfig, RTNConfig, SVDQuantConfig, calibrate_, quantize_
    from accelerando.quant.presets import prepare_backbone

    def prepared():
        module = copy.deepcopy(base)
        return module, prepare_backbone(module)

    want = set(VARIANTS if only is None else only)
    variants = {"bf16": (base, None)}

    def build(prefix: str, quantize) -> None:
        """One quantized copy for every wanted variant named ``prefix + mode``."""
        names = [v for v in VARIANTS if v in want and v.startswith(prefix)]
        if names:
            module, filt = prepared()
            quantize(module, filt)
            variants.update({n: (module, n.removeprefix(prefix)) for n in names})

    for bits in (8, 4):
        build(f"w{bits}a8-", lambda m, f, b=bits: quantize_(m, RTNConfig(b, 8), filter_fn=f))
    # eager: the activations quantized in PyTorch ops; triton: in one Triton kernel
    build("fp8-", lambda m, f: quantize_(m, Float8DynamicConfig(), filter_fn=f))

    def svd(m, f):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            calibrate_(m, SVDQuantConfig(4, 8, rank=32, calibration=None), [calib_call], f)

    build("svd-w4a8-", svd)
    return variants


def kernel_mode(mode: str | None):
    """The switches of a variant's ``mode``: None / ``"eager"`` (no Triton), ``"triton"`` (the Triton kernels, a
    U-Net's convolutions as unfold + the Triton GEMM: the default), ``"triton-conv"`` (its per-token convolutions
    as the opt-in implicit-GEMM kernel, :mod:`accelerando.quant.triton_conv`)."""
    import contextlib

    from accelerando.quant import triton_conv
    from accelerando.quant import triton_kernels as tk

    stack = contextlib.ExitStack()
    stack.enter_context(tk.use_triton_kernels(mode in ("triton", "triton-conv")))
    stack.enter_context(triton_conv.use_triton_convs(mode == "triton-conv"))
    return stack


def backbone_rows(model: str, seconds: float, only: list[str] | None = None) -> list[dict]:
    """The backbone under each variant: median ms eager and graph-replayed, SQNR vs bf16, bytes, peak memory."""
    from accelerando.pretrained import load_generator
    from accelerando.quant import triton_kernels as tk
    from accelerando.testing.models import backbone_inputs

    base = load_generator(model).dit.eval().to(DEVICE)
    x, t, cond = backbone_inputs(base.config, seconds)
    x, t, cond = x.to(DEVICE), t.to(DEVICE), _to(cond, DEVICE)

    def call(dit):
        with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
            return dit(x, t, cond)

    variants = quantized_backbones(base, lambda m: m(x, t, cond), only)
    ref = call(base).float()
    rows = []
    for name, (dit, mode) in variants.items():
        row = {"variant": name, "weight_bytes": _param_bytes(dit)}
        if mode and mode.startswith("triton") and not tk.available():
            continue
        try:
            with kernel_mode(mode):
                if DEVICE == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                out = call(dit).float()  # warm-up (autotunes the Triton GEMMs)
                if DEVICE == "cuda":
                    row["peak_alloc_mb"] = torch.cuda.max_memory_allocated() / 2**20
                row["sqnr_vs_bf16_db"] = sqnr(ref, out)
                row["ms"] = _bench(lambda dit=dit: call(dit))
                try:
                    row["graph_ms"] = _graph_ms(lambda dit=dit: call(dit))
                except Exception as err:  # noqa: BLE001
                    row["graph_error"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"[:300]
        except Exception as err:  # noqa: BLE001
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        rows.append(row)
    base_ms = next((r.get("ms") for r in rows if r["variant"] == "bf16"), None)
    base_graph = next((r.get("graph_ms") for r in rows if r["variant"] == "bf16"), None)
    for r in rows:
        if base_ms and r.get("ms"):
            r["ratio_to_bf16"] = r["ms"] / base_ms
        if base_graph and r.get("graph_ms"):
            r["graph_ratio_to_bf16"] = r["graph_ms"] / base_graph
    return rows


def backbone_gemms(model: str, seconds: float) -> list[tuple[int, int, int]]:
    """Every distinct ``(M, K, N)`` of the Linears the presets quantize in ``model``'s backbone, for one guided call
    on ``seconds`` of latent (batch 2; a U-Net's convolutions unfolded, so ``M`` differs by level). Probed on the
    CPU with hooks."""
    from accelerando.pretrained import load_generator
    from accelerando.quant.presets import prepare_backbone
    from accelerando.testing.models import backbone_inputs

    backbone = load_generator(model).dit.eval()
    filt = prepare_backbone(backbone)
    seen = set()

    def hook(mod, args, _out):
        seen.add((args[0].numel() // mod.in_features, mod.in_features, mod.out_features))

    handles = [m.register_forward_hook(hook) for n, m in backbone.named_modules() if filt(m, n)]
    with torch.inference_mode():
        backbone(*backbone_inputs(backbone.config, seconds))
    for h in handles:
        h.remove()
    return sorted(seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--large", default="4096,8192", help="square GEMM sizes where the card is compute-bound")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run the logic (TRITON_INTERPRET=1)")
    ap.add_argument("--parts", default="gemm,backbone", help="which tables to measure")
    ap.add_argument("--variants", default=None, help="backbone variants to time (comma-separated; bf16 always)")
    ap.add_argument(
        "--shapes",
        default=None,
        help="override the backbone GEMM shapes: KxN (at the largest M) or MxKxN, comma-separated",
    )
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: benchmarks/quant_gpu.py needs a CUDA device (or --device cpu for a dry run)")
    from accelerando.quant import triton_kernels as tk

    only = check_variants(args.variants)
    given = []
    for spec in (args.shapes or "").split(","):
        try:
            dims = tuple(int(v) for v in spec.split("x")) if spec else ()
        except ValueError:
            dims = (0,)
        if spec and (len(dims) not in (2, 3) or min(dims) < 1):
            raise SystemExit(f"error: --shapes {spec!r}: give KxN or MxKxN with positive integers")
        given += [dims] if dims else []
    shapes = []
    if "gemm" in args.parts:
        if not given or any(len(g) == 2 for g in given):
            shapes = backbone_gemms(args.model, args.seconds)  # [(M, K, N)], probed on the CPU
        if given:
            rows = max(m for m, _, _ in shapes) if shapes else 0
            shapes = [g if len(g) == 3 else (rows, *g) for g in given]
    env = {
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__ if tk.available() else None,
        "python": platform.python_version(),
        "gemms_mkn": shapes,
    }
    print(json.dumps(env))
    gemms = []
    if "gemm" not in args.parts:
        shapes, args.large = [], ""
    for m, k, n in shapes:
        gemms += gemm_rows(m, k, n)
    for s in [int(v) for v in args.large.split(",") if v]:
        gemms += gemm_rows(s, s, s, svd=False)
    for r in gemms:
        print(json.dumps(r))
    backbone = backbone_rows(args.model, args.seconds, only) if "backbone" in args.parts else []
    for r in backbone:
        print(json.dumps(r))
    report = {"args": vars(args), "env": env, "gemm": gemms, "backbone": backbone}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print("\nGEMM (ms, TOPS, graph ms, graph TOPS, SQNR dB vs float32)")
    for r in gemms:
        if "error" in r:
            print(f"{r['m']:>6} {r['k']:>5} {r['n']:>5} {r['variant']:<18} ERROR {r['error'][:90]}")
        else:
            print(
                f"{r['m']:>6} {r['k']:>5} {r['n']:>5} {r['variant']:<18} {r['ms']:8.4f} {r['tops']:8.1f} "
                f"{r['sqnr_db']:6.1f}"
            )
    print("\nBackbone (ms, ratio, graph ms, graph ratio, SQNR vs bf16, weight MB)")
    for r in backbone:
        print(r["variant"], {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "variant"})


if __name__ == "__main__":
    main()
