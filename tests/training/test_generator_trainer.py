import torch

from accelerando.models.dit import MusicDiTConfig
from accelerando.models.io import load_state
from accelerando.testing.packs import write_latent_pack as _pack
from accelerando.training.generator_trainer import GeneratorTrainConfig, _known_mask, train_generator
from accelerando.training.latent_pack import LatentPack


def test_known_masks_cover_every_kind():
    import numpy as np

    rng = np.random.default_rng(0)
    masks = [_known_mask(100, rng, 1.0) for _ in range(200)]
    assert all(m.shape == (100,) and set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    assert any(m[0] == 1 and m[-1] == 0 for m in masks)  # prefix
    assert any(m[0] == 0 and m[-1] == 1 for m in masks)  # suffix
    assert any(m[0] == 1 and m[-1] == 1 and m.sum() < 100 for m in masks)  # holes
    assert all(_known_mask(100, rng, 0.0).sum() == 0 for _ in range(10))


def test_generator_training_learns_checkpoints_and_resumes(tmp_path):
    _pack(tmp_path / "pack.safetensors")
    assert LatentPack(tmp_path / "pack.safetensors").times("beats", 1)[:2] == [0.0, 0.5]
    cfg = GeneratorTrainConfig(
        steps=24, batch_size=4, seconds=1.0, lr=3e-3, warmup=4, log_every=6, ckpt_every=12, bf16=False
    )
    dit = MusicDiTConfig.tiny(latent_dim=8, text_dim=16)
    dit.frame_rate = 50.0
    out = train_generator(tmp_path / "pack.safetensors", tmp_path / "run", dit, cfg, device="cpu", progress=False)
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert len(losses) == 4 and losses[-1] < losses[0]
    _, config = load_state(out, "generator")
    assert config["latent_dim"] == 8
    cfg.steps = 30
    train_generator(tmp_path / "pack.safetensors", tmp_path / "run", None, cfg, device="cpu", progress=False)
    steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps[-1] == 30 and steps.count(24) == 1


def test_phase_guidance_is_switched_on_for_a_resumed_run_and_saved(tmp_path):
    _pack(tmp_path / "pack.safetensors")
    cfg = GeneratorTrainConfig(steps=4, batch_size=2, seconds=1.0, warmup=2, log_every=2, ckpt_every=2, bf16=False)
    dit = MusicDiTConfig.tiny(latent_dim=8, text_dim=16)
    dit.frame_rate = 50.0
    out = train_generator(tmp_path / "pack.safetensors", tmp_path / "run", dit, cfg, device="cpu", progress=False)
    assert load_state(out, "generator")[1]["phase_guidance"] is False
    cfg.steps, cfg.phase_guidance = 6, True
    out = train_generator(tmp_path / "pack.safetensors", tmp_path / "run", None, cfg, device="cpu", progress=False)
    assert load_state(out, "generator")[1]["phase_guidance"] is True


def test_a_unet_backbone_trains_resumes_and_loads(tmp_path):
    from accelerando.models.unet import MusicUNetConfig
    from accelerando.pretrained import load_generator

    _pack(tmp_path / "pack.safetensors")
    cfg = GeneratorTrainConfig(
        steps=12, batch_size=4, seconds=1.0, lr=3e-3, warmup=2, log_every=4, ckpt_every=6, bf16=False
    )
    unet = MusicUNetConfig.tiny(latent_dim=8, text_dim=16)
    unet.frame_rate = 50.0
    out = train_generator(tmp_path / "pack.safetensors", tmp_path / "run", unet, cfg, device="cpu", progress=False)
    losses = [float(r.split(",")[2]) for r in (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]
    cfg.steps = 14
    out = train_generator(tmp_path / "pack.safetensors", tmp_path / "run", None, cfg, device="cpu", progress=False)
    model = load_generator(out)
    assert type(model.dit).__name__ == "MusicUNet" and model.config.channels == [16, 32]


def test_tempo_stretch_moves_bpm_and_beat_grid_with_the_frames(tmp_path):
    import numpy as np
    import pytest

    from accelerando.models.generator import MusicGenerator
    from accelerando.training.generator_trainer import make_batch

    _pack(tmp_path / "pack.safetensors", frames=600)
    pack = LatentPack(tmp_path / "pack.safetensors")
    dit = MusicDiTConfig.tiny(latent_dim=8, text_dim=16)
    dit.frame_rate = 50.0
    model = MusicGenerator(dit)
    rng = np.random.default_rng(3)
    x0, phases, _, ctrl, _ = make_batch(pack, model, [0, 1, 2, 3] * 4, 150, rng, 0.0, 0.3)
    factors = ctrl["bpm"] / 120.0
    assert factors.min() < 0.95 and factors.max() > 1.05 and (factors - 1).abs().max() <= 0.35 + 1e-6
    for x, ph, r in zip(x0, phases, factors.tolist(), strict=True):
        level = x.mean(-1)
        peaks = [
            k for k in range(1, 149) if level[k] > level[k - 1] and level[k] >= level[k + 1] and level[k] > level.mean()
        ]
        assert len(peaks) >= 4
        assert np.median(np.diff(peaks)) == pytest.approx(25 / r, abs=1.0)  # the pulse period follows the tempo
        assert all(ph[k, 1] > 0.9 for k in peaks)  # every pulse sits on a beat of the returned grid
    with pytest.raises(ValueError, match="tempo_stretch=0.9"):
        GeneratorTrainConfig(tempo_stretch=0.9)
    x1, _, _, c1, _ = make_batch(pack, model, [0, 1], 150, np.random.default_rng(0), 0.0, 0.0)
    assert torch.equal(c1["bpm"], torch.tensor([120.0, 120.0]))
