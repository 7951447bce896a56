import numpy as np
import soundfile as sf

from accelerando.models.codec import CodecConfig
from accelerando.models.io import load_state
from accelerando.training.codec_trainer import CodecTrainConfig, train_codec


def _pack(path, n=6, seconds=1.0, sr=24000):
    import json

    t = np.arange(int(seconds * sr)) / sr
    segs = [0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * t) for i in range(n)]
    sf.write(path.with_suffix(".flac"), np.concatenate(segs), sr, subtype="PCM_16")
    meta = {"sample_rate": sr, "segment_samples": len(t), "segments": [{"clip_id": str(i)} for i in range(n)]}
    path.with_suffix(".json").write_text(json.dumps(meta))


def test_training_reduces_loss_checkpoints_and_resumes(tmp_path):
    _pack(tmp_path / "pack")
    cfg = CodecTrainConfig(
        steps=30,
        batch_size=4,
        segment_samples=4096,
        lr=3e-3,
        warmup=2,
        log_every=5,
        ckpt_every=10,
        eval_every=15,
        bf16=False,
    )
    out = train_codec(tmp_path / "pack", tmp_path / "run", CodecConfig.tiny(), cfg, device="cpu", progress=False)
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert len(losses) == 6 and losses[-1] < losses[0]
    state, config = load_state(out, "codec")
    assert config["latent_dim"] == CodecConfig.tiny().latent_dim
    # resume: a longer run continues from step 30 rather than starting over
    cfg.steps = 40
    train_codec(tmp_path / "pack", tmp_path / "run", None, cfg, device="cpu", progress=False)
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows][-2:] == [35, 40]
