import pytest
import torch
from safetensors import safe_open

from accelerando.cli.main import main
from accelerando.models.io import load_state
from accelerando.testing.packs import write_latent_pack


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _train(capsys, pack, run, steps: int, batch: int, *extra):
    """`accelerando train generator` on ``pack`` with a tiny DiT (width 32, depth 1, 2 heads, 1 s crops)."""
    return _run(capsys, "train", "generator", "--data", pack, "--out", run, "--steps", steps, "--batch-size", batch,
                "--seconds", 1, "--width", 32, "--depth", 1, "--heads", 2, "--quiet", *extra)  # fmt: skip


def test_train_then_export_a_checkpoint(tmp_path, capsys):
    pack, run, out = tmp_path / "pack.safetensors", tmp_path / "run", tmp_path / "g.safetensors"
    write_latent_pack(pack, d=12, e=24)
    code, _, err = _train(capsys, pack, run, 2, 2, "--ckpt-every", 1, "--tempo-stretch", 0.2, "--no-bf16")
    assert code == 0, err
    code, stdout, _ = _run(
        capsys, "train", "export", run, "-o", out, "--default-cfg", 4.5, "--default-guidance-interval", "0.7,1"
    )
    assert code == 0 and stdout.startswith("step 2 (weights) ->")
    state, config = load_state(out, "generator")
    assert config["default_guidance_interval"] == [0.7, 1.0]
    assert config["default_cfg"] == 4.5 and config["latent_dim"] == 12 and config["text_dim"] == 24
    assert config["frame_rate"] == 50.0  # taken from the pack, not the CLI's defaults
    with safe_open(str(out), framework="pt") as fh:
        assert all(fh.get_tensor(k).dtype == torch.float16 for k in fh.keys() if fh.get_tensor(k).is_floating_point())


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "export", "missing_run", "-o", "g.safetensors"], "no generator checkpoint in missing_run"),
        (["train", "generator", "--data", "missing.safetensors", "--tempo-stretch", "0.2"], "missing.safetensors"),
    ],
)
def test_train_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *argv)
    assert code == 2 and needle in err and err.count("\n") == 1


def test_bad_export_arguments(tmp_path, capsys):
    pack, run = tmp_path / "pack.safetensors", tmp_path / "run"
    write_latent_pack(pack)
    assert _train(capsys, pack, run, 1, 1)[0] == 0
    code, _, err = _run(capsys, "train", "export", run, "-o", tmp_path / "g.pt")
    assert code == 2 and "g.pt" in err
    code, _, err = _run(capsys, "train", "export", run, "-o", tmp_path / "g.safetensors", "--default-cfg", 50)
    assert code == 2 and "--default-cfg 50" in err
    for bad, needle in (
        ("0.7", "'0.7': give two flow times"),
        ("1,0.5", "'1,0.5': use 0 <= LO <= HI <= 1"),
        ("all", "all is the default"),
    ):
        code, _, err = _run(
            capsys, "train", "export", run, "-o", tmp_path / "g.safetensors", "--default-guidance-interval", bad
        )
        assert code == 2 and needle in err and err.count("\n") == 1, err
    pack2 = tmp_path / "p2.safetensors"
    write_latent_pack(pack2)
    code, _, err = _run(capsys, "train", "generator", "--data", pack2, "--out", tmp_path / "r2", "--tempo-stretch", 2)
    assert code == 2 and "tempo_stretch=2" in err


def test_ema_is_kept_resumed_and_exported(tmp_path, capsys):
    """--ema keeps torch's AveragedModel EMA next to the checkpoint; a resumed run goes on averaging (decay 0.5: the
    new EMA is the mean of the old EMA and the new weights); export takes the EMA unless --raw."""
    pack, run = tmp_path / "pack.safetensors", tmp_path / "run"
    write_latent_pack(pack, d=12, e=24)
    # a large lr: in the 500-step warm-up the weights must still move visibly from step to step
    ema_args = ("--ckpt-every", 1, "--no-bf16", "--ema", 0.5, "--lr", 30)
    assert _train(capsys, pack, run, 3, 2, *ema_args)[0] == 0
    ck = run / "checkpoint"

    def weights():
        return load_state(ck / "ema.safetensors", "generator")[0], load_state(ck / "model.safetensors", "generator")[0]

    ema1, raw1 = weights()
    floats = [k for k in raw1 if raw1[k].is_floating_point()]
    assert any(not torch.equal(ema1[k], raw1[k]) for k in floats)
    for flag, ref in (((), ema1), (("--raw",), raw1)):
        out = tmp_path / f"g{len(flag)}.safetensors"
        code, stdout, _ = _run(capsys, "train", "export", run, "-o", out, "--dtype", "float32", *flag)
        assert code == 0 and ("EMA" in stdout) == (not flag)
        got = load_state(out, "generator")[0]
        assert all(torch.equal(got[k], ref[k]) for k in floats)
    assert _train(capsys, pack, run, 4, 2, *ema_args)[0] == 0
    ema2, raw2 = weights()
    assert max(float((raw2[k] - ema1[k]).abs().max()) for k in floats) > 1e-3  # the step moved the weights
    for k in floats:
        torch.testing.assert_close(ema2[k], 0.5 * ema1[k] + 0.5 * raw2[k])
    code, _, err = _train(capsys, pack, tmp_path / "r3", 1, 1, "--ema", 1.5)
    assert code == 2 and "ema=1.5" in err
