import importlib.util
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from accelerando.eval import fad as fad_mod
from accelerando.eval.embeddings import (
    EMBEDDERS,
    VGGishEmbedder,
    VGGishNet,
    WaveEncoderNet,
    get_embedder,
)
from accelerando.eval.fad import fad, fad_inf, frechet_distance, kad, per_clip_fad


def _gaussian(rng, n, mu, std):
    return mu + std * rng.standard_normal((n, len(mu)))


def test_identical_gaussians_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 6))
    mu, s = a.mean(0), np.cov(a, rowvar=False)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8


def test_diagonal_closed_form_and_symmetry():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    v1, v2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, np.diag(v2), mu1, np.diag(v1)) == pytest.approx(got, rel=1e-9)
    a, b = rng.standard_normal((100, 4)), rng.standard_normal((120, 4)) + 0.5
    assert fad(a, b) == pytest.approx(fad(b, a), rel=1e-6)


def test_fad_inf_intercept_near_true_distance():
    rng = np.random.default_rng(2)
    d = 8
    mu_p, mu_r = np.zeros(d), np.full(d, 0.3)
    true = frechet_distance(mu_p, np.eye(d), mu_r, 1.5 * np.eye(d))
    pred, ref = _gaussian(rng, 2000, mu_p, 1.0), _gaussian(rng, 20000, mu_r, np.sqrt(1.5))
    out = fad_inf(pred, ref, min_n=50, seed=0)
    assert set(out) >= {"fad_inf", "slope", "r2", "ns"}
    assert abs(out["fad_inf"] - true) < 0.1 * true
    assert out["fad_inf"] < fad(pred[:50], ref)
    assert out["slope"] > 0
    assert fad_inf(pred, ref, min_n=50, seed=0) == out  # fixed seed -> deterministic


def test_sqrtm_failure_raises_not_sentinel(monkeypatch):
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m, *a, **k: np.full_like(m, np.nan))
    with pytest.raises(ValueError, match="sqrtm"):
        frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3))


def test_sqrtm_retry_with_offset(monkeypatch):
    real, calls = scipy.linalg.sqrtm, []

    def flaky(m, *a, **k):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real(m)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky)
    assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(0.0, abs=1e-5)
    assert len(calls) == 2


def test_input_errors():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="N > d"):
        fad(rng.standard_normal((5, 8)), rng.standard_normal((50, 8)))
    bad = rng.standard_normal((50, 4))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fad(bad, rng.standard_normal((50, 4)))
    with pytest.raises(ValueError):
        fad_inf(rng.standard_normal((20, 4)), rng.standard_normal((50, 4)), min_n=30)


def test_per_clip_and_kad():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((300, 4))
    clips = [rng.standard_normal((10, 4)), rng.standard_normal((10, 4)) + 3.0]
    near, far = per_clip_fad(clips, ref)
    assert 0 <= near < far
    assert abs(kad(rng.standard_normal((200, 4)), ref)) < 0.02
    assert kad(clips[1], ref) > 0.1
    assert fad_mod.KAD_VERSION == "kad-v1" and fad_mod.FAD_VERSION == "fad-v1"


def test_melstats_shape_and_determinism():
    emb = get_embedder("melstats")
    y = np.random.default_rng(5).standard_normal(24000 * 2) * 0.1
    out = emb.embed(y)
    assert out.shape == (3, 128) and out.dtype == np.float64
    np.testing.assert_array_equal(out, emb.embed(y))


def _tone(f0: float, seconds: float, sr: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return 0.2 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))


def test_melflow_sees_broken_continuity():
    emb = get_embedder("melflow")
    sr = emb.sample_rate
    tones = [_tone(220 * 2 ** (k / 12), 1.0) for k in (0, 2, 4, 5, 7, 9, 11, 12)]
    phrase = np.concatenate(tones)  # 8 s: one sustained tone per second
    out = emb.embed(phrase)
    assert out.shape == (7, 40) and out.dtype == np.float64 and emb.dim == 40
    np.testing.assert_array_equal(out, emb.embed(phrase))
    # cut the same audio into 0.25 s pieces and reorder them: same spectra, broken continuity
    pieces = phrase.reshape(-1, sr // 4)
    shuffled = np.concatenate(pieces[np.random.default_rng(0).permutation(len(pieces))])
    lag_sim = out[:, 1:4].mean(0) / 30  # mean similarity with the frame 0.25, 0.5 and 1 s earlier
    lag_sim_shuffled = emb.embed(shuffled)[:, 1:4].mean(0) / 30
    assert lag_sim.min() > 0.8 and (lag_sim - lag_sim_shuffled).mean() > 0.1


@pytest.mark.skipif(importlib.util.find_spec("torchcrepe") is None, reason="torchcrepe not installed")
def test_crepe_shape_and_determinism():
    emb = get_embedder("crepe")
    t = np.arange(32000) / 16000
    y = 0.3 * np.sin(2 * np.pi * 440 * t)
    out = emb.embed(y)
    assert out.shape == (3, 64) and emb.dim == 64 and out.dtype == np.float64
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, emb.embed(y))


@pytest.mark.parametrize("name", ["vggish", "clap", "encodec", "mert"])
def test_local_loader_missing_file(name, tmp_path, monkeypatch):
    monkeypatch.delenv(EMBEDDERS[name].env_var, raising=False)
    with pytest.raises(FileNotFoundError, match="Download .*"):
        get_embedder(name)
    with pytest.raises(FileNotFoundError, match=EMBEDDERS[name].env_var):
        get_embedder(name, path=tmp_path / "missing.safetensors")


def _save(net, arch, path):
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(path), metadata={"arch": json.dumps(arch)})


@pytest.mark.parametrize("name", ["clap", "encodec", "mert"])
def test_local_loader_wave_standin(name, tmp_path, monkeypatch):
    arch = {"channels": [4, 8], "stride": 4, "dim": 6}
    torch.manual_seed(0)
    net = WaveEncoderNet(channels=(4, 8), stride=4, dim=6)
    path = tmp_path / f"{name}.safetensors"
    _save(net, arch, path)
    monkeypatch.setenv(EMBEDDERS[name].env_var, str(path))
    emb = get_embedder(name)
    sr = emb.sample_rate
    y = np.random.default_rng(6).standard_normal(2 * sr) * 0.1
    out = emb.embed(y)
    assert out.shape == (3, 6)
    window = torch.from_numpy(y[:sr]).float()[None, None]
    np.testing.assert_allclose(out[0], net(window)[0].detach().double().numpy(), rtol=1e-5, atol=1e-6)


def test_local_loader_vggish_standin(tmp_path):
    arch = {"channels": [2, 2, 2, 2, 2, 2], "hidden": 8, "dim": 5}
    net = VGGishNet(channels=(2,) * 6, hidden=8, dim=5)
    path = tmp_path / "vggish.safetensors"
    _save(net, arch, path)
    emb = VGGishEmbedder(path=path)
    out = emb.embed(np.random.default_rng(7).standard_normal(24000) * 0.1)
    assert out.shape == (2, 5) and out.dtype == np.float64
    wrong = tmp_path / "wrong.safetensors"
    _save(VGGishNet(channels=(3,) * 6, hidden=8, dim=5), arch, wrong)
    with pytest.raises(RuntimeError):  # strict state-dict load rejects mismatched shapes
        VGGishEmbedder(path=wrong)
