"""The listening-test report: one JSON-ready dict, and its Markdown rendering."""

import math
from dataclasses import asdict

from .config import ANCHORS, ListenConfig
from .stats import SCREEN_FRACTION, SCREEN_SCORE, abx_results, mushra_result
from .store import AnswerStore

__all__ = ["REPORT_VERSION", "build_report", "render_markdown"]

REPORT_VERSION = 1


def build_report(config: ListenConfig, store: AnswerStore) -> dict:
    """Every statistic of the test as plain JSON types (floats that are not finite become ``None``)."""
    listeners = store.listeners()
    report: dict = {
        "report_version": REPORT_VERSION,
        "title": config.title,
        "config": str(config.path),
        "database": str(store.path),
        "listeners": [{"id": k, "name": v} for k, v in listeners.items()],
    }
    if config.mushra:
        anchors = list(ANCHORS) if config.anchors else []
        trials = {t.name for t in config.mushra}
        rows = [r for r in store.mushra_rows() if r[1] in trials]
        res = mushra_result(rows, config.condition_names, anchors)
        report["mushra"] = {
            "trials": len(config.mushra),
            "screening_rule": (
                f"BS.1534-3: exclude a listener who rates the hidden reference below {SCREEN_SCORE:g}, or the "
                f"mid-range anchor above {SCREEN_SCORE:g}, in more than {SCREEN_FRACTION:.0%} of their trials"
            ),
            **asdict(res),
        }
    if config.abx:
        report["abx"] = [asdict(r) for r in abx_results(store.abx_rows(), [c.name for c in config.abx])]
    return _clean(report)


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _p(value) -> str:
    return "–" if value is None else (f"{value:.2e}" if value < 1e-3 else f"{value:.4f}")


def render_markdown(report: dict) -> str:
    """The report as Markdown: listeners, MUSHRA screening and per-condition table, ABX table."""
    names = {entry["id"]: entry["name"] for entry in report["listeners"]}
    lines = [f"# Listening test: {report['title']}", "", f"- config: `{report['config']}`"]
    lines += [f"- answers: `{report['database']}`", f"- listeners: {len(report['listeners'])}", ""]
    mushra = report.get("mushra")
    if mushra:
        kept = len(mushra["listeners"]) - len(mushra["excluded"])
        lines += ["## MUSHRA", "", f"{mushra['trials']} trials; {len(mushra['listeners'])} listeners answered, "]
        lines[-1] += f"{kept} kept after post-screening ({mushra['screening_rule']})."
        lines.append("")
        for listener, reasons in mushra["excluded"].items():
            lines.append(f"- excluded {names.get(listener, '?')} (`{listener}`): {'; '.join(reasons)}")
        if mushra["excluded"]:
            lines.append("")
        lines += [
            "| condition | n | mean | 95% CI | Wilcoxon vs reference: W | p | p (Holm) |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        for c in mushra["conditions"]:
            ci = "–" if c["ci_low"] is None else f"[{c['ci_low']:.1f}, {c['ci_high']:.1f}]"
            w = _num(c["wilcoxon_statistic"])
            lines.append(
                f"| {c['condition']} | {c['n']} | {_num(c['mean'])} | {ci} | {w} | {_p(c['wilcoxon_p'])} "
                f"| {_p(c['wilcoxon_p_holm'])} |"
            )
        lines.append("")
        if mushra["friedman_p"] is not None:
            lines.append(
                f"Friedman test across {', '.join(mushra['friedman_conditions'])} "
                f"({mushra['friedman_blocks']} blocks): χ² = {mushra['friedman_statistic']:.3f}, "
                f"p = {_p(mushra['friedman_p'])}."
            )
            lines.append("")
        for note in mushra["notes"]:
            lines += [f"Note: {note}.", ""]
    abx = report.get("abx")
    if abx:
        lines += ["## ABX", "", "| comparison | answers | correct | proportion | p (one-sided binomial) |"]
        lines.append("|---|---:|---:|---:|---:|")
        for r in abx:
            lines.append(f"| {r['comparison']} | {r['n']} | {r['correct']} | {_num(r['proportion'], '.2f')} | ")
            lines[-1] += f"{_p(r['p_value'])} |"
        lines.append("")
    return "\n".join(lines)
