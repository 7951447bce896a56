"""The sparse-edit technique: each clip of the variant is a sparse edit, compared with full regeneration."""

import json

import numpy as np
import pytest
import soundfile as sf
from bench_helpers import Loader, cli, write_suite

import accelerando
from accelerando.bench.edit import edit_metrics, region_of
from accelerando.bench.prompts import load_suite
from accelerando.bench.runner import BenchConfig, run_bench
from accelerando.bench.variants import parse_variant, parse_variants
from accelerando.errors import UserError


def test_spec_parses():
    v = parse_variant("sparse10=builtin+sparse-edit:0.1")
    assert v.name == "sparse10" and v.model == "builtin"
    (t,) = v.techniques
    assert t.kind == "sparse-edit" and t.options == {"fraction": 0.1} and t.label() == "sparse-edit-0.1"
    v = parse_variant("builtin+sparse-edit:0.25:halo=0.25:cache_update=reuse:macs=false")
    assert v.techniques[0].options == {"fraction": 0.25, "halo": 0.25, "cache_update": "reuse", "macs": False}
    assert v.name == "builtin+sparse-edit-0.25-halo_0.25-cache_update_reuse-macs_False"


@pytest.mark.parametrize("fraction", ["0", "-0.1", "1", "1.5", "abc", "nan", "true"])
def test_bad_fraction_is_a_user_error(fraction):
    with pytest.raises(UserError, match="fraction .* between 0 and 1"):
        parse_variant(f"builtin+sparse-edit:{fraction}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("builtin+sparse-edit", "needs the edited fraction"),
        ("builtin+sparse-edit:0.1:foo=1", "no option 'foo'"),
        ("builtin+sparse-edit:0.1:halo=-1", "halo=-1"),
        ("builtin+sparse-edit:0.1:cache_update=never", "cache_update='never'"),
        ("builtin+sparse-edit:0.1+quantize:w8a8-rtn", "must be the last one"),
    ],
)
def test_bad_options(spec, match):
    with pytest.raises(UserError, match=match):
        parse_variant(spec)


@pytest.mark.parametrize("fraction", ["0", "1", "x"])
def test_cli_bad_fraction_exits_2_with_one_line(tmp_path, capsys, fraction):
    suite = write_suite(tmp_path / "suite.json")
    code = cli(["bench", "run", "--suite", str(suite), "--variants", f"builtin,e=builtin+sparse-edit:{fraction}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "fraction" in err
    assert not (tmp_path / "out").exists()


def test_bench_list_shows_the_technique(capsys):
    assert cli(["bench", "list"]) == 0
    assert "technique sparse-edit (main argument: fraction)" in capsys.readouterr().out


def test_region_is_centred():
    assert region_of(10.0, 0.1) == pytest.approx((4.5, 5.5))
    assert region_of(2.0, 0.5) == pytest.approx((0.5, 1.5))


@pytest.fixture(scope="module")
def edit_run(tmp_path_factory):
    """Baseline and a 20% sparse-edit variant on 2 prompts of 1.5 s (tiny random pipelines)."""
    root = tmp_path_factory.mktemp("bench_edit")
    model = root / "gen.safetensors"
    model.write_bytes(b"weights are not read: the loader is replaced")
    write_suite(root / "suite.json", n=2, duration=1.5)
    loader = Loader()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACCELERANDO_CACHE", str(root / "cache"))  # no corpus: FAD is skipped with a note
        mp.setattr(accelerando, "load_pipeline", loader)
        cfg = BenchConfig(
            suite=load_suite(str(root / "suite.json")),
            variants=parse_variants(f"base={model},edit={model}+sparse-edit:0.2:halo=0.1"),
            out=root / "out",
            progress=False,
            plots=False,
            warmup=False,
        )
        results = run_bench(cfg)
        yield {"root": root, "out": root / "out", "results": results, "cfg": cfg, "loader": loader, "mp": mp}


def _variant(results, name):
    return next(v for v in results["variants"] if v["name"] == name)


def test_edit_figures_in_results(edit_run):
    results = json.loads((edit_run["out"] / "results.json").read_text())
    base, edit = _variant(results, "base"), _variant(results, "edit")
    assert results["metric_versions"]["edit"] == "bench-edit-v1" and results["metric_versions"]["seam"] == "seam-v2"
    assert base["edit"] is None and all(c["edit"] is None for c in base["clips"])
    s = edit["edit"]
    assert s["n_edits"] == 2 and s["fraction"] == 0.2 and s["cache_update"] == "refresh"
    assert s["outside_identical"] is True and s["n_outside_identical"] == 2
    # (on this tiny model the codec, encoded and decoded in full, outweighs the backbone: no MACs saving here)
    assert s["speedup_wall_median"] > 0 and s["macs_ratio_median"] > 0 and s["macs_ratio_edit_only_median"] > 0
    assert 0 < s["tokens_recomputed_median"] < s["tokens_median"]
    for c in edit["clips"]:
        e = c["edit"]
        assert e["region_s"] == pytest.approx([0.6, 0.9]) and e["edit_seed"] == e["seed"] + 1
        assert e["wall_full_s"] > 0 and e["wall_sparse_s"] > 0 and e["wall_sparse_to_audio_s"] > 0
        assert c["timings"]["wall_s"] == e["wall_sparse_s"] and c["timings"]["call_wall_s"] > e["wall_sparse_s"]
        assert e["macs_sparse"] >= e["macs_sparse_edit_only"] > 0 and e["sparse_evals"] == 2
        assert e["macs_ratio"] == pytest.approx(e["macs_full"] / e["macs_sparse"])
        assert e["cache_mb"] > 0 and e["disk_mb"] > 0
        m = e["metrics"]
        for key in ("lsd", "mrstft", "complex_stft"):
            assert m[f"{key}_sparse_vs_full"] >= 0 and m[f"{key}_full_vs_orig"] > 0
        assert m["seam_sparse"] > 0 and m["seam_full"] > 0
        # the excess divides by at least the v1 scale, so it can only be smaller
        assert 0 < m["seam_sparse_excess"] <= m["seam_sparse"] and m["seam_sparse_artifacts"] in (0, 1, 2)
        assert m["outside_identical"] and m["outside_identical_full"] and m["outside_max_abs_diff"] == 0.0
        assert set(c["side_audio"]) == {"orig", "full"}
    # the suite's own metrics still work on the edited clips, and paired metrics against the baseline
    assert edit["summary"]["n_clips"] == 2 and edit["summary"]["n_paired"] == 2
    assert all(c["metrics"]["tempo_bpm"] is not None for c in edit["clips"])
    report = (edit_run["out"] / "report.md").read_text()
    assert "## Sparse edits against full regeneration (same seed)" in report and "| `edit` | 20%" in report


def test_outside_region_samples_are_identical(edit_run):
    out = edit_run["out"]
    for p in edit_run["cfg"].suite.prompts:
        sparse, sr = sf.read(out / "edit" / f"{p.id}.wav", dtype="float32")
        orig, _ = sf.read(out / "edit" / f"{p.id}.orig.wav", dtype="float32")
        base, _ = sf.read(out / "base" / f"{p.id}.wav", dtype="float32")
        a, b = int(0.6 * sr), int(0.9 * sr)
        assert sparse.shape == orig.shape
        assert np.array_equal(sparse[:a], orig[:a]) and np.array_equal(sparse[b:], orig[b:])
        assert not np.array_equal(sparse[a:b], orig[a:b])  # the region was really regenerated
        assert np.array_equal(orig, base)  # the session clip is the baseline's clip (same prompt and seed)


def test_edit_run_resumes(edit_run):
    out, cfg = edit_run["out"], edit_run["cfg"]
    before = json.loads((out / "results.json").read_text())
    cfg.stats.clear()
    run_bench(cfg)
    assert cfg.stats["generated"] == {"base": 0, "edit": 0} and "edits_scored" not in cfg.stats
    p0 = cfg.suite.prompts[0]
    (out / "edit" / f"{p0.id}.full.wav").unlink()  # a missing side file: that clip is redone
    cfg.stats.clear()
    results = run_bench(cfg)
    assert cfg.stats["generated"] == {"base": 0, "edit": 1} and cfg.stats["edits_scored"] == {"edit": 1}
    clip = _variant(results, "edit")["clips"][0]
    assert clip["edit"]["metrics"]["outside_identical"]
    old = _variant(before, "edit")["clips"][1]["edit"]
    assert _variant(results, "edit")["clips"][1]["edit"]["wall_full_s"] == old["wall_full_s"]  # reused


def test_edit_metrics_flag_changed_outside_samples():
    sr = 8000
    rng = np.random.default_rng(0)
    orig = rng.standard_normal(2 * sr) * 0.1
    full = orig.copy()
    full[int(0.9 * sr) : int(1.1 * sr)] = rng.standard_normal(int(1.1 * sr) - int(0.9 * sr)) * 0.1
    sparse = full.copy()
    m, _ = edit_metrics(orig, full, sparse, sr, (0.9, 1.1))
    assert m["outside_identical"] and m["lsd_sparse_vs_full"] == 0 and m["lsd_full_vs_orig"] > 0
    sparse[10] += 1e-3
    m, _ = edit_metrics(orig, full, sparse, sr, (0.9, 1.1))
    assert not m["outside_identical"] and m["outside_max_abs_diff"] == pytest.approx(1e-3)


def test_compare_includes_the_edit_figures(edit_run):
    from accelerando.bench.compare import compare_results, load_results

    res = load_results(edit_run["out"])
    cmp = compare_results(res, res)
    rows = {r["metric"]: r for p in cmp["pairs"] if p["a"] == "edit" for r in p["metrics"]}
    assert rows["edit.speedup_wall_median"]["delta"] == 0 and "edit.lsd_sparse_vs_full_median" in rows
    assert "edit.n_edits" not in rows
