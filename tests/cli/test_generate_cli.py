import json

import pytest
import soundfile as sf
import torch

import accelerando.cli.generate as gen
from accelerando.cli.main import main
from accelerando.testing.models import tiny_pipeline


@pytest.fixture(autouse=True)
def _tiny(monkeypatch):
    monkeypatch.setattr(gen, "load_pipeline", lambda model: tiny_pipeline())


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_json_report_and_variations(tmp_path, capsys):
    out = tmp_path / "song.wav"
    code, stdout, _ = _run(
        capsys,
        "generate",
        "a chorale",
        "--bpm",
        "96",
        "--key",
        "F# minor",
        "--meter",
        "3/4",
        "--duration",
        "2",
        "--steps",
        "2",
        "--variations",
        "2",
        "-o",
        str(out),
        "--json",
    )
    assert code == 0
    rep = json.loads(stdout)
    assert rep["outputs"] == [str(tmp_path / "song_1.wav"), str(tmp_path / "song_2.wav")]
    assert rep["bpm"] == 96 and rep["key"] == "F# minor" and rep["meter"] == "3/4" and rep["steps"] == 2
    assert rep["audio_seconds"] == pytest.approx(4.0) and rep["rtf"] > 0 and rep["peak_rss_mb"] > 0
    assert rep["precision"] in ("bf16", "float32")
    a, sr = sf.read(rep["outputs"][0])
    b, _ = sf.read(rep["outputs"][1])
    assert sr == 24000 and len(a) == 48000 and not (a == b).all()


def test_same_seed_same_audio(tmp_path, capsys):
    for name in ("a.wav", "b.wav"):
        assert (
            _run(capsys, "generate", "x", "--duration", "1", "--steps", "2", "--seed", "7", "-o", str(tmp_path / name))[
                0
            ]
            == 0
        )
    assert (sf.read(tmp_path / "a.wav")[0] == sf.read(tmp_path / "b.wav")[0]).all()


def test_inpaint_and_extend_keep_the_input(tmp_path, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, (0.1 * torch.randn(24000 * 3)).numpy(), 24000, subtype="PCM_16")  # a typical 16-bit input
    x, _ = sf.read(src, dtype="float32")
    out = tmp_path / "inpainted.wav"
    code, _, _ = _run(capsys, "inpaint", str(src), "--region", "1-2", "--steps", "2", "-o", str(out))
    y, _ = sf.read(out, dtype="float32")
    assert code == 0 and len(y) == len(x)
    assert (
        (y[:24000] == x[:24000]).all()
        and (y[48000:] == x[48000:]).all()
        and not (y[24500:47500] == x[24500:47500]).all()
    )
    code, _, _ = _run(capsys, "extend", str(src), "--seconds", "1.5", "--steps", "2", "-o", str(tmp_path / "ext.wav"))
    z, _ = sf.read(tmp_path / "ext.wav", dtype="float32")
    assert code == 0 and len(z) == 24000 * 4.5 and (z[: len(x)] == x).all()
    code, _, _ = _run(
        capsys, "remix", str(src), "new", "--strength", "0.5", "--steps", "2", "-o", str(tmp_path / "r.wav")
    )
    assert code == 0 and len(sf.read(tmp_path / "r.wav")[0]) == len(x)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["generate", "x", "--key", "H major"], "H major"),
        (["generate", "x", "--bpm", "500"], "40-200"),
        (["generate", "x", "--meter", "5/0"], "5/0"),
        (["generate", "x", "--duration", "600"], "duration=600"),
        (["generate", "x", "--variations", "0"], "--variations 0"),
        (["generate", "x", "-o", "out.mp3"], "-o out.mp3"),
        (["inpaint", "missing.wav", "--region", "1-2"], "missing.wav"),
        (["extend", "missing.wav", "--seconds", "2"], "missing.wav"),
        (["remix", "missing.wav", "x", "--strength", "0.5"], "missing.wav"),
        (["generate", "x", "--device", "tpu"], "--device 'tpu'"),
        (["generate", "x", "--rhythm-cfg", "loud"], "'loud': give a guidance scale (e.g. 7) or off"),
        (["generate", "x", "--rhythm-cfg", "30"], "rhythm_cfg=30"),
        (["generate", "x", "--guidance-interval", "0.7"], "'0.7': give two flow times LO,HI"),
        (["generate", "x", "--guidance-interval", "0.9,0.2"], "'0.9,0.2': use 0 <= LO <= HI <= 1"),
        (["generate", "x", "--grid-guidance", "9"], "'9': give a strength between 0 and 4, or off"),
        (["generate", "x", "--grid-guidance", "loud"], "'loud': give a strength between 0 and 4, or off"),
        (["generate", "x", "--grid-guidance", "1"], "reads onsets from a log-mel latent"),  # a learned latent
        (["generate", "x", "--key-guidance", "-1"], "'-1': give a strength between 0 and 4, or off"),
        (["generate", "x", "--key-guidance", "1"], "reads pitch content from a log-mel latent"),
        (["generate", "x", "--device", "cuda:99"], "--device cuda:99"),
        (["generate", "x", "--device", "cuda", "--session", "s"], "--device cuda"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *argv)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_precision_override_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACCELERANDO_BF16", "maybe")
    code, _, err = _run(capsys, "generate", "x", "--duration", "1")
    assert code == 2 and "ACCELERANDO_BF16='maybe'" in err and err.count("\n") == 1
    monkeypatch.delenv("ACCELERANDO_BF16")
    monkeypatch.setenv("ACCELERANDO_QUANT_INT_MM", "fast")
    code, _, err = _run(capsys, "generate", "x", "--duration", "1")
    assert code == 2 and "ACCELERANDO_QUANT_INT_MM='fast'" in err and err.count("\n") == 1


def test_bad_region_and_corrupt_audio(tmp_path, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, (0.1 * torch.randn(24000)).numpy(), 24000)
    code, _, err = _run(capsys, "inpaint", str(src), "--region", "0.5-3", "-o", str(tmp_path / "o.wav"))
    assert code == 2 and "0.5-3" in err
    code, _, err = _run(capsys, "inpaint", str(src), "--region", "abc", "-o", str(tmp_path / "o.wav"))
    assert code == 2 and "START-END" in err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really audio")
    code, _, err = _run(capsys, "remix", str(bad), "x", "--strength", "0.5", "-o", str(tmp_path / "o.wav"))
    assert code == 2 and "bad.wav" in err
    code, _, err = _run(capsys, "remix", str(src), "x", "--strength", "1.5", "-o", str(tmp_path / "o.wav"))
    assert code == 2 and "strength=1.5" in err


def test_missing_builtin_generator_is_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.undo()  # the real loader
    import accelerando.pretrained as pre

    monkeypatch.setattr(pre, "BUILTIN_DIR", tmp_path)
    code, _, err = _run(capsys, "generate", "x", "-o", str(tmp_path / "o.wav"))
    assert code == 2 and "no built-in generator" in err


def test_json_report_names_the_device(tmp_path, capsys):
    code, stdout, _ = _run(
        capsys, "generate", "x", "--duration", "1", "--steps", "1", "-o", str(tmp_path / "a.wav"), "--json"
    )
    assert code == 0 and json.loads(stdout)["device"] == "cpu"


@pytest.mark.gpu
def test_pipeline_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pipe = tiny_pipeline()
    kwargs = {"bpm": 100, "key": "D major", "duration": 1.0, "steps": 3}
    ref = pipe("a chorale", generator=torch.Generator().manual_seed(3), **kwargs).audio
    pipe.to("cuda")
    assert pipe.device.type == "cuda"
    out = pipe("a chorale", generator=torch.Generator().manual_seed(3), **kwargs).audio
    assert out.device.type == "cpu" and out.shape == ref.shape
    assert (out - ref).pow(2).mean() < 1e-3 * ref.pow(2).mean()  # same noise; bf16 kernels differ by device
    x = ref[0]
    inp = pipe(
        "a chorale",
        generator=torch.Generator().manual_seed(4),
        init_audio=x,
        init_sample_rate=24000,
        regions=[(0.3, 0.6)],
        **kwargs,
    ).audio
    assert torch.equal(inp[0, :, : int(0.3 * 24000)], x[:, : int(0.3 * 24000)])  # kept audio exact on any device


def test_rhythm_guidance_flag_reaches_the_report(tmp_path, capsys):
    reports = []
    for value in ("5", "off"):
        code, stdout, _ = _run(
            capsys,
            "generate",
            "x",
            "--duration",
            "1",
            "--steps",
            "1",
            "--rhythm-cfg",
            value,
            "-o",
            str(tmp_path / f"{value}.wav"),
            "--json",
        )
        assert code == 0
        reports.append(json.loads(stdout)["rhythm_cfg"])
    assert reports == [5.0, None]


def test_guidance_interval_flag_reaches_the_report(tmp_path, capsys):
    reports = []
    for value in ("0.5,1", "all"):
        code, stdout, _ = _run(
            capsys, "generate", "x", "--duration", "1", "--steps", "2", "--guidance-interval", value,
            "-o", str(tmp_path / "g.wav"), "--json",
        )  # fmt: skip
        assert code == 0
        reports.append(json.loads(stdout)["guidance_interval"])
    assert reports == [[0.5, 1.0], None]


def test_grid_guidance_flag_reaches_the_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gen, "load_pipeline", lambda model: tiny_pipeline(latent="mel"))
    reports = []
    for value in ("1.5", "off"):
        code, stdout, _ = _run(
            capsys, "generate", "x", "--duration", "1", "--steps", "4", "--grid-guidance", value,
            "--key-guidance", value, "-o", str(tmp_path / "g.wav"), "--json",
        )  # fmt: skip
        assert code == 0
        report = json.loads(stdout)
        reports.append((report["grid_guidance"], report["key_guidance"]))
    assert reports == [(1.5, 1.5), (0.0, 0.0)]
