import sys
import types

import pytest

from accelerando.bench.variants import (
    Variant,
    apply_techniques,
    check_variant,
    known_techniques,
    load_variant,
    parse_variant,
    parse_variants,
    register_technique,
)
from accelerando.errors import UserError


def test_plain_models_and_names():
    v = parse_variant("builtin")
    assert (v.name, v.model, v.techniques) == ("builtin", "builtin", ())
    v = parse_variant("runs/gen_v2.safetensors")
    assert (v.name, v.model) == ("gen_v2", "runs/gen_v2.safetensors")
    v = parse_variant("base=runs/gen.safetensors")
    assert (v.name, v.model, v.spec) == ("base", "runs/gen.safetensors", "base=runs/gen.safetensors")
    # '=' inside a path is not a name
    v = parse_variant("runs/lr=3e-4/gen.safetensors")
    assert v.model == "runs/lr=3e-4/gen.safetensors" and v.name == "gen"


def test_techniques_with_options(techniques):
    v = parse_variant("fast=builtin+perturb:scale=0.5:seed=3:tag=abc:flag=true+noop")
    assert v.name == "fast" and v.model == "builtin"
    assert [t.kind for t in v.techniques] == ["perturb", "noop"]
    assert v.techniques[0].options == {"scale": 0.5, "seed": 3, "tag": "abc", "flag": True}
    assert isinstance(v.techniques[0].options["seed"], int)
    # derived name, file-system safe
    assert parse_variant("builtin+perturb:scale=0.5").name == "builtin+perturb-scale_0.5"
    # a bare value goes to the technique's main argument
    assert parse_variant("builtin+noop:x").techniques[0].options == {"arg": "x"}


def test_quantize_bare_value_is_the_preset(monkeypatch):
    calls = []
    fake = types.ModuleType("accelerando.quant.presets")

    def quantize_pipeline(pipeline, preset, **options):
        calls.append((pipeline, preset, options))
        return "quantized"

    fake.quantize_pipeline = quantize_pipeline
    monkeypatch.setitem(sys.modules, "accelerando.quant.presets", fake)
    v = parse_variant("w4=builtin+quantize:w4a8-svd:rank=32")
    assert v.techniques[0].options == {"preset": "w4a8-svd", "rank": 32}
    assert parse_variant("builtin+quantize:w4a8-svd:rank=64").name == "builtin+quantize-w4a8-svd-rank_64"
    assert apply_techniques("pipe", v.techniques, v.name) == "quantized"
    assert calls == [("pipe", "w4a8-svd", {"rank": 32})]


def test_quantize_unavailable_is_one_line_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerando.quant.presets", None)  # import fails
    with pytest.raises(UserError, match="technique 'quantize' is unavailable") as info:
        parse_variant("builtin+quantize:w4a8-svd")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="needs a preset"):
        parse_variant("builtin+quantize")


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ("builtin+nosuchtech:1", "nosuchtech"),
        ("my name=builtin", "my name"),
        ("", "empty"),
        ("=builtin", "bad name"),
        ("w=+noop", "names no model"),
        ("builtin+perturb:scale=1:scale=2", "scale"),
        ("builtin+perturb::", "empty option"),
        ("builtin+perturb:9x=1", "9x"),
        ("builtin+2fast", "2fast"),
    ],
)
def test_bad_specs_name_the_bad_part(spec, bad, techniques):
    with pytest.raises(UserError) as info:
        parse_variant(spec)
    assert bad in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_technique_lists_the_registered_ones():
    with pytest.raises(UserError, match="registered: .*quantize"):
        parse_variant("builtin+speedup")


def test_parse_variants_split_and_unique(techniques):
    vs = parse_variants(["a=builtin,b=builtin+noop", "c=x.safetensors"])
    assert [v.name for v in vs] == ["a", "b", "c"]
    with pytest.raises(UserError, match="'builtin' is used twice"):
        parse_variants("builtin,builtin")
    with pytest.raises(UserError, match="no variants"):
        parse_variants(" , ")


def test_check_variant_missing_model_file(tmp_path, monkeypatch):
    import accelerando.pretrained as pretrained

    with pytest.raises(UserError, match="model file not found: .*missing.safetensors"):
        check_variant(parse_variant(str(tmp_path / "missing.safetensors")))
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", tmp_path)  # no generator.safetensors there
    with pytest.raises(UserError, match="no built-in generator"):
        check_variant(parse_variant("builtin"))
    (tmp_path / "generator.safetensors").write_bytes(b"x")
    check_variant(parse_variant("builtin"))


def test_registry_applies_a_registered_technique(loader, model_file):
    seen = []

    def halve_steps(pipe, options):
        seen.append(options)
        pipe.bench_tag = options["tag"]
        return pipe

    register_technique("tagger", halve_steps, description="test technique")
    try:
        assert "tagger" in known_techniques()
        with pytest.raises(ValueError, match="already registered"):
            register_technique("tagger", halve_steps)
        pipe = load_variant(parse_variant(f"t={model_file}+tagger:tag=hello"))
        assert pipe.bench_tag == "hello" and seen == [{"tag": "hello"}]
        assert loader.calls == [str(model_file)]
    finally:
        from accelerando.bench.variants import unregister_technique

        unregister_technique("tagger")
    with pytest.raises(ValueError, match="must start with a letter"):
        register_technique("9bad", halve_steps)


def test_failing_technique_becomes_user_error_naming_variant():
    def broken(pipe, options):
        raise ValueError(f"unknown level {options['level']!r}\nsecond line")

    register_technique("broken", broken)
    try:
        v = parse_variant("bad=builtin+broken:level=9")
        with pytest.raises(UserError) as info:
            apply_techniques(object(), v.techniques, v.name)
        msg = str(info.value)
        assert "'bad'" in msg and "broken" in msg and "unknown level 9" in msg and "\n" not in msg
    finally:
        from accelerando.bench.variants import unregister_technique

        unregister_technique("broken")


def test_fingerprint_tracks_model_bytes(tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"one")
    a = Variant("a", str(f)).fingerprint()
    f.write_bytes(b"two!")
    b = Variant("a", str(f)).fingerprint()
    assert a["model"]["sha256"] != b["model"]["sha256"]


def test_compile_norms_technique_compiles_frame_norms_and_refuses_other_backbones():
    from dataclasses import replace

    from accelerando.kernels import frame_norms_compiled
    from accelerando.models.unet import MusicUNet
    from accelerando.testing.models import tiny_pipeline

    v = parse_variant("c=builtin+compile-norms")
    check_variant(v)
    with pytest.raises(UserError, match="takes no arguments or options, got 'fast=True'"):
        check_variant(parse_variant("builtin+compile-norms:fast=true"))
    pipe = tiny_pipeline(backbone="unet")
    with pytest.raises(UserError, match="per-frame norms"):  # the tiny U-Net normalises over the clip
        apply_techniques(pipe, v.techniques, v.name)
    pipe.model.dit = MusicUNet(replace(pipe.model.dit.config, norm="frame"))
    assert apply_techniques(pipe, v.techniques, v.name) is pipe and frame_norms_compiled(pipe.model.dit)


def test_fuse_norms_technique_fuses_the_blocks_and_refuses_other_backbones():
    from dataclasses import replace

    from accelerando.models.unet import MusicUNet
    from accelerando.quant import norm_codes
    from accelerando.testing.models import tiny_pipeline

    quant = "quantize:w8a8-rtn:act_scale=tensor:reduce_range=true:calib_prompts=1:seconds=1.0:steps=2"
    v = parse_variant(f"f=builtin+{quant}+fuse-norms")
    check_variant(v)
    with pytest.raises(UserError, match="'fuse-norms' takes no arguments or options, got 'x=1'"):
        check_variant(parse_variant("builtin+fuse-norms:x=1"))
    pipe = tiny_pipeline(backbone="unet")
    pipe.model.dit = MusicUNet(replace(pipe.model.dit.config, norm="frame"))
    with pytest.raises(UserError, match="needs per-tensor quantized convolutions"):  # float: nothing to fuse
        apply_techniques(pipe, v.techniques[1:], v.name)
    clip_norm = tiny_pipeline(backbone="unet")  # the tiny U-Net normalises over the clip
    with pytest.raises(UserError, match="per-frame norms"):
        apply_techniques(clip_norm, v.techniques, v.name)
    assert apply_techniques(pipe, v.techniques, v.name) is pipe and norm_codes.blocks_fused(pipe.model.dit)
