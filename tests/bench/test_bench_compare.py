import json

import pytest
from bench_helpers import cli

from accelerando.bench.compare import compare_results, format_comparison, load_results
from accelerando.bench.report import pareto_front, quality_axis, render_markdown
from accelerando.bench.runner import RESULTS_SCHEMA
from accelerando.errors import UserError


def _results(variants, versions=None, suite="quick-v1", n=16):
    return {
        "schema": RESULTS_SCHEMA,
        "suite": {"id": suite, "n_prompts": n},
        "metric_versions": versions or {"tempo": "tempo-acc-v1", "fad": "fad-v1"},
        "variants": [
            {"name": name, "summary": summary, "efficiency": eff, "is_baseline": i == 0}
            for i, (name, summary, eff) in enumerate(variants)
        ],
    }


def _row(cmp, metric, pair=0):
    return next(r for r in cmp["pairs"][pair]["metrics"] if r["metric"] == metric)


def test_deltas_and_directions():
    eff_a, eff_b = {"rtf_median": 4.0, "peak_rss_mb": 800}, {"rtf_median": 2.0, "peak_rss_mb": 800}
    a = _results([("base", {"tempo_acc2": 0.5, "fad_inf": 2.0, "n_clips": 16}, eff_a)])
    b = _results([("base", {"tempo_acc2": 0.75, "fad_inf": 2.5, "n_clips": 16}, eff_b)])
    cmp = compare_results(a, b)
    assert cmp["warnings"] == [] and len(cmp["pairs"]) == 1 and cmp["pairs"][0]["a"] == "base"
    r = _row(cmp, "tempo_acc2")
    assert (r["a"], r["b"], r["delta"], r["rel"], r["better"]) == (0.5, 0.75, 0.25, 0.5, True)
    r = _row(cmp, "fad_inf")  # lower is better: a rise is worse
    assert r["delta"] == pytest.approx(0.5) and r["rel"] == pytest.approx(0.25) and r["better"] is False
    r = _row(cmp, "rtf_median")
    assert r["delta"] == -2.0 and r["rel"] == -0.5 and r["better"] is False
    r = _row(cmp, "peak_rss_mb")
    assert r["delta"] == 0 and r["better"] is None  # unchanged
    assert all(r["metric"] != "n_clips" for r in cmp["pairs"][0]["metrics"])  # counts are not metrics
    text = format_comparison(cmp)
    assert "variant base (B − A)" in text
    line = next(x for x in text.splitlines() if x.startswith("tempo_acc2"))
    assert "+0.25" in line and "+50.0%" in line and line.rstrip().endswith("better")
    line = next(x for x in text.splitlines() if x.startswith("fad_inf"))
    assert "+25.0%" in line and line.rstrip().endswith("worse")


def test_missing_values_and_zero_base():
    a = _results([("v", {"lsd_mean": None, "si_sdr_mean": 0.0}, {})])
    b = _results([("v", {"lsd_mean": 1.0, "si_sdr_mean": 3.0}, {})])
    cmp = compare_results(a, b)
    r = _row(cmp, "lsd_mean")
    assert r["delta"] is None and r["better"] is None
    r = _row(cmp, "si_sdr_mean")
    assert r["delta"] == 3.0 and r["rel"] is None and r["better"] is True


def test_pairing_by_name_or_single_variant():
    a = _results([("fp", {"fad": 1.0}, {}), ("w4", {"fad": 2.0}, {})])
    b = _results([("w4", {"fad": 1.5}, {}), ("other", {"fad": 9.0}, {})])
    cmp = compare_results(a, b)
    assert [(p["a"], p["b"]) for p in cmp["pairs"]] == [("w4", "w4")]
    assert _row(cmp, "fad")["delta"] == -0.5
    cmp = compare_results(_results([("x", {"fad": 1.0}, {})]), _results([("y", {"fad": 3.0}, {})]))
    assert [(p["a"], p["b"]) for p in cmp["pairs"]] == [("x", "y")] and _row(cmp, "fad")["delta"] == 2.0
    with pytest.raises(UserError, match="no variant names in common"):
        compare_results(a, _results([("p", {}, {}), ("q", {}, {})]))


def test_warnings_for_incomparable_runs():
    a = _results([("v", {"fad": 1.0}, {})], versions={"fad": "fad-v1"})
    b = _results([("v", {"fad": 1.0}, {})], versions={"fad": "fad-v2"}, suite="full-v1", n=64)
    w = compare_results(a, b)["warnings"]
    assert any("different suites" in x for x in w) and any("fad-v1 in A, fad-v2 in B" in x for x in w)
    b = _results([("v", {"fad": 1.0}, {})], versions={"fad": "fad-v1"}, n=2)
    assert any("--limit" in x for x in compare_results(a, b)["warnings"])


def test_load_results_errors(tmp_path):
    with pytest.raises(UserError, match="results file not found"):
        load_results(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_results(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"schema": "nope"}))
    with pytest.raises(UserError, match="not a bench results file"):
        load_results(tmp_path / "y.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(_results([("v", {}, {})])))
    assert load_results(run)["variants"][0]["name"] == "v"  # a run folder works too


def test_compare_cli(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_results([("v", {"tempo_acc1": 0.25}, {"wall_s_median": 2.0})])))
    b.write_text(json.dumps(_results([("v", {"tempo_acc1": 0.5}, {"wall_s_median": 1.0})])))
    assert cli(["bench", "compare", str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["metric"]: r for r in data["pairs"][0]["metrics"]}
    assert rows["tempo_acc1"]["delta"] == 0.25 and rows["wall_s_median"]["delta"] == -1.0
    assert rows["wall_s_median"]["better"] is True
    assert cli(["bench", "compare", str(a), str(b)]) == 0
    assert "tempo_acc1" in capsys.readouterr().out
    assert cli(["bench", "compare", str(a), str(tmp_path / "missing.json")]) == 2
    assert "results file not found" in capsys.readouterr().err


def test_list_cli(capsys):
    assert cli(["bench", "list"]) == 0
    out = capsys.readouterr().out
    assert "suite quick-v1: 16 prompts x 10 s" in out and "suite full-v1: 64 prompts x 20 s" in out
    assert "technique quantize (main argument: preset)" in out


def test_pareto_front():
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0)]
    assert pareto_front(pts) == [0, 1, 4, 3]  # (3, 4) is beaten by (2, 3); ties both stay
    assert pareto_front([(1.0, 0.2), (2.0, 0.9)], lower_is_better=False) == [0, 1]
    assert pareto_front([(1.0, 0.9), (2.0, 0.2)], lower_is_better=False) == [0]


def test_quality_axis_fallback():
    r = _results([("a", {"fad_inf": 1.0, "fad": 2.0}, {}), ("b", {"fad_inf": None, "fad": 3.0}, {})])
    assert quality_axis(r)[0] == "fad" and quality_axis(r)[3] == [2.0, 3.0]
    r = _results([("a", {"mrstft_mean": None}, {}), ("b", {"mrstft_mean": 0.7}, {})])
    key, _, lower, vals = quality_axis(r)
    assert key == "mrstft_mean" and lower and vals == [0.0, 0.7]  # the baseline against itself is 0
    r = _results([("a", {"key_adherence_mean": 0.4}, {})])
    assert quality_axis(r)[:3] == ("key_adherence_mean", "key adherence (higher is better)", False)
    assert quality_axis(_results([("a", {}, {})])) is None


def test_markdown_renders_missing_values():
    r = _results([("base", {}, {}), ("w4", {"lsd_mean": 1.5}, {"speedup_vs_baseline": 2.0})])
    r |= {
        "created": "2026-01-01T00:00:00+00:00",
        "accelerando": "0.1.0",
        "command": "accelerando bench run",
        "machine": {"cpu": "X", "cpu_count": 2, "torch": "2", "torch_threads": 2},
        "baseline": "base",
        "reference": {"source": None},
        "notes": ["FAD skipped: no reference audio"],
    }
    r["suite"] |= {"durations": [10.0], "generation": {"steps": 8, "cfg": 3, "sampler": "euler"}, "sha256": "ab" * 32}
    for v in r["variants"]:
        v |= {"spec": v["name"], "by_collection": {}, "by_family": {}, "clips": []}
    md = render_markdown(r)
    assert "| `w4` | 1.5 |" in md and "2×" in md and "FAD skipped: no reference audio" in md
