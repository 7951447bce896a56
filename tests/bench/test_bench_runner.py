"""End to end: the runner on a tiny random pipeline, 2 prompts of 1 s, three variants (baseline, an identical
variant through a no-op technique, a perturbed one)."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from bench_helpers import Loader, ToyEmbedder, _noop, _perturb, cli, write_suite

import accelerando
from accelerando.bench.prompts import load_suite
from accelerando.bench.report import PLOTS
from accelerando.bench.runner import CLIP_SCHEMA, RESULTS_SCHEMA, BenchConfig, run_bench
from accelerando.bench.variants import parse_variants, register_technique, unregister_technique


def _config(root, out, ref=None, plots=True, suite="suite.json", variants=None):
    model = root / "gen.safetensors"
    specs = variants or f"base={model},same={model}+noop,pert={model}+perturb:scale=0.05"
    return BenchConfig(
        suite=load_suite(str(root / suite)),
        variants=parse_variants(specs),
        out=out,
        ref=ref,
        progress=False,
        plots=plots,
        warmup=False,  # the CLI test below runs with the default warm-up
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One full run shared by the tests below (module scope keeps the suite fast)."""
    root = tmp_path_factory.mktemp("bench")
    (root / "gen.safetensors").write_bytes(b"weights are not read: the loader is replaced")
    write_suite(root / "suite.json", n=2, duration=1.0)
    loader = Loader()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACCELERANDO_CACHE", str(root / "cache"))  # no corpus there: FAD is skipped with a note
        mp.setattr(accelerando, "load_pipeline", loader)
        register_technique("noop", _noop, overwrite=True)
        register_technique("perturb", _perturb, overwrite=True)
        try:
            cfg = _config(root, root / "out")
            results = run_bench(cfg)
            yield {"root": root, "out": root / "out", "results": results, "loader": loader, "cfg": cfg, "mp": mp}
        finally:
            unregister_technique("noop")
            unregister_technique("perturb")


def test_results_schema(bench):
    out, results = bench["out"], bench["results"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema"] == RESULTS_SCHEMA and results["schema"] == RESULTS_SCHEMA
    assert on_disk["suite"]["id"] == "tiny-v1" and on_disk["suite"]["n_prompts"] == 2
    assert on_disk["baseline"] == "base"
    assert [v["name"] for v in on_disk["variants"]] == ["base", "same", "pert"]
    assert {"tempo", "pulse", "bcs", "key_adherence", "ksi", "lsd", "mrstft", "complex_stft", "fad_inf"} <= set(
        on_disk["metric_versions"]
    )
    for v in on_disk["variants"]:
        assert len(v["clips"]) == 2
        for key in ("tempo_acc1", "tempo_acc2", "key_adherence_mean", "bcs_mean", "ksi_mean", "fad", "fad_inf"):
            assert key in v["summary"]
        eff = v["efficiency"]
        assert eff["wall_s_median"] > 0 and eff["rtf_median"] > 0 and eff["peak_rss_mb"] > 0
        assert eff["flops_per_backbone_call"] > 0 and eff["backbone_calls_per_clip"] == 2  # 2 Euler steps
        assert eff["backbone_call_shape"]["batch"] == 1  # cfg=1: no unconditional branch
        assert eff["flops_per_clip"] == 2 * eff["flops_per_backbone_call"]
        assert eff["warmup_s"] is None  # warm-up off: the first timed clip was probed
        assert set(v["by_collection"]) == {"bach", "essenFolksong"}
        assert set(v["by_family"]) == {"keyboard", "strings"}
        for c in v["clips"]:
            wav, sr = sf.read(out / c["wav"])
            assert sr == 24000 and len(wav) == 24000
            assert c["metrics"]["tempo_bpm"] > 0
            assert c["metrics"]["tempo_acc1"] in (0.0, 1.0)
            assert c["metrics"]["tempo_rel_error"] == pytest.approx(c["metrics"]["tempo_bpm"] / c["bpm"] - 1)
            # a 1.5 s clip is too short for BCS (10 s) and KSI (8 s): None with the reason, not an error
            assert c["metrics"]["bcs"] is None and "10 s" in c["skipped"]["bcs"]
            assert c["metrics"]["ksi"] is None and "ksi" in c["skipped"]
    # same flops for the identical variant
    effs = [v["efficiency"]["flops_per_backbone_call"] for v in on_disk["variants"]]
    assert effs[0] == effs[1] == effs[2]


def test_summary_matches_clips(bench):
    for v in bench["results"]["variants"]:
        acc2 = [c["metrics"]["tempo_acc2"] for c in v["clips"]]
        assert v["summary"]["tempo_acc2"] == pytest.approx(np.mean(acc2))
        adh = [c["metrics"]["key_adherence"] for c in v["clips"]]
        assert v["summary"]["key_adherence_mean"] == pytest.approx(np.mean(adh))
        pulse = [c["metrics"]["pulse"] for c in v["clips"]]
        assert all(0 <= x <= 1 for x in pulse) and v["summary"]["pulse_mean"] == pytest.approx(np.mean(pulse))


def test_seeds_reproduce_and_paired_metrics(bench):
    out, variants = bench["out"], {v["name"]: v for v in bench["results"]["variants"]}
    base = variants["base"]
    assert base["summary"]["lsd_mean"] is None and base["efficiency"]["speedup_vs_baseline"] == 1.0
    for c in base["clips"]:
        assert c["paired"] is None
    # a no-op technique at the same seeds reproduces the baseline exactly
    for c in variants["same"]["clips"]:
        a, _ = sf.read(out / c["wav"])
        b, _ = sf.read(out / "base" / f"{c['id']}.wav")
        np.testing.assert_array_equal(a, b)
        assert c["paired"]["lsd"] == 0 and c["paired"]["complex_stft"] == 0 and c["paired"]["mrstft"] == 0
    # different prompts/seeds give different audio
    a, _ = sf.read(out / "base" / "p0.wav")
    b, _ = sf.read(out / "base" / "p1.wav")
    assert not np.array_equal(a, b)
    # the perturbed variant differs, and every paired metric sees it
    pert = variants["pert"]["summary"]
    assert pert["lsd_mean"] > 0 and pert["mrstft_mean"] > 0 and pert["complex_stft_mean"] > 0
    assert pert["n_paired"] == 2
    assert variants["pert"]["efficiency"]["speedup_vs_baseline"] > 0


def test_report_and_plots(bench):
    out = bench["out"]
    report = (out / "report.md").read_text()
    assert report.startswith("# accelerando bench: tiny-v1")
    for name in ("`base`", "`same`", "`pert`", "## Fidelity against the baseline", "## Per collection",
                 "## Per instrument family", "FAD skipped: no reference audio"):  # fmt: skip
        assert name in report
    for plot in PLOTS:
        data = (out / "plots" / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"plots/{plot}" in report
    results = bench["results"]
    assert results["reference"]["source"] is None
    assert any("FAD skipped" in n and "--ref" in n for n in results["notes"])


def test_clip_records(bench):
    rec = json.loads((bench["out"] / "pert" / "p1.json").read_text())
    assert rec["schema"] == CLIP_SCHEMA and rec["request"]["seed"] == 8 and rec["request"]["steps"] == 2
    assert rec["variant"]["techniques"] == [{"kind": "perturb", "options": {"scale": 0.05}}]
    assert rec["paired_against"]["baseline"] == "base"
    assert not list(bench["out"].rglob("*.tmp"))  # atomic writes leave nothing behind


def test_resume_does_not_regenerate(bench):
    out, root, loader = bench["out"], bench["root"], bench["loader"]
    assert len(loader.calls) == 3  # one pipeline per variant in the first run
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    records = {p: p.read_text() for p in out.glob("*/p*.json")}
    cfg = _config(root, out, plots=False)
    again = run_bench(cfg)
    assert len(loader.calls) == 3  # nothing was loaded, nothing generated
    assert cfg.stats["generated"] == {"base": 0, "same": 0, "pert": 0}
    assert cfg.stats["scored"] == {"base": 0, "same": 0, "pert": 0}
    assert cfg.stats["paired"] == {"same": 0, "pert": 0}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamps
    assert {p: p.read_text() for p in out.glob("*/p*.json")} == records
    assert [v["summary"] for v in again["variants"]] == [v["summary"] for v in bench["results"]["variants"]]

    # a lost clip (interrupted run) is regenerated alone, identically; its paired scores follow
    (out / "base" / "p1.wav").unlink()
    (out / "pert" / "p0.json").write_text("{ truncated")
    cfg = _config(root, out, plots=False)
    third = run_bench(cfg)
    assert cfg.stats["generated"] == {"base": 1, "same": 0, "pert": 1}
    assert cfg.stats["paired"] == {"same": 0, "pert": 1}  # base p1 has the same sha1, so only pert p0 is redone
    assert (out / "base" / "p1.wav").stat().st_mtime_ns != stamps[out / "base" / "p1.wav"]
    assert (out / "base" / "p0.wav").stat().st_mtime_ns == stamps[out / "base" / "p0.wav"]
    assert [v["summary"] for v in third["variants"]] == [v["summary"] for v in bench["results"]["variants"]]

    # a different request (another seed) is not mistaken for the stored clip
    suite = json.loads((root / "suite.json").read_text())
    suite["prompts"][0]["seed"] = 99
    (root / "suite2.json").write_text(json.dumps(suite))
    shutil.copytree(out / "base", root / "out2" / "base")
    cfg = _config(root, root / "out2", plots=False, suite="suite2.json", variants=f"base={root / 'gen.safetensors'}")
    run_bench(cfg)
    assert cfg.stats["generated"] == {"base": 1}


def test_interrupted_run_keeps_finished_clips(bench, tmp_path):
    """Ctrl-C during the second clip: the first clip and its record survive; the rerun generates only the rest."""
    root, loader = bench["root"], bench["loader"]
    model = root / "gen.safetensors"

    budget = {"calls": 1}  # generations allowed before the "Ctrl-C"

    class Interrupting:
        def __init__(self, pipe):
            self.pipe, self.model = pipe, pipe.model

        def __call__(self, *args, **kwargs):
            budget["calls"] -= 1
            if budget["calls"] < 0:
                raise KeyboardInterrupt
            return self.pipe(*args, **kwargs)

    register_technique("interrupt", lambda pipe, o: Interrupting(pipe), overwrite=True)
    spec = f"base={model}+interrupt"
    try:
        cfg = _config(root, tmp_path / "o", plots=False, variants=spec)
        with pytest.raises(KeyboardInterrupt):
            run_bench(cfg)
        assert (tmp_path / "o" / "base" / "p0.wav").is_file() and (tmp_path / "o" / "base" / "p0.json").is_file()
        assert not (tmp_path / "o" / "base" / "p1.wav").exists()
        assert not list((tmp_path / "o").rglob("*.tmp"))
        stamp = (tmp_path / "o" / "base" / "p0.wav").stat().st_mtime_ns
        budget["calls"] = 5
        cfg = _config(root, tmp_path / "o", plots=False, variants=spec)
        run_bench(cfg)
        assert cfg.stats["generated"] == {"base": 1}
        assert (tmp_path / "o" / "base" / "p0.wav").stat().st_mtime_ns == stamp
    finally:
        unregister_technique("interrupt")
    assert loader.calls


def test_interleaved_run_matches_sequential(bench):
    root, loader = bench["root"], bench["loader"]
    before = len(loader.calls)
    model = root / "gen.safetensors"
    cfg = _config(root, root / "inter", plots=False, variants=f"base={model},pert={model}+perturb:scale=0.05")
    cfg.interleave = True
    cfg.suite = cfg.suite.limit(1)
    results = run_bench(cfg)
    assert len(loader.calls) == before + 2 and cfg.stats["generated"] == {"base": 1, "pert": 1}
    for name in ("base", "pert"):  # same request, same seed: the same audio as the sequential run
        a, _ = sf.read(root / "inter" / name / "p0.wav")
        b, _ = sf.read(bench["out"] / name / "p0.wav")
        np.testing.assert_array_equal(a, b)
    pert = results["variants"][1]["clips"][0]
    assert pert["paired"]["lsd"] == pytest.approx(bench["results"]["variants"][2]["clips"][0]["paired"]["lsd"])


def test_fad_with_reference_dir(bench, tmp_path, monkeypatch):
    import accelerando.eval.embeddings as emb

    monkeypatch.setattr(emb, "get_embedder", lambda name="toy", **kw: ToyEmbedder())
    ref = tmp_path / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(ref / f"r{i}.wav", 0.1 * rng.standard_normal(24000), 24000)
    cfg = _config(bench["root"], bench["out"], ref=ref, plots=False)
    results = run_bench(cfg)
    assert results["reference"]["source"] == "dir" and results["reference"]["n_files"] == 3
    assert results["metric_versions"]["embedder"] == "emb-toy-test"
    for v in results["variants"]:
        s = v["summary"]
        assert s["fad"] > 0 and s["fad_inf"] is not None and s["per_clip_fad_median"] is not None
        assert all(c["per_clip_fad"] is not None for c in v["clips"])
    by = {v["name"]: v["summary"]["fad"] for v in results["variants"]}
    assert by["base"] == pytest.approx(by["same"])  # identical audio, identical FAD
    assert (bench["out"] / "ref_embeddings.npz").is_file()


def test_cli_run_json_and_errors(bench, capsys, tmp_path):
    root = bench["root"]
    code = cli(["bench", "run", "--suite", str(root / "suite.json"), "--variants", f"only={root / 'gen.safetensors'}",
                "--out", str(tmp_path / "o"), "--limit", "1", "--json", "--no-plots"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["schema"] == RESULTS_SCHEMA and data["suite"]["n_prompts"] == 1
    assert data["variants"][0]["name"] == "only" and (tmp_path / "o" / "only" / "p0.wav").is_file()
    assert "--limit 1" in data["command"]
    eff = data["variants"][0]["efficiency"]
    assert eff["warmup_s"] > 0 and eff["backbone_calls_per_clip"] == 2 and eff["flops_per_backbone_call"] > 0

    for argv, needle in (
        (["--suite", "nosuch"], "unknown suite 'nosuch'"),
        (["--variants", "builtin+nosuchtech"], "unknown technique 'nosuchtech'"),
        (["--variants", str(tmp_path / "missing.safetensors")], "model file not found"),
        (["--variants", "builtin"], "no built-in generator"),
        (["--limit", "0"], "--limit 0"),
        (["--ref", str(tmp_path / "noref"), "--variants", str(root / "gen.safetensors")], "--ref"),
    ):
        code = cli(["bench", "run", "--suite", str(root / "suite.json"), "--out", str(tmp_path / "e"), *argv])
        _, err = capsys.readouterr()
        assert code == 2 and needle in err and err.count("\n") == 1, (argv, err)
