"""The fixed cost of a per-tensor quantized U-Net call: the scale arithmetic, in tensor ops and in Python floats.

    OMP_NUM_THREADS=T .venv/bin/python benchmarks/quant_call_overhead.py --model QUANTIZED.safetensors
        [--seconds 2] [--repeats 31] [--threads T] [--json OUT]

Every quantized convolution of a per-tensor model turns the min and max of its input into a scale and a zero
point. ``accelerando.quant.primitives.u8_params`` does it in eight tensor ops; ``u8_params_of`` (what the C++
passes feed) in Python floats rounded to float32, with the same values. This script times one call of each
(``timeit``, microseconds), then one guided backbone call on ``--seconds`` of latent (short clips are where fixed
costs show) with ``u8_params_of`` and with the tensor ops patched in its place, round-robin over ``--repeats``
rounds in one process. The model is loaded with ``load_generator`` (fused blocks), in float32.
"""

import argparse
import json
import statistics
import timeit
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a per-tensor quantized generator (.safetensors)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"--model {args.model!r}: no such file")
    torch.set_num_threads(args.threads)
    from accelerando.eval.efficiency import time_interleaved
    from accelerando.pretrained import load_generator
    from accelerando.quant import primitives
    from accelerando.testing.models import backbone_inputs

    def tensor_ops(lo: float, hi: float):
        return primitives.u8_params(torch.tensor(lo), torch.tensor(hi))

    n = 20000
    micro = {
        "u8_params_us": 1e6 * timeit.timeit(lambda: tensor_ops(-1.3, 2.7), number=n) / n,
        "u8_params_of_us": 1e6 * timeit.timeit(lambda: primitives.u8_params_of(-1.3, 2.7), number=n) / n,
    }
    dit = load_generator(args.model).dit.eval()
    x, t, cond = backbone_inputs(dit.config, args.seconds)
    fast = primitives.u8_params_of

    def call(params):
        def run():  # accelerando.quant.norm_codes imports u8_params_of from primitives at each call
            primitives.u8_params_of = params
            try:
                return dit(x, t, cond)
            finally:
                primitives.u8_params_of = fast

        return run

    calls = {"u8_params_of": call(fast), "tensor_ops": call(tensor_ops)}
    with torch.inference_mode():
        outs = {k: fn() for k, fn in calls.items()}  # warm-up
        times = time_interleaved(calls, args.repeats)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    report = {
        "args": vars(args),
        "torch": torch.__version__,
        "micro": micro,
        "backbone_ms": med,
        "ratio_u8_params_of_over_tensor_ops": med["u8_params_of"] / med["tensor_ops"],
        "same_output": bool(torch.equal(outs["u8_params_of"], outs["tensor_ops"])),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
