"""Per-variant summaries of per-clip records: means, medians, groups by collection and instrument family."""

import math
import statistics

__all__ = ["GROUP_METRICS", "group_summary", "quality_summary", "efficiency_summary"]

# Per-group numbers of the report's bars and tables.
GROUP_METRICS = ("tempo_acc1", "tempo_acc2", "key_adherence", "bcs", "ksi", "mrstft", "per_clip_fad")


def _values(clips: list[dict], section: str, key: str) -> list[float]:
    out = []
    for c in clips:
        v = (c.get(section) or {}).get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _gmean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x > 0]
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else None


def quality_summary(clips: list[dict]) -> dict:
    """Adherence and paired means over clips (None where no clip had the metric)."""
    m = lambda k: _values(clips, "metrics", k)  # noqa: E731
    p = lambda k: _values(clips, "paired", k)  # noqa: E731
    return {
        "n_clips": len(clips),
        "tempo_acc1": _mean(m("tempo_acc1")),
        "tempo_acc2": _mean(m("tempo_acc2")),
        "tempo_abs_rel_error_median": _median(m("tempo_abs_rel_error")),
        "n_tempo": len(m("tempo_acc1")),
        "pulse_mean": _mean(m("pulse")),
        "bcs_mean": _mean(m("bcs")),
        "n_bcs": len(m("bcs")),
        "key_adherence_mean": _mean(m("key_adherence")),
        "n_key": len(m("key_adherence")),
        "ksi_mean": _mean(m("ksi")),
        "n_ksi": len(m("ksi")),
        "lsd_mean": _mean(p("lsd")),
        "mrstft_mean": _mean(p("mrstft")),
        "mel_distance_mean": _mean(p("mel_distance")),
        "si_sdr_mean": _mean(p("si_sdr")),
        "complex_stft_mean": _mean(p("complex_stft")),
        "tsr_gmean": _gmean(p("tsr")),
        "n_paired": len(p("mrstft")),
        "per_clip_fad_median": _median([c["per_clip_fad"] for c in clips if c.get("per_clip_fad") is not None]),
    }


def efficiency_summary(clips: list[dict], base_clips: list[dict] | None) -> dict:
    """Wall time, RTF, the per-prompt speed ratio against the baseline, and peak memory over the clips."""
    walls = _values(clips, "timings", "wall_s")
    rtfs = _values(clips, "timings", "rtf")
    ttfa = _values(clips, "timings", "first_audio_s")
    rss = _values(clips, "memory", "peak_rss_mb")
    growth = [
        c["memory"]["peak_rss_mb"] - c["memory"]["rss_start_mb"]
        for c in clips
        if (c.get("memory") or {}).get("rss_start_mb") is not None and c["memory"].get("peak_rss_mb") is not None
    ]
    cuda = _values(clips, "memory", "cuda_max_mb")
    speedup = None
    if base_clips is not None:
        base = {c["id"]: (c.get("timings") or {}).get("wall_s") for c in base_clips}
        ratios = [
            base[c["id"]] / c["timings"]["wall_s"]
            for c in clips
            if base.get(c["id"]) and (c.get("timings") or {}).get("wall_s")
        ]
        speedup = _median(ratios)
    scopes = {(c.get("memory") or {}).get("rss_scope") for c in clips} - {None}
    return {
        "wall_s_median": _median(walls),
        "wall_s_total": sum(walls) if walls else None,
        "rtf_median": _median(rtfs),
        "speedup_vs_baseline": speedup,
        "ttfa_s_median": _median(ttfa),
        "peak_rss_mb": max(rss) if rss else None,
        "peak_rss_growth_mb": max(growth) if growth else None,
        "rss_scope": "process" if "process" in scopes else ("clip" if scopes else None),
        "cuda_max_mb": max(cuda) if cuda else None,
    }


def group_summary(clips: list[dict], field: str) -> dict:
    """``{group: {"n", metric: mean, ...}}`` grouped by ``clip[field]`` (collection or family)."""
    groups: dict[str, list[dict]] = {}
    for c in clips:
        groups.setdefault(str(c.get(field)), []).append(c)
    out = {}
    for g in sorted(groups):
        cs = groups[g]
        row: dict = {"n": len(cs)}
        for k in GROUP_METRICS:
            if k == "per_clip_fad":
                row[k] = _mean([c["per_clip_fad"] for c in cs if c.get("per_clip_fad") is not None])
            elif k == "mrstft":
                row[k] = _mean(_values(cs, "paired", k))
            else:
                row[k] = _mean(_values(cs, "metrics", k))
        row["tempo_abs_rel_error_median"] = _median(_values(cs, "metrics", "tempo_abs_rel_error"))
        out[g] = row
    return out
