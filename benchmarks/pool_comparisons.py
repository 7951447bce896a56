"""Pool the per-prompt paired distances of several ``quant_generator.py`` runs and compare two variants.

    .venv/bin/python benchmarks/pool_comparisons.py RUN.json [RUN.json ...] --compare A B [--compare C D ...]
        [--json OUT]

Each run (another ``--seed``: other test prompts, other calibration noise) contributes its per-prompt distances of
variant A and of variant B against float; the comparison is :func:`quant_generator.compare_paired` over all of them
(mean of ``B - A`` with a 95% bootstrap interval over prompts, prompts where B is closer, Wilcoxon p), printed per
distance, plus each run's own mean difference so that the spread between runs is visible.
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
    runs = []
    for path in args.runs:
        try:
            runs.append((path, json.loads(Path(path).read_text())["results"]))
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"error: {path}: not a quant_generator.py JSON report ({err})") from None
    out = []
    for a, b in args.compare:
        row = {"a": a, "b": b, "runs": [p for p, _ in runs]}
        for k in _METRICS:
            xs, ys, per_run = [], [], []
            for path, res in runs:
                if a not in res or b not in res or "per_prompt" not in res[a]:
                    raise SystemExit(f"error: {path} has no per-prompt figures for {a!r} and {b!r}")
                xa, xb = res[a]["per_prompt"][k], res[b]["per_prompt"][k]
                xs += xa
                ys += xb
                per_run.append((sum(xb) - sum(xa)) / sum(xa))
            row[k] = {**compare_paired(xs, ys), "rel_diff_per_run": per_run}
        out.append(row)
        print(f"{b}  vs  {a}")
        for k in _METRICS:
            r = row[k]
            runs_txt = ", ".join(f"{100 * v:+.1f}%" for v in r["rel_diff_per_run"])
            print(
                f"  {k:13s} n={r['n']} mean diff {r['mean_diff']:+.4f} ({100 * r['rel_diff']:+.1f}%) "
                f"95% CI [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]  B closer on {r['b_lower']}/{r['n']}  "
                f"Wilcoxon p {r['wilcoxon_p']:.3f}  per run {runs_txt}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
