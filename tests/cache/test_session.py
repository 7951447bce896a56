import hashlib
import json
import os

import pytest
import torch

from accelerando.cache.edit import SparseEditConfig, apply_sparse_edit
from accelerando.cache.session import (
    SessionData,
    identity_config,
    load_session,
    module_sha256,
    read_manifest,
    write_session,
)
from accelerando.errors import UserError


def _snapshot(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in d.rglob("*") if p.is_file()}


def _data(n_tokens=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    manifest = {
        "channels": 1,
        "samples": 40,
        "frames": 5,
        "latent_dim": 3,
        "samples_per_frame": 8,
        "depth": 2,
        "batch": 2,
        "heads": 2,
        "width": 8,
        "tokens": n_tokens,
        "model_sha256": "m" * 64,
        "codec_sha256": "c" * 64,
        "controls": {"bpm": 120.0, "key": "C major", "meter": "4/4", "instruments": None},
        "steps": 3,
        "sampler": "euler",
    }
    kv = lambda: torch.randn(2, 2, 2, n_tokens, 4, generator=g).to(torch.bfloat16)  # noqa: E731
    return SessionData(
        manifest,
        torch.randn(1, 40, generator=g),
        torch.randn(5, 3, generator=g),
        {"k": {0: kv(), 2: kv()}, "v": {0: kv(), 2: kv()}},
    )


def test_round_trip_and_versions(tmp_path):
    d = tmp_path / "s"
    data = _data()
    write_session(d, data)
    back = load_session(d, "m" * 64, "c" * 64)
    assert torch.equal(back.audio, data.audio) and torch.equal(back.known, data.known)
    assert back.evals == [0, 2] and all(torch.equal(back.cache[f][e], data.cache[f][e]) for f in "kv" for e in (0, 2))
    assert back.cache["k"][0].dtype == torch.bfloat16 and back.manifest["cached_evals"] == [0, 2]
    files = back.manifest["files"]
    assert set(files) == {"state.safetensors", "cache.safetensors"}
    assert all(len(f["sha256"]) == 64 for f in files.values())
    assert not any(p.suffix == ".pt" or p.suffix == ".pkl" for p in d.rglob("*"))
    write_session(d, _data(seed=1))  # a second version replaces the first
    assert sorted(p.name for p in d.iterdir()) == ["session.json", "v000002"]
    assert not torch.equal(load_session(d).audio, data.audio)
    assert read_manifest(d)["samples"] == 40


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("truncate", "truncated"),
        ("flip", "sha256"),
        ("pointer", "session.json is unreadable"),
        ("missing", "cache.safetensors is missing"),
        ("shape", "shape"),
        ("model", "different model"),
        ("codec", "different codec"),
    ],
)
def test_corrupt_or_mismatched_session_is_one_line_and_untouched(tmp_path, damage, needle):
    d = tmp_path / "s"
    data = _data()
    if damage == "shape":
        data.known = torch.randn(4, 3)  # disagrees with the manifest's frames
    write_session(d, data)
    v = d / "v000001"
    if damage == "truncate":
        (v / "cache.safetensors").write_bytes((v / "cache.safetensors").read_bytes()[:-10])
    elif damage == "flip":
        raw = bytearray((v / "state.safetensors").read_bytes())
        raw[-1] ^= 1
        (v / "state.safetensors").write_bytes(bytes(raw))
    elif damage == "pointer":
        (d / "session.json").write_text("{not json")
    elif damage == "missing":
        (v / "cache.safetensors").unlink()
    before = _snapshot(d)
    model = "x" * 64 if damage == "model" else "m" * 64
    codec = "x" * 64 if damage == "codec" else "c" * 64
    with pytest.raises(UserError, match=needle) as err:
        load_session(d, model, codec)
    assert "\n" not in str(err.value) and str(d) in str(err.value)
    assert _snapshot(d) == before


def test_not_a_session_and_refuses_to_clobber(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_session(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an edit session"):
        load_session(tmp_path / "other")
    with pytest.raises(UserError, match="non-empty directory"):
        write_session(tmp_path / "other", _data())
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "session.json").write_text(json.dumps({"format": "accelerando-edit-session", "version": 9}))
    with pytest.raises(UserError, match="version 9"):
        load_session(tmp_path / "s")


def test_interrupted_write_keeps_the_previous_version(tmp_path, monkeypatch):
    d = tmp_path / "s"
    first = _data()
    write_session(d, first)
    before = _snapshot(d)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)  # interrupted just before the commit point
    with pytest.raises(KeyboardInterrupt):
        write_session(d, _data(seed=3))
    monkeypatch.undo()
    assert torch.equal(load_session(d).audio, first.audio)
    assert all(_snapshot(d)[k] == h for k, h in before.items())
    write_session(d, _data(seed=4))  # the next write cleans the leftovers
    assert sorted(p.name for p in d.iterdir()) == ["session.json", "v000003"]


def test_edit_with_wrong_model_or_audio_leaves_the_session_untouched(tmp_path, mel):
    pipe = apply_sparse_edit(mel(), SparseEditConfig(halo_s=0.1))
    d = tmp_path / "s"
    pipe.sparse_edit.generate(d, "x", duration=1.0, steps=2, seed=1)
    before = _snapshot(d)
    other = apply_sparse_edit(mel(seed=1), SparseEditConfig())
    with pytest.raises(UserError, match="different model"):
        other.sparse_edit.edit(d, regions=[(0.2, 0.4)])
    sess = load_session(d)
    wrong = sess.audio.clone()
    wrong[0, 100] += 0.01
    with pytest.raises(UserError, match="does not match edit session"):
        pipe.sparse_edit.edit(d, regions=[(0.2, 0.4)], audio=wrong)
    assert _snapshot(d) == before
    assert module_sha256(pipe.model) != module_sha256(other.model)


def test_editor_rehashes_the_model_only_when_its_weights_change(mel):
    pipe = apply_sparse_edit(mel(), SparseEditConfig())
    ed = pipe.sparse_edit
    h = ed.model_sha256()
    assert ed.model_sha256() == h == module_sha256(pipe.model, identity_config(pipe.model))
    with torch.no_grad():
        next(pipe.model.parameters()).add_(1.0)  # in place: the version counter moves
    h2 = ed.model_sha256()
    assert h2 != h and h2 == module_sha256(pipe.model, identity_config(pipe.model))
    next(pipe.model.parameters()).data.mul_(2.0)  # through .data: no version bump, the sum moves
    assert ed.model_sha256() != h2 and ed.model_sha256() == module_sha256(pipe.model, identity_config(pipe.model))
