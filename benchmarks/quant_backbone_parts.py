"""Where the time of a per-tensor quantized U-Net backbone call goes, by part, on this CPU.

    OMP_NUM_THREADS=T .venv/bin/python benchmarks/quant_backbone_parts.py --model QUANTIZED.safetensors
        [--seconds 30] [--repeats 7] [--threads T] [--kernel-source OTHER.cpp] [--json OUT]

Loads ``--model`` with ``accelerando.pretrained.load_generator`` (so its blocks run fused, as ``accelerando
generate`` runs them, and in the pipeline's precision: bf16 autocast where the CPU has bf16 arithmetic) and times
guided backbone calls (batch 2) on ``--seconds`` of latent. Each part is timed
by wrapping it with a wall clock: oneDNN's int8 convolutions (``torch.ops.onednn.qconv_pointwise``), each C++
pass of the norm-codes library (``accel_*``: the fused norm + SiLU pass, the min/max, the codes, the output
pass), and ``rest`` = the call minus those (float convolutions outside the blocks, attention, Python). Reports
milliseconds per call (the mean over ``--repeats`` calls after two warm-up calls) and the share of the call.
The wrappers add a few microseconds per call of each part; the untimed call is reported too, with its minor page
faults (first touches of freshly allocated memory). ``--kernel-source``
runs the norm-codes library built from that source (ABI 3) instead of the package's, e.g. an older version.
"""

import argparse
import collections
import json
import resource
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a per-tensor quantized generator (.safetensors)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kernel-source", default=None, help="run the norm-codes library built from this source")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"--model {args.model!r}: no such file")
    torch.set_num_threads(args.threads)
    from accelerando.modules.precision import autocast
    from accelerando.pretrained import load_generator
    from accelerando.quant import norm_codes
    from accelerando.quant.api import has_per_tensor_layers
    from accelerando.testing.models import backbone_inputs

    if args.kernel_source is not None:
        try:
            norm_codes._state["lib"] = norm_codes.load_source(Path(args.kernel_source))
        except RuntimeError as err:
            raise SystemExit(f"--kernel-source {args.kernel_source!r}: {err}") from None
    dit = load_generator(args.model).dit.eval()
    if not has_per_tensor_layers(dit):
        raise SystemExit(f"--model {args.model!r} has no per-tensor quantized layers: nothing here runs the C++ passes")
    x, t, cond = backbone_inputs(dit.config, args.seconds)
    spent: collections.Counter = collections.Counter()

    def timed(name, fn):
        def run(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - start

        return run

    with torch.inference_mode(), autocast("cpu"):  # the pipeline's precision on this CPU (float32 without bf16)
        for _ in range(2):
            dit(x, t, cond)
        plain = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(args.repeats):
            start = time.perf_counter()
            dit(x, t, cond)
            plain.append(time.perf_counter() - start)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.repeats
        lib = norm_codes._state["lib"]
        if lib is None:
            raise SystemExit(f"the C++ kernels do not build here: {norm_codes.status()['broken']}")

        class _Timed:  # the library with every accel_* entry point timed
            def __getattr__(self, name):
                return timed(name.removeprefix("accel_"), getattr(lib, name))

        packet = torch.ops.onednn.qconv_pointwise
        qconv = packet.tensor
        norm_codes._state["lib"] = _Timed()
        packet.tensor = timed("onednn_int8_conv", qconv)
        try:
            dit(x, t, cond)
            spent.clear()
            start = time.perf_counter()
            for _ in range(args.repeats):
                dit(x, t, cond)
            total = (time.perf_counter() - start) / args.repeats
        finally:
            norm_codes._state["lib"] = lib
            packet.tensor = qconv
    parts = {k: 1e3 * v / args.repeats for k, v in spent.most_common()}
    parts["rest"] = 1e3 * total - sum(parts.values())
    report = {
        "args": vars(args),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "untimed_call_ms": 1e3 * statistics.median(plain),
        "minor_page_faults_per_call": faults,
        "timed_call_ms": 1e3 * total,
        "parts_ms": parts,
        "share": {k: v / (1e3 * total) for k, v in parts.items()},
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
