import pytest
import torch

from accelerando.cache.dit_sparse import dilate_tokens, dit_forward, edited_tokens
from accelerando.cache.edit import SparseEditConfig, apply_sparse_edit
from accelerando.cache.session import load_session
from accelerando.errors import UserError
from accelerando.models.dit import DiTConditioning
from accelerando.testing.models import tiny_generator

SR = 24000


def _cond(b, t, known_mask=None):
    g = torch.Generator().manual_seed(1)
    return DiTConditioning(
        text_tokens=torch.randn(b, 5, 16, generator=g),
        text_mask=torch.tensor([[True] * 4 + [False]] * b),
        text_pooled=torch.randn(b, 16, generator=g),
        control=torch.randn(b, 32, generator=g),
        phases=torch.randn(b, t, 4, generator=g),
        known=torch.randn(b, t, 8, generator=g),
        known_mask=known_mask if known_mask is not None else (torch.rand(b, t, generator=g) > 0.5).float(),
        drop_text=torch.tensor([False, True][:b]),
    )


@pytest.mark.parametrize("autocast", [False, True])
def test_token_sparse_call_equals_full_call_on_the_subset(autocast):
    dit = tiny_generator().dit
    b, t = 2, 37  # 19 tokens of 2 frames, the last one padded
    x, tt, cond = torch.randn(b, t, 8), torch.rand(b), _cond(b, t)
    idx = torch.tensor([0, 3, 4, 5, 18])
    frames = torch.cat([torch.arange(2 * i, min(2 * i + 2, t)) for i in idx.tolist()])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ref = dit(x, tt, cond).float()
        full, rec = dit_forward(dit, x, tt, cond, record=True)
        sparse, rec_a = dit_forward(dit, x, tt, cond, idx=idx, kv=(rec.k, rec.v), record=True)
    tol = 1e-2 if autocast else 1e-5
    assert torch.allclose(full.float(), ref, atol=tol)  # the re-expressed forward is the model's forward
    assert torch.allclose(sparse.float()[:, frames], ref[:, frames], atol=tol)
    others = torch.ones(t, dtype=torch.bool)
    others[frames] = False
    assert (sparse[:, others] == 0).all()
    assert torch.allclose(rec_a.k.float(), rec.k[:, :, :, idx].float(), atol=tol)
    # stale cache entries change the active tokens' output: the cache is really read
    with torch.inference_mode():
        stale, _ = dit_forward(dit, x, tt, cond, idx=idx, kv=(rec.k + 1, rec.v))
    assert not torch.allclose(stale[:, frames], sparse[:, frames].to(stale.dtype), atol=1e-3)
    with pytest.raises(ValueError, match="kv"):
        dit_forward(dit, x, tt, cond, idx=idx)


def test_edited_and_dilated_tokens():
    mask = torch.ones(11)
    mask[4] = 0
    e = edited_tokens(mask, 2)
    assert e.tolist() == [False, False, True, False, False, False]
    assert edited_tokens(mask, 2, n_cached=5).tolist()[-1]
    assert dilate_tokens(e, 1).nonzero().flatten().tolist() == [1, 2, 3]
    assert dilate_tokens(e, 10).all() and dilate_tokens(torch.zeros(4, dtype=torch.bool), 2).sum() == 0


@pytest.fixture
def session(tmp_path, mel):
    pipe = apply_sparse_edit(mel(), SparseEditConfig(halo_s=0.1))
    d = tmp_path / "s"
    out = pipe.sparse_edit.generate(d, "a chorale", duration=2.0, steps=3, seed=1)
    return pipe, d, out


def _full(pipe, audio, seed, **kw):
    kw.setdefault("duration", audio.shape[-1] / SR)
    return pipe("a chorale", steps=3, generator=torch.Generator().manual_seed(seed), init_audio=audio, **kw)


def test_whole_clip_edit_equals_full_recompute(session, mel):
    pipe, d, out = session
    orig = load_session(d).audio
    sparse = pipe.sparse_edit.edit(d, regions=[(0.0, 2.0)], seed=4)
    st = sparse.metadata["sparse_edit"]
    assert st["tokens_recomputed"] == st["tokens"] and st["sparse"]
    full = _full(pipe, orig, 4, regions=[(0.0, 2.0)])
    assert torch.allclose(sparse.audio, full.audio, atol=1e-5)
    # the refreshed cache is a fresh recording of the new clip
    pipe2 = apply_sparse_edit(mel(), SparseEditConfig())
    fresh = pipe2.sparse_edit._record(  # noqa: SLF001 - the recording pass itself
        load_session(d).audio, pipe2.sparse_edit._settings(load_session(d).manifest), "a chorale", _all_run()
    )
    new = load_session(d)
    for e, k in fresh.rec.items():
        assert torch.allclose(new.cache["k"][e].float(), k["k"].float(), atol=1e-2)


def test_rhythm_guided_session_records_three_branches_and_edits_replay_them(tmp_path, mel):
    pipe = apply_sparse_edit(mel(), SparseEditConfig(halo_s=0.1))
    d = tmp_path / "r"
    out = pipe.sparse_edit.generate(d, "a chorale", duration=2.0, steps=3, seed=1, rhythm_cfg=5.0)
    s = load_session(d)
    assert s.manifest["batch"] == 3 and s.manifest["controls"]["rhythm_cfg"] == 5.0
    assert s.cache["k"][0].shape[1] == 3  # keys and values of all three branches
    ref = pipe("a chorale", duration=2.0, steps=3, generator=torch.Generator().manual_seed(1), rhythm_cfg=5.0)
    assert torch.allclose(out.audio, ref.audio, atol=1e-6)
    sparse = pipe.sparse_edit.edit(d, regions=[(0.0, 2.0)], seed=4)
    assert sparse.metadata["sparse_edit"]["sparse"]
    full = _full(pipe, s.audio, 4, regions=[(0.0, 2.0)], rhythm_cfg=5.0)
    assert torch.allclose(sparse.audio, full.audio, atol=1e-5)  # the edit replays the recorded rhythm guidance
    plain = _full(pipe, s.audio, 4, regions=[(0.0, 2.0)], rhythm_cfg="off")
    assert not torch.allclose(sparse.audio, plain.audio, atol=1e-3)


def test_guidance_interval_session_replays_the_interval(tmp_path, mel):
    pipe = apply_sparse_edit(mel(), SparseEditConfig(halo_s=0.1))
    d = tmp_path / "g"
    kw = {"rhythm_cfg": 5.0, "guidance_interval": (0.8, 1.0)}  # times 1, 0.857, 0.6: the last step unguided
    out = pipe.sparse_edit.generate(d, "a chorale", duration=2.0, steps=3, seed=1, **kw)
    s = load_session(d)
    assert s.manifest["controls"]["guidance_interval"] == [0.8, 1.0]
    assert [s.cache["k"][e].shape[1] for e in sorted(s.cache["k"])] == [3, 3, 1]  # rows per evaluation
    ref = pipe("a chorale", duration=2.0, steps=3, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(out.audio, ref.audio, atol=1e-6)
    sparse = pipe.sparse_edit.edit(d, regions=[(0.0, 2.0)], seed=4)
    assert sparse.metadata["sparse_edit"]["sparse"]
    full = _full(pipe, s.audio, 4, regions=[(0.0, 2.0)], **kw)
    assert torch.allclose(sparse.audio, full.audio, atol=1e-5)  # the edit replays the recorded interval
    every = _full(pipe, s.audio, 4, regions=[(0.0, 2.0)], rhythm_cfg=5.0)
    assert not torch.allclose(sparse.audio, every.audio, atol=1e-3)
    before = load_session(d).audio
    part = pipe.sparse_edit.edit(d, regions=[(0.6, 1.0)], seed=5)  # the refreshed cache, mixed rows, serves it
    assert part.metadata["sparse_edit"]["sparse"]
    full = _full(pipe, before, 5, regions=[(0.6, 1.0)], **kw)
    a, b = int(0.6 * SR), int(1.0 * SR)
    assert (part.audio - full.audio)[..., a:b].norm() < 0.05 * full.audio[..., a:b].norm()  # SIGE approximation
    assert part.metadata["sparse_edit"]["dense_evals"] == 0


def _all_run():
    from accelerando.cache.edit import _Run

    return _Run(idx="all", record=frozenset(range(3)), compute=False)


def test_sparse_inpaint_keeps_outside_exact_and_is_close_to_full(session):
    pipe, d, out = session
    before = load_session(d)
    res = pipe.sparse_edit.edit(d, regions=[(0.8, 1.1)], seed=7)
    st = res.metadata["sparse_edit"]
    assert 0 < st["tokens_recomputed"] < st["tokens"] / 2 and st["sparse_evals"] == 3 and st["dense_evals"] == 0
    assert st["decode_fraction"] < 0.8
    assert 0 < st["frames_encoded"] < load_session(d).manifest["frames"]  # the update encoded the changed stretch
    a, b = int(0.8 * SR), int(1.1 * SR)
    assert torch.equal(res.audio[0, :, :a], before.audio[:, :a])
    assert torch.equal(res.audio[0, :, b:], before.audio[:, b:])
    assert not torch.equal(res.audio[0, :, a:b], before.audio[:, a:b])
    full = _full(pipe, before.audio, 7, regions=[(0.8, 1.1)])
    err = (res.audio - full.audio)[..., a:b].norm() / full.audio[..., a:b].norm()
    assert err < 0.05  # SIGE's approximation, small on this model
    # the session now holds the new clip; its decode base is the exact decode of its latent
    after = load_session(d)
    assert torch.equal(after.audio, res.audio[0]) and after.manifest["edits"][-1]["mode"] == "inpaint"
    with torch.inference_mode():  # the session's latent is what encoding its audio gives (the next edit's input)
        encoded = pipe.sparse_edit._full_encode(pipe._prepare_audio(after.audio, SR))[0]
    assert torch.equal(after.known, encoded)


def test_many_edits_in_a_row_extend_and_reuse(session):
    pipe, d, out = session
    for k, region in enumerate([(0.2, 0.4), (1.5, 1.9)]):
        before = load_session(d).audio
        res = pipe.sparse_edit.edit(d, regions=[region], seed=10 + k, prompt="a new prompt")
        a, b = int(region[0] * SR), int(region[1] * SR)
        assert torch.equal(res.audio[0, :, :a], before[:, :a]) and torch.equal(res.audio[0, :, b:], before[:, b:])
    before = load_session(d)
    res = pipe.sparse_edit.edit(d, extend_s=0.5, seed=3)
    s = before.audio.shape[-1]
    assert res.audio.shape[-1] == s + SR // 2 and torch.equal(res.audio[0, :, :s], before.audio)
    after = load_session(d)
    assert after.manifest["tokens"] > before.manifest["tokens"] and len(after.manifest["edits"]) == 3
    assert all(k.shape[3] == after.manifest["tokens"] for k in after.cache["k"].values())
    assert sorted(p.name for p in d.iterdir()) == ["session.json", load_version(d)]  # old versions removed
    with torch.inference_mode():  # the session's latent is what encoding its audio gives (the next edit's input)
        encoded = pipe.sparse_edit._full_encode(pipe._prepare_audio(after.audio, SR))[0]
    assert torch.equal(after.known, encoded)
    apply_sparse_edit(pipe, SparseEditConfig(halo_s=0.1, cache_update="reuse"))
    res = pipe.sparse_edit.edit(d, regions=[(0.5, 0.7)], seed=2)
    assert res.metadata["sparse_edit"]["cache_update"] == "reuse" and len(load_session(d).manifest["edits"]) == 4


def load_version(d):
    import json

    return json.loads((d / "session.json").read_text())["current"]


def test_budget_fewer_steps_and_refuse(tmp_path, mel):
    pipe = apply_sparse_edit(mel(), SparseEditConfig(max_cache_mb=0.1, halo_s=0.1))
    pipe.sparse_edit.generate(tmp_path / "s", "x", duration=2.0, steps=3, seed=1)
    m = load_session(tmp_path / "s").manifest
    assert 0 < len(m["cached_evals"]) < 3  # fewer steps stored
    res = pipe.sparse_edit.edit(tmp_path / "s", regions=[(0.5, 0.7)], seed=2)
    st = res.metadata["sparse_edit"]
    assert st["dense_evals"] == 3 - len(m["cached_evals"]) and st["sparse_evals"] == len(m["cached_evals"])
    apply_sparse_edit(pipe, SparseEditConfig(max_cache_mb=0.1, over_budget="refuse"))
    with pytest.raises(UserError, match="over the budget of 0.1 MB"):
        pipe.sparse_edit.generate(tmp_path / "t", "x", duration=2.0, steps=3, seed=1)
    assert not (tmp_path / "t").exists()


def test_default_halo_follows_the_backbone(mel):
    assert apply_sparse_edit(mel(), SparseEditConfig()).sparse_edit.halo_s == 0.5  # DiT: SIGE's approximation
    assert apply_sparse_edit(mel(backbone="unet"), SparseEditConfig()).sparse_edit.halo_s == 0.5  # clip statistics


def test_config_validation(mel):
    with pytest.raises(ValueError, match="over_budget"):
        SparseEditConfig(over_budget="drop")
    with pytest.raises(ValueError, match="halo_s"):
        SparseEditConfig(halo_s=-1)
    pipe = mel()
    assert apply_sparse_edit(pipe) is pipe
    ed = pipe.sparse_edit
    apply_sparse_edit(pipe, SparseEditConfig(halo_s=2.0))
    assert pipe.sparse_edit is ed and ed.config.halo_s == 2.0
    # outside editor calls the pipeline behaves as before
    a = pipe("x", duration=1.0, steps=2, generator=torch.Generator().manual_seed(0)).audio
    b = mel()("x", duration=1.0, steps=2, generator=torch.Generator().manual_seed(0)).audio
    assert torch.equal(a, b)


def test_generate_follows_the_pipeline_signature(tmp_path, mel):
    """A keyword the pipeline gains is taken, recorded and replayed by edits without changes to the editor."""
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    class Swung(TextToMusicPipeline):
        def __call__(self, prompt, *, swing: float = 0.0, **kwargs):
            self.swings.append(swing)
            out = super().__call__(prompt, **kwargs)
            out.audio = out.audio * (1.0 + swing)
            return out

    base = mel()
    pipe = Swung(base.model, base.codec, base.text_encoder)
    pipe.swings = []
    apply_sparse_edit(pipe, SparseEditConfig(halo_s=0.1))
    d = tmp_path / "s"
    out = pipe.sparse_edit.generate(d, "x", duration=1.0, steps=2, seed=1, swing=0.5)
    m = load_session(d).manifest
    assert m["controls"]["swing"] == 0.5 and m["steps"] == 2 and "duration" not in m["controls"]
    assert pipe.swings and set(pipe.swings) == {0.5}  # the clip and the recording pass
    pipe.swings.clear()
    pipe.sparse_edit.edit(d, regions=[(0.3, 0.5)], seed=2)
    assert pipe.swings and set(pipe.swings) == {0.5}  # the edit and the refresh replay it
    assert out.audio.shape[-1] == SR
    with pytest.raises(TypeError, match="tempo_curve"):
        pipe.sparse_edit.generate(tmp_path / "t", "x", duration=1.0, steps=2, tempo_curve=[1])
    with pytest.raises(TypeError, match="init_audio"):
        pipe.sparse_edit.generate(tmp_path / "t", "x", duration=1.0, steps=2, init_audio=out.audio[0])


def test_generate_records_the_same_manifest_as_before(tmp_path, mel):
    pipe = apply_sparse_edit(mel(), SparseEditConfig(halo_s=0.1))
    pipe.sparse_edit.generate(tmp_path / "s", "x", duration=1.0, steps=2, seed=1, bpm=96.0, key="A minor")
    m = load_session(tmp_path / "s").manifest
    assert m["controls"] == {
        "bpm": 96.0,
        "key": "A minor",
        "meter": "4/4",
        "instruments": None,
        "rhythm_cfg": "off",
        "guidance_interval": "all",
        "grid_guidance": "off",
        "key_guidance": "off",
    }
    assert (m["steps"], m["cfg"], m["sampler"]) == (2, 3.0, "euler")


@pytest.fixture
def unet_session(tmp_path, mel):
    pipe = apply_sparse_edit(mel(backbone="unet"), SparseEditConfig(halo_s=0.05))
    d = tmp_path / "u"
    out = pipe.sparse_edit.generate(d, "a chorale", duration=2.0, steps=3, seed=1)
    return pipe, d, out


def test_unet_session_caches_groupnorm_statistics(unet_session):
    pipe, d, out = unet_session
    s = load_session(d)
    m = s.manifest
    assert m["cache_kind"] == "norm_stats" and m["patch"] == 1 and m["tokens"] == m["frames"]
    assert s.evals == [0, 1, 2] and set(s.cache) == {"mean", "m2", "count"}
    k = -(-m["frames"] // m["chunk"])
    assert s.cache["mean"][0].shape == (m["norms"], 2, m["groups"], k) and s.cache["m2"][0].dtype == torch.float32
    assert s.cache["count"][0].sum() >= m["frames"]
    assert s.cache_bytes == 3 * (2 * m["norms"] * 2 * m["groups"] * 4 + 8 * m["norms"]) * k
    assert torch.allclose(s.audio, out.audio[0], atol=1e-6)


def test_unet_sparse_inpaint_is_windowed_exact_outside_and_close_to_full(unet_session):
    pipe, d, out = unet_session
    before = load_session(d)
    res = pipe.sparse_edit.edit(d, regions=[(0.9, 1.1)], seed=7)
    st = res.metadata["sparse_edit"]
    assert st["sparse_evals"] == 3 and st["dense_evals"] == 0 and st["cache_update"] == "reuse"
    assert 0 < st["tokens_recomputed"] < st["tokens"] / 4
    a, b = int(0.9 * SR), int(1.1 * SR)
    assert torch.equal(res.audio[0, :, :a], before.audio[:, :a])
    assert torch.equal(res.audio[0, :, b:], before.audio[:, b:])
    full = _full(pipe, before.audio, 7, regions=[(0.9, 1.1)])
    err = (res.audio - full.audio)[..., a:b].norm() / full.audio[..., a:b].norm()
    assert 0 < err < 0.05  # only the statistics differ (recorded on the clip, not on the half-generated edit)
    after = load_session(d)  # reuse: the statistics are kept, the clip and its latent are the new ones
    assert all(torch.equal(after.cache[f][e], before.cache[f][e]) for f in ("mean", "m2") for e in before.evals)
    assert torch.equal(after.audio, res.audio[0])
    # a refresh is a sparse recording pass over the new clip: close to the statistics a fresh session would hold
    apply_sparse_edit(pipe, SparseEditConfig(halo_s=0.05, cache_update="refresh"))
    res2 = pipe.sparse_edit.edit(d, regions=[(0.1, 0.8)], seed=8)
    assert res2.metadata["sparse_edit"]["cache_update"] == "refresh"
    fresh = pipe.sparse_edit._record(  # noqa: SLF001 - the recording pass itself
        res2.audio[0], pipe.sparse_edit._settings(before.manifest), "a chorale", _all_run()
    )
    new = load_session(d)
    c = new.manifest["chunk"]
    ks = slice(-(-int(0.1 * pipe.frame_rate) // c), int(0.8 * pipe.frame_rate) // c)  # chunks inside the region
    assert ks.stop > ks.start
    for e, rec in fresh.rec.items():
        fr, nw, od = rec["mean"][..., ks], new.cache["mean"][e][..., ks], after.cache["mean"][e][..., ks]
        gap = (nw - fr).norm() / (od - fr).norm()
        assert gap < 0.2, f"eval {e}: refreshed statistics {gap:.2f} of the way from the fresh ones"


def test_unet_whole_clip_edit_and_extend(unet_session):
    pipe, d, out = unet_session
    orig = load_session(d).audio
    sparse = pipe.sparse_edit.edit(d, regions=[(0.0, 2.0)], seed=4)
    st = sparse.metadata["sparse_edit"]
    assert st["tokens_recomputed"] == st["tokens"] and st["dense_evals"] == 3
    full = _full(pipe, orig, 4, regions=[(0.0, 2.0)])
    assert torch.allclose(sparse.audio, full.audio, atol=1e-5)
    before = load_session(d)
    res = pipe.sparse_edit.edit(d, extend_s=0.5, seed=3)
    s = before.audio.shape[-1]
    assert res.audio.shape[-1] == s + SR // 2 and torch.equal(res.audio[0, :, :s], before.audio)
    after = load_session(d)
    assert after.manifest["frames"] > before.manifest["frames"] and after.evals == [0, 1, 2]
    assert res.metadata["sparse_edit"]["sparse_evals"] == 3


def _frame_norm_unet(mel):
    pipe = mel(backbone="unet")
    cfg = pipe.model.dit.config
    from accelerando.models.generator import MusicGenerator
    from accelerando.models.unet import MusicUNetConfig

    torch.manual_seed(3)
    model = MusicGenerator(MusicUNetConfig(**{**cfg.to_dict(), "norm": "frame"}))
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    pipe.model = model.eval()
    return pipe


@pytest.mark.parametrize("halo", [0.05, None])  # None: the backbone's default, no halo for a per-frame U-Net
def test_frame_norm_unet_session_is_exact_and_cache_free(tmp_path, mel, halo):
    pipe = apply_sparse_edit(_frame_norm_unet(mel), SparseEditConfig(halo_s=halo))
    assert pipe.sparse_edit.halo_s == (0.0 if halo is None else halo)
    d = tmp_path / "f"
    pipe.sparse_edit.generate(d, "a chorale", duration=2.0, steps=3, seed=1)
    s = load_session(d)
    assert s.manifest["cache_kind"] == "none" and s.cache == {} and s.cache_bytes == 0
    encodes = []
    encode = pipe.codec.encode
    pipe.codec.encode = lambda wav: encodes.append(wav.shape) or encode(wav)
    res = pipe.sparse_edit.edit(d, regions=[(0.9, 1.1)], seed=7)
    del pipe.codec.encode
    # no whole-clip encode at all: the session's latent serves the edit's input, and the update encodes only the
    # frames the edit changed (tests/cache/test_sparse_encode.py: bit for bit what a full encode gives)
    assert encodes == []
    st = res.metadata["sparse_edit"]
    assert 0 < st["frames_encoded"] < s.manifest["frames"]
    with torch.inference_mode():
        assert torch.equal(
            load_session(d).known, pipe.sparse_edit._full_encode(pipe._prepare_audio(res.audio[0], SR))[0]
        )
    assert st["sparse_evals"] == 3 and 0 < st["tokens_recomputed"] < st["tokens"] / 4
    full = _full(pipe, s.audio, 7, regions=[(0.9, 1.1)])
    a, b = int(0.9 * SR), int(1.1 * SR)
    err = (res.audio - full.audio)[..., a:b].norm() / full.audio[..., a:b].norm()
    assert err < 1e-4  # exact up to float rounding: no approximation at all
    assert torch.equal(res.audio[0, :, :a], s.audio[:, :a]) and torch.equal(res.audio[0, :, b:], s.audio[:, b:])
    ext = pipe.sparse_edit.edit(d, extend_s=0.5, seed=2)
    assert ext.metadata["sparse_edit"]["sparse_evals"] == 3
    assert load_session(d).manifest["frames"] > s.manifest["frames"]


def test_grid_guided_session_edits_equal_full_regeneration(tmp_path, mel):
    """Grid guidance reads the whole clip's onsets; a sparse edit, which runs the backbone on a few frames only, must
    still guide exactly as full regeneration does (known frames enter the score as the known latent)."""
    pipe = apply_sparse_edit(_frame_norm_unet(mel), SparseEditConfig())
    d = tmp_path / "grid"
    kw = {"grid_guidance": 2.0, "key_guidance": 2.0, "bpm": 90.0, "key": "E minor"}
    out = pipe.sparse_edit.generate(d, "a chorale", duration=2.0, steps=3, seed=1, **kw)
    s = load_session(d)
    assert s.manifest["controls"]["grid_guidance"] == 2.0 and s.manifest["controls"]["key_guidance"] == 2.0
    ref = pipe("a chorale", duration=2.0, steps=3, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(out.audio, ref.audio, atol=1e-6)
    res = pipe.sparse_edit.edit(d, regions=[(0.9, 1.3)], seed=7)
    assert res.metadata["sparse_edit"]["sparse"]
    full = _full(pipe, s.audio, 7, regions=[(0.9, 1.3)], **kw)
    a, b = int(0.9 * SR), int(1.3 * SR)
    err = (res.audio - full.audio)[..., a:b].norm() / full.audio[..., a:b].norm()
    assert err < 1e-4  # the edit replays the recorded grid and key guidance, exactly
    unguided = _full(pipe, s.audio, 7, regions=[(0.9, 1.3)], bpm=90.0, key="E minor")
    assert (unguided.audio - full.audio)[..., a:b].norm() > 100 * err * full.audio[..., a:b].norm()


def test_a_model_default_for_grid_guidance_keeps_older_sessions_valid(tmp_path, mel):
    """Sessions record the resolved setting, so a sampling default added to the model's config later (here
    default_grid_guidance) leaves the model's identity and the recorded replay unchanged."""
    pipe = apply_sparse_edit(_frame_norm_unet(mel), SparseEditConfig())
    d = tmp_path / "old"
    pipe.sparse_edit.generate(d, "a chorale", duration=2.0, steps=3, seed=1, grid_guidance="off")
    sha = pipe.sparse_edit.model_sha256()
    pipe.model.config.default_grid_guidance = 2.0
    assert pipe.sparse_edit.model_sha256() == sha
    s = load_session(d)
    res = pipe.sparse_edit.edit(d, regions=[(0.9, 1.3)], seed=7)  # not refused as another model
    full = _full(pipe, s.audio, 7, regions=[(0.9, 1.3)], grid_guidance="off")
    a, b = int(0.9 * SR), int(1.3 * SR)
    assert (res.audio - full.audio)[..., a:b].norm() < 1e-4 * full.audio[..., a:b].norm()  # replays "off"
