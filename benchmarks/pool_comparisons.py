"""Pool the per-prompt paired distances of several ``quant_generator.py`` runs and compare two variants.

    .venv/bin/python benchmarks/pool_comparisons.py RUN.json [RUN.json ...] --compare A B [--compare C D ...]
        [--json OUT]

Each run (another ``--seed``: other test prompts, other calibration noise; same model, length, steps and prompt
count, checked) contributes its per-prompt distances of variant A and of variant B against float. Printed per
distance: each run's own relative difference (``sum(B - A) / sum(A)``), which is the figure for the method, since
each run has one calibration; and :func:`quant_generator.compare_paired` over all prompts pooled (mean of
``B - A``, 95% bootstrap interval over prompts, prompts where B is closer, Wilcoxon p), which holds the runs'
calibrations fixed and so overstates the evidence for the method. Seeds draw test prompts independently, so a
prompt can recur between runs (with other noise).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quant_generator import _METRICS, compare_paired  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--compare", nargs=2, action="append", metavar=("A", "B"), required=True)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    runs, settings = [], None
    if len({Path(p).resolve() for p in args.runs}) != len(args.runs):
        raise SystemExit("error: a run is given twice; each must be its own quant_generator.py report")
    for path in args.runs:
        try:
            doc = json.loads(Path(path).read_text())
            res, run_args = doc["results"], doc["args"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SystemExit(f"error: {path}: not a quant_generator.py JSON report ({err})") from None
        same = {k: run_args.get(k) for k in ("model", "seconds", "steps", "calib_prompts", "n")}
        if settings is not None and same != settings:
            raise SystemExit(f"error: {path} was run with {same}, the first run with {settings}; pool like with like")
        settings = same
        runs.append((path, res, run_args.get("seed")))
    if len({seed for _, _, seed in runs}) != len(runs):
        raise SystemExit("error: two runs share a --seed (the same prompts, calibration and noise)")
    out = []
    for a, b in args.compare:
        row = {"a": a, "b": b, "runs": [p for p, _, _ in runs]}
        # the teacher-forced error too where every run has it for both (quant_generator.py --teacher-forced)
        has_tf = all("tf_complex_stft" in res.get(v, {}).get("per_prompt", {}) for _, res, _ in runs for v in (a, b))
        metrics = [*_METRICS, *(["tf_complex_stft"] if has_tf else [])]
        for k in metrics:
            xs, ys, per_run = [], [], []
            for path, res, _ in runs:
                if any(v not in res or "per_prompt" not in res[v] for v in (a, b)):
                    raise SystemExit(f"error: {path} has no per-prompt figures for {a!r} and {b!r}")
                xa, xb = res[a]["per_prompt"][k], res[b]["per_prompt"][k]
                xs += xa
                ys += xb
                per_run.append((sum(xb) - sum(xa)) / sum(xa))
            row[k] = {**compare_paired(xs, ys), "rel_diff_per_run": per_run}
        out.append(row)
        print(f"{b}  vs  {a}")
        for k in metrics:
            r = row[k]
            rel = "n/a" if r["rel_diff"] is None else f"{100 * r['rel_diff']:+.1f}%"
            runs_txt = ", ".join(f"{100 * v:+.1f}%" for v in r["rel_diff_per_run"])
            print(
                f"  {k:13s} n={r['n']} mean diff {r['mean_diff']:+.4f} ({rel}) "
                f"95% CI [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]  B closer on {r['b_lower']}/{r['n']}  "
                f"Wilcoxon p {r['wilcoxon_p']:.3f}  per run {runs_txt}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
