"""`accelerando bench compare A B`: per-metric deltas (B − A) between two ``results.json`` files.

Variants are matched by name; when the two files share no name and each holds exactly one variant, those two are
compared. Every number of a variant's ``summary``, ``efficiency`` and ``edit`` (as ``edit.KEY``) is compared;
``better`` says whether B moved in the metric's good direction. Metric version tags that differ between A and B
are listed as warnings: such scores are not comparable.
"""

import json
import math
from pathlib import Path

from accelerando.bench.metrics import HIGHER_IS_BETTER
from accelerando.errors import UserError

__all__ = ["compare_results", "format_comparison", "load_results"]

_SKIP = {"n_clips", "n_tempo", "n_bcs", "n_key", "n_ksi", "n_paired", "windows", "load_s", "warmup_s", "edit.n_edits",
         "edit.fraction", "edit.n_outside_identical"}  # fmt: skip


def load_results(path: str | Path) -> dict:
    """A results.json (or a run folder holding one)."""
    from accelerando.bench.runner import RESULTS_SCHEMA

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        raise UserError(f"{path} is not a bench results file (schema {RESULTS_SCHEMA!r})")
    return data


def _numbers(variant: dict) -> dict:
    out = {}
    for section, prefix in (("summary", ""), ("efficiency", ""), ("edit", "edit.")):  # edit: sparse-edit variants
        for k, v in (variant.get(section) or {}).items():
            if k in _SKIP or prefix + k in _SKIP or isinstance(v, bool):
                continue
            if v is None or isinstance(v, int | float):
                out[prefix + k] = v
    return out


def _pairs(a: dict, b: dict) -> list[tuple[dict, dict]]:
    va, vb = {v["name"]: v for v in a["variants"]}, {v["name"]: v for v in b["variants"]}
    common = [n for n in va if n in vb]
    if common:
        return [(va[n], vb[n]) for n in common]
    if len(va) == 1 and len(vb) == 1:
        return [(next(iter(va.values())), next(iter(vb.values())))]
    raise UserError(
        f"no variant names in common (A: {', '.join(va)}; B: {', '.join(vb)}); rename variants with NAME=MODEL..."
    )


def compare_results(a: dict, b: dict) -> dict:
    """``{"pairs": [{"a", "b", "metrics": [{"metric", "a", "b", "delta", "rel", "better"}]}], "warnings": [...]}``."""
    warnings = []
    if a.get("suite", {}).get("id") != b.get("suite", {}).get("id"):
        warnings.append(f"different suites: A {a.get('suite', {}).get('id')}, B {b.get('suite', {}).get('id')}")
    elif a.get("suite", {}).get("n_prompts") != b.get("suite", {}).get("n_prompts"):
        warnings.append("different numbers of prompts (--limit?): the means cover different clips")
    va, vb = a.get("metric_versions", {}), b.get("metric_versions", {})
    for k in sorted(set(va) | set(vb)):
        if va.get(k) != vb.get(k):
            warnings.append(f"metric {k}: version {va.get(k)} in A, {vb.get(k)} in B; not comparable")
    pairs = []
    for pa, pb in _pairs(a, b):
        na, nb = _numbers(pa), _numbers(pb)
        rows = []
        for k in list(dict.fromkeys(list(na) + list(nb))):
            x, y = na.get(k), nb.get(k)
            delta = rel = better = None
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
                delta = y - x
                rel = delta / abs(x) if x != 0 else None
                if k in HIGHER_IS_BETTER and delta != 0:
                    better = (delta > 0) == HIGHER_IS_BETTER[k]
            rows.append({"metric": k, "a": x, "b": y, "delta": delta, "rel": rel, "better": better})
        pairs.append({"a": pa["name"], "b": pb["name"], "metrics": rows})
    return {"a_suite": a.get("suite", {}).get("id"), "b_suite": b.get("suite", {}).get("id"), "pairs": pairs,
            "warnings": warnings}  # fmt: skip


def _num(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.4g}"
    return f"{v:.4f}".rstrip("0").rstrip(".") if "." in f"{v:.4f}" else f"{v:.4f}"


def format_comparison(cmp: dict) -> str:
    """A plain-text table per variant pair."""
    lines = []
    for w in cmp["warnings"]:
        lines.append(f"warning: {w}")
    for pair in cmp["pairs"]:
        title = pair["a"] if pair["a"] == pair["b"] else f"{pair['a']} -> {pair['b']}"
        lines += ["", f"variant {title} (B − A)"]
        rows = [("metric", "A", "B", "delta", "rel", "")]
        for r in pair["metrics"]:
            mark = {True: "better", False: "worse", None: ""}[r["better"]]
            rel = "–" if r["rel"] is None else f"{100 * r['rel']:+.1f}%"
            delta = "–" if r["delta"] is None else ("+" if r["delta"] > 0 else "") + _num(r["delta"])
            rows.append((r["metric"], _num(r["a"]), _num(r["b"]), delta, rel, mark))
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        for row in rows:
            cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            lines.append("  ".join(cells))
    return "\n".join(lines).lstrip("\n")
