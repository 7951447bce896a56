"""Quality of a per-tensor quantized generator with oneDNN given the activation zero point against the zero point
folded into the bias (the default since 2026-11-27), paired against float at the same seeds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_conv_fold_quality.py --model QUANTIZED.safetensors \
        [--n 24] [--seconds 5] [--steps 8] [--threads 1] [--seed 0] [--json OUT]

Both ways run the same integer sums; only float32 rounding in the epilogue differs (1e-7 relative per layer). A
per-tensor quantized network is chaotic at that level: a difference of one ulp somewhere flips the rounding of a
few codes downstream, and the flips spread, so free-running outputs of the two differ by about the quantization
error itself. What must not change is the distance to float: per test prompt (the corpus test split, as
``quant_generator.py``), the paired LSD, MR-STFT and complex-STFT error of each way's audio against the float
pipeline's, and the teacher-forced complex-STFT error (the quantized backbone on the float trajectory, no chaotic
divergence); then the paired comparison folded - given (``quant_generator.compare_paired``: mean difference,
bootstrap interval, Wilcoxon p). Also the free-running distance between the two ways' outputs, for scale.

``sensitivity`` (also alone with ``--sensitivity-only``): one guided backbone call on 10 s of latent, and the
relative L2 change of its output when the input is multiplied by ``1 + 1e-7 n`` (``n`` standard normal), for the
quantized and the float backbone, next to the relative distance between the two backbones: how far one ulp of
difference carries through a per-tensor quantized network.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import quant_generator as qg  # noqa: E402  (the test prompts, generation and paired metrics of the quant report)


def _sensitivity(base, quant) -> dict:
    """Relative output change of one backbone call under a 1e-7 relative input perturbation (see the docstring)."""
    from accelerando.testing.models import backbone_inputs

    x, t, cond = backbone_inputs(base.model.dit.config, 10.0)
    x2 = x * (1 + 1e-7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    with torch.no_grad():
        q1, q2 = quant.model.dit(x, t, cond), quant.model.dit(x2, t, cond)
        f1, f2 = base.model.dit(x, t, cond), base.model.dit(x2, t, cond)
    return {
        "quantized": rel(q2, q1),
        "float": rel(f2, f1),
        "quantized_vs_float": rel(q1, f1),
        "per_layer_folded_vs_given": _per_layer(quant.model.dit, (x, t, cond)),
    }


def _per_layer(dit, inputs) -> dict:
    """Each oneDNN convolution of ``dit`` on the input it sees in one call, run folded and given the zero point:
    the largest and the median relative L2 difference over the layers."""
    import statistics

    from accelerando.quant import int8_conv
    from accelerando.quant.conv import UnfoldConv1d

    seen, hooks = {}, []

    def keep(name):
        def hook(mod, args):
            seen.setdefault(name, (mod, args[0].clone()))  # returns None: the call's arguments stay as they are

        return hook

    for name, m in dit.named_modules():
        if isinstance(m, UnfoldConv1d):
            hooks.append(m.register_forward_pre_hook(keep(name)))
    with torch.no_grad():
        dit(*inputs)
    for h in hooks:
        h.remove()
    diffs = []
    with torch.no_grad():
        for mod, x in seen.values():
            how = int8_conv.plan(mod, x)
            if how is None or how[1].mode != "onednn":
                continue
            int8_conv._state["fold_zp"] = False
            try:
                given = mod(x)
            finally:
                int8_conv._state["fold_zp"] = True
            diffs.append(float((mod(x) - given).norm() / given.norm()))
    return {"layers": len(diffs), "max": max(diffs), "median": statistics.median(diffs)} if diffs else {"layers": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a per-tensor quantized generator (accelerando quantize)")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sensitivity-only", action="store_true", help="only the perturbation test")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from accelerando.pipelines.text_to_music import TextToMusicPipeline
    from accelerando.quant import int8_conv
    from accelerando.quant.recovery import record_teacher

    base = TextToMusicPipeline.from_pretrained("builtin")
    quant = TextToMusicPipeline.from_pretrained(args.model, text_encoder=base.text_encoder)
    sensitivity = _sensitivity(base, quant)
    print("sensitivity", json.dumps(sensitivity), file=sys.stderr)
    if args.sensitivity_only:
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "sensitivity": sensitivity}, indent=1))
        return
    prompts = qg._test_prompts(args.n, args.seed, tiny=False)
    fp = [qg._generate(base, p, args.seconds, args.steps, args.seed + i) for i, p in enumerate(prompts)]
    teacher = record_teacher(base, prompts, args.seconds, args.steps, 3.0, args.seed)
    results, outs = {}, {}
    for label, fold in (("zero point given", False), ("zero point folded", True)):
        int8_conv._state["fold_zp"] = fold
        try:
            outs[label] = [
                qg._generate(quant, p, args.seconds, args.steps, args.seed + i) for i, p in enumerate(prompts)
            ]
            results[label] = qg._paired(outs[label], fp)
            tf = qg._teacher_forced(quant, teacher)
            results[label]["tf_complex_stft"], results[label]["per_prompt"]["tf_complex_stft"] = sum(tf) / len(tf), tf
        finally:
            int8_conv._state["fold_zp"] = True
        print(label, json.dumps({k: v for k, v in results[label].items() if k != "per_prompt"}), file=sys.stderr)
    a, b = results["zero point given"], results["zero point folded"]
    comparison = {k: qg.compare_paired(a["per_prompt"][k], b["per_prompt"][k]) for k in a["per_prompt"]}
    between = qg._paired(outs["zero point folded"], outs["zero point given"])
    report = {
        "args": vars(args),
        "results": results,
        "folded_minus_given": comparison,
        "folded_vs_given_free_running": {k: v for k, v in between.items() if k != "per_prompt"},
        "sensitivity": sensitivity,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
