"""Outputs of a benchmark run: ``results.json``, ``report.md`` and the plots in ``plots/`` (matplotlib, Agg).

Plots:
- ``pareto.png``: quality against latency (median wall seconds per clip), one point per variant, the Pareto front
  drawn through the variants that no other variant beats on both axes. Quality is FAD-inf, else FAD, else the
  MR-STFT distance to the baseline, else key adherence: the first that every variant has.
- ``by_collection.png`` and ``by_family.png``: tempo acc2 and key adherence per corpus collection and per
  instrument family, one bar per variant.
- ``tempo_error.png``: histogram of the signed tempo error (estimated vs requested bpm, %) per variant.
"""

import math
from pathlib import Path

from accelerando.bench.store import atomic_write_json, atomic_write_text

__all__ = ["PLOTS", "quality_axis", "pareto_front", "render_markdown", "write_outputs", "write_plots"]

PLOTS = ("pareto.png", "by_collection.png", "by_family.png", "tempo_error.png")

# (summary key, axis label, lower is better)
_QUALITY_AXES = (
    ("fad_inf", "FAD-inf vs reference (lower is better)", True),
    ("fad", "FAD vs reference (lower is better)", True),
    ("mrstft_mean", "MR-STFT distance to baseline (lower is better)", True),
    ("key_adherence_mean", "key adherence (higher is better)", False),
)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 10**digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def quality_axis(results: dict) -> tuple[str, str, bool, list[float]] | None:
    """The quality metric of the Pareto plot: ``(key, label, lower_is_better, values per variant)``."""
    variants = results["variants"]
    for key, label, lower in _QUALITY_AXES:
        vals = []
        for v in variants:
            x = v["summary"].get(key)
            if x is None and key == "mrstft_mean" and v.get("is_baseline"):
                x = 0.0  # the baseline against itself
            vals.append(x)
        if vals and all(x is not None for x in vals) and (key != "mrstft_mean" or len(vals) > 1):
            return key, label, lower, [float(x) for x in vals]
    return None


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool = True) -> list[int]:
    """Indices of the points that no other point beats on both axes (x: lower is better; y: as given)."""
    sign = 1.0 if lower_is_better else -1.0
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and sign * y2 <= sign * y) and (x2 < x or sign * y2 < sign * y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def write_plots(results: dict, plot_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    variants = results["variants"]
    names = [v["name"] for v in variants]
    written = []

    def save(fig, name):
        path = plot_dir / name
        tmp = plot_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        tmp.replace(path)
        written.append(path)

    # quality vs latency
    fig, ax = plt.subplots(figsize=(6, 4.2))
    axis = quality_axis(results)
    xs = [v["efficiency"].get("wall_s_median") for v in variants]
    if axis is None or any(x is None for x in xs):
        ax.text(0.5, 0.5, "no quality metric common to all variants", ha="center", va="center")
        ax.set_axis_off()
    else:
        key, label, lower, ys = axis
        pts = list(zip(xs, ys, strict=True))
        front = pareto_front(pts, lower)
        ax.scatter(xs, ys, color="tab:blue", zorder=3)
        for n, (x, y) in zip(names, pts, strict=True):
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
        ax.plot(fx, fy, "--o", color="tab:red", mfc="none", ms=11, label="Pareto front")
        ax.set_xlabel("median wall seconds per clip (lower is faster)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax.set_title(f"quality vs latency: {results['suite']['id']}")
    save(fig, "pareto.png")

    # per-group bars
    for field, fname, title in (
        ("by_collection", "by_collection.png", "collection"),
        ("by_family", "by_family.png", "instrument family"),
    ):
        groups = sorted({g for v in variants for g in v[field]})
        fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.9 * len(groups) + 2), 6), sharex=True)
        width = 0.8 / max(1, len(variants))
        for ax, metric in zip(axes, ("tempo_acc2", "key_adherence"), strict=True):
            for k, v in enumerate(variants):
                vals = [(v[field].get(g) or {}).get(metric) for g in groups]
                xs_ = [i + (k - (len(variants) - 1) / 2) * width for i in range(len(groups))]
                ax.bar(xs_, [0.0 if x is None else x for x in vals], width, label=v["name"])
            ax.set_ylabel(metric)
            ax.set_ylim(0, 1.05)
            ax.grid(axis="y", alpha=0.3)
        axes[-1].set_xticks(range(len(groups)))
        axes[-1].set_xticklabels(groups, rotation=30, ha="right")
        axes[0].legend(fontsize=8, ncols=min(4, len(variants)))
        axes[0].set_title(f"adherence per {title} (mean over clips)")
        save(fig, fname)

    # tempo error histogram
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = [-100 + 5 * i for i in range(41)]
    any_data = False
    for v in variants:
        errs = [
            max(-100.0, min(100.0, 100 * c["metrics"]["tempo_rel_error"]))
            for c in v["clips"]
            if (c.get("metrics") or {}).get("tempo_rel_error") is not None
        ]
        if errs:
            any_data = True
            ax.hist(errs, bins=bins, histtype="step", linewidth=1.5, label=f"{v['name']} (n={len(errs)})")
    ax.axvspan(-4, 4, color="tab:green", alpha=0.15, label="acc1 tolerance (±4%)")
    ax.set_xlabel("tempo error: (estimated − requested) / requested, % (clipped to ±100)")
    ax.set_ylabel("clips")
    if any_data:
        ax.legend(fontsize=8)
    ax.set_title("tempo error")
    save(fig, "tempo_error.png")
    return written


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pair(a, b, digits: int = 3) -> str:
    return f"{_fmt(a, digits)} ({_fmt(b, digits)})"


def _edit_section(variants: list[dict]) -> list[str]:
    """The sparse-edit variants' figures (``variant["edit"]``, medians over clips); nothing when there are none."""
    edits = [v for v in variants if v.get("edit")]
    if not edits:
        return []
    out = [
        "## Sparse edits against full regeneration (same seed)",
        "",
        "Each clip of a `sparse-edit` variant is generated with an edit session, then a centred region is inpainted "
        "twice with the same seed: by full regeneration and token-sparse from the session. Medians over clips. Speed "
        "is full ÷ sparse wall time, measured side by side in this process: in total (with the session update) and "
        "to audio (before it). MACs: full ÷ sparse, with the update; edit only. Paired metrics on the edited stretch "
        "(±0.25 s): sparse against full, in brackets full against the original (how much the edit changed). Seam: "
        "largest seam ratio over the boundaries of all clips, sparse / full (click threshold 2), then the largest "
        "excess over the original's own flux at the same moments (seam-v2; above 2 is a seam artifact). Outside: clips "
        "whose samples outside the region equal the original exactly. This variant's `wall s/clip` and `speed` above "
        "are its sparse edit's, against the baseline's whole generation.",
        "",
    ]
    rows = []
    for v in edits:
        e = v["edit"]
        rows.append(
            [
                f"`{v['name']}`",
                f"{_fmt(100 * e['fraction'], 3)}%" if e.get("fraction") is not None else "–",
                f"{_fmt(e.get('tokens_recomputed_median'))} / {_fmt(e.get('tokens_median'))}",
                f"{_fmt(e.get('wall_full_s_median'))} / {_fmt(e.get('wall_sparse_s_median'))} "
                f"({_fmt(e.get('wall_sparse_to_audio_s_median'))})",
                f"{_fmt(e.get('speedup_wall_median'))}×; {_fmt(e.get('speedup_wall_to_audio_median'))}×",
                f"{_fmt(e.get('macs_ratio_median'))}×; {_fmt(e.get('macs_ratio_edit_only_median'))}×",
                _pair(e.get("lsd_sparse_vs_full_median"), e.get("lsd_full_vs_orig_median")),
                _pair(e.get("mrstft_sparse_vs_full_median"), e.get("mrstft_full_vs_orig_median")),
                _pair(e.get("complex_stft_sparse_vs_full_median"), e.get("complex_stft_full_vs_orig_median")),
                f"{_fmt(e.get('seam_sparse_max'), 2)} / {_fmt(e.get('seam_full_max'), 2)}; "
                f"{_fmt(e.get('seam_sparse_excess_max'), 2)} / {_fmt(e.get('seam_full_excess_max'), 2)}",
                f"{e.get('n_outside_identical', 0)} / {e.get('n_edits', 0)}",
                f"{_fmt(e.get('cache_mb_median'))} / {_fmt(e.get('disk_mb_median'))}",
            ]
        )
    header = [
        "variant",
        "edit",
        "tokens run",
        "wall s full / sparse (to audio)",
        "speed: total; to audio",
        "MACs: total; edit only",
        "LSD dB",
        "MR-STFT",
        "complex-STFT",
        "seam sparse / full; excess",
        "outside identical",
        "cache MB / disk MB",
    ]
    return out + [_table(header, rows), ""]


def render_markdown(results: dict, plots: list[str] | None = None) -> str:
    suite, machine, variants = results["suite"], results["machine"], results["variants"]
    ref = results.get("reference") or {}
    gen = suite["generation"]
    out = [f"# accelerando bench: {suite['id']}", ""]
    out += [
        f"- date: {results['created']} (accelerando {results['accelerando']})",
        f"- command: `{results.get('command') or 'accelerando bench run'}`",
        f"- machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads)"
        + (
            f", {machine['cpu_capability']}, {machine['cpu_precision']} on the CPU"
            if "cpu_capability" in machine
            else ""
        )
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""),
        f"- suite: {suite['n_prompts']} prompts × {', '.join(_fmt(d) for d in suite['durations'])} s, "
        f"steps {gen.get('steps')}, cfg {gen.get('cfg')}, sampler {gen.get('sampler')} (sha256 {suite['sha256'][:12]})",
        f"- baseline (paired metrics, speed ratio): `{results['baseline']}`",
        "- FAD reference: "
        + (
            f"{ref.get('source')} ({ref.get('n_files')} files, {_fmt(ref.get('seconds'))} s, "
            f"embedder {ref.get('embedder_version')})"
            if ref.get("source")
            else "none (FAD skipped)"
        ),
        f"- run time: {_fmt(results.get('run_seconds'))} s",
        "",
        "## Summary",
        "",
        "Speed is the median over prompts of baseline wall ÷ variant wall, measured in the same run. On a shared CPU "
        "only this ratio is meaningful; absolute times count only on a GPU.",
        "",
    ]
    rows = []
    for v in variants:
        s, e = v["summary"], v["efficiency"]
        gflops = e.get("flops_per_backbone_call")
        rows.append(
            [
                f"`{v['name']}`",
                f"`{v['spec']}`",
                _fmt(e.get("speedup_vs_baseline")) + "×",
                _fmt(e.get("wall_s_median")),
                _fmt(e.get("rtf_median")),
                _fmt(e.get("peak_rss_mb")),
                _fmt(None if gflops is None else gflops / 1e9),
                _fmt(s.get("tempo_acc1")),
                _fmt(s.get("tempo_acc2")),
                _fmt(None if s.get("tempo_abs_rel_error_median") is None else 100 * s["tempo_abs_rel_error_median"]),
                _fmt(s.get("pulse_mean")),
                _fmt(s.get("bcs_mean")),
                _fmt(s.get("key_adherence_mean")),
                _fmt(s.get("ksi_mean")),
                _fmt(s.get("fad")),
                _fmt(s.get("fad_inf")),
            ]
        )
    header = [
        "variant",
        "spec",
        "speed",
        "wall s/clip",
        "RTF",
        "peak RSS MB",
        "GFLOP/backbone call",
        "tempo acc1",
        "tempo acc2",
        "|tempo err| % (median)",
        "pulse",
        "BCS",
        "key adherence",
        "KSI",
        "FAD",
        "FAD∞",
    ]
    out += [_table(header, rows), ""]
    others = [v for v in variants if not v.get("is_baseline")]
    if others:
        out += ["## Fidelity against the baseline (same prompts and seeds)", ""]
        rows = [
            [f"`{v['name']}`"]
            + [
                _fmt(v["summary"].get(k))
                for k in ("lsd_mean", "mrstft_mean", "mel_distance_mean", "si_sdr_mean", "complex_stft_mean")
            ]
            + [_fmt(v["summary"].get("tsr_gmean")), str(v["summary"].get("n_paired", 0))]
            for v in others
        ]
        header = ["variant", "LSD dB", "MR-STFT", "mel L1", "SI-SDR dB", "complex-STFT", "TSR (gmean)", "clips"]
        out += [_table(header, rows), ""]
    out += _edit_section(variants)
    for field, title in (("by_collection", "Per collection"), ("by_family", "Per instrument family")):
        groups = sorted({g for v in variants for g in v[field]})
        out += [f"## {title}", "", "tempo acc2 / key adherence (mean over clips; n clips)", ""]
        rows = []
        for g in groups:
            row = [g, str(max((v[field].get(g) or {}).get("n", 0) for v in variants))]
            for v in variants:
                cell = v[field].get(g) or {}
                row.append(f"{_fmt(cell.get('tempo_acc2'), 2)} / {_fmt(cell.get('key_adherence'), 2)}")
            rows.append(row)
        out += [_table([title.split()[-1], "n"] + [f"`{v['name']}`" for v in variants], rows), ""]
    eff_rows = []
    for v in variants:
        e = v["efficiency"]
        shape = e.get("backbone_call_shape") or {}
        eff_rows.append(
            [
                f"`{v['name']}`",
                _fmt(e.get("params")),
                _fmt(None if e.get("model_bytes") is None else e["model_bytes"] / 2**20),
                _fmt(e.get("backbone_calls_per_clip")),
                f"{shape.get('batch', '–')} × {shape.get('frames', '–')}",
                _fmt(None if e.get("flops_per_clip") is None else e["flops_per_clip"] / 1e9),
                _fmt(e.get("wall_s_total")),
                _fmt(e.get("peak_rss_growth_mb")),
                _fmt(e.get("cuda_max_mb")),
                str(e.get("rss_scope")),
                str(e.get("device")),
            ]
        )
    header = [
        "variant",
        "params",
        "model MB",
        "backbone calls/clip",
        "call batch × frames",
        "GFLOP/clip",
        "wall s total",
        "RSS growth MB",
        "CUDA max MB",
        "RSS scope",
        "device",
    ]
    out += ["## Efficiency details", "", _table(header, eff_rows), ""]
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots] + [""]
    skipped: dict[str, int] = {}
    for v in variants:
        for c in v["clips"]:
            for k in list(c.get("skipped") or {}) + list(c.get("paired_skipped") or {}):
                skipped[k] = skipped.get(k, 0) + 1
    notes = list(results.get("notes") or [])
    notes += [f"{k}: not applicable to {n} clip(s) (see `skipped` in results.json)" for k, n in sorted(skipped.items())]
    notes.append("FLOPs are what torch.utils.flop_counter sees (aten matmuls and convolutions): kernels outside aten, "
                 "such as custom low-bit matmuls, are not counted, so a quantized variant's FLOPs understate its "
                 "work")  # fmt: skip
    notes.append("structure and pitch drift are not scored: generated clips have no reference sections, and pitch "
                 "drift needs torchcrepe and a monophonic line")  # fmt: skip
    out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Metric versions", "", ", ".join(f"{k} `{v}`" for k, v in results["metric_versions"].items()), ""]
    return "\n".join(out)


def write_outputs(results: dict, out: Path, plots: bool = True) -> dict:
    """Write ``results.json``, the plots and ``report.md`` under ``out``; return their paths."""
    out = Path(out)
    paths = {"results": atomic_write_json(out / "results.json", results)}
    written = write_plots(results, out / "plots") if plots else []
    paths["plots"] = written
    paths["report"] = atomic_write_text(out / "report.md", render_markdown(results, [p.name for p in written]))
    return paths
