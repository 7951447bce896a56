"""Load built-in or user-supplied models by name or path. Weights are read from safetensors only."""

from pathlib import Path

from accelerando.errors import UserError

__all__ = ["load_codec", "load_generator", "BUILTIN_DIR"]

BUILTIN_DIR = Path(__file__).parent / "weights"


def _load(kind: str, name_or_path: str | Path, build):
    """Read ``kind`` weights ("builtin" or a path), build the module from the saved config, load, set eval mode."""
    from accelerando.models.io import load_state

    path = BUILTIN_DIR / f"{kind}.safetensors" if str(name_or_path) == "builtin" else Path(name_or_path)
    try:
        state, cfg = load_state(path, kind)
        model = build(cfg)
        model.load_state_dict(state)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise UserError(f"cannot load {kind} {str(name_or_path)!r}: {err}") from None
    return model.eval()


def load_codec(name_or_path: str | Path = "builtin"):
    """Return the codec ``"builtin"`` (shipped with the package) or the one saved at a path, in eval mode, float32."""
    from accelerando.models.codec import CodecConfig, MelCodec

    return _load("codec", name_or_path, lambda cfg: MelCodec(CodecConfig(**cfg)))


def _quant_format(path: Path) -> bool:
    """Whether ``path`` is a safetensors file written by ``accelerando.quant.save_quantized`` (by its metadata)."""
    from safetensors import safe_open

    from accelerando.quant.io import QUANT_FORMAT

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("format") == QUANT_FORMAT
    except Exception:  # not safetensors at all: let the float loader report it
        return False


def _load_quantized_generator(path: Path):
    """Rebuild a quantized generator: float skeleton from the stored config, quantized layers from the stored
    per-layer configs (versioned JSON), then every tensor loaded strictly. Safetensors only; nothing is unpickled."""
    from accelerando.models.generator import MusicGenerator, backbone_config
    from accelerando.quant.io import load_quantized, read_quant_metadata
    from accelerando.quant.norm_codes import fuse_on_load

    try:
        _, model_config = read_quant_metadata(path)
        if model_config.get("kind") != "generator" or not isinstance(model_config.get("config"), dict):
            raise ValueError(f"{path} holds a quantized {model_config.get('kind')!r} model, not a generator")
        model = MusicGenerator(backbone_config(model_config["config"]))
        load_quantized(model, path)
    except (FileNotFoundError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise UserError(f"cannot load quantized generator {str(path)!r}: {' '.join(str(err).split())}") from None
    model.quant_metadata = {k: v for k, v in model_config.items() if k != "config"}
    fuse_on_load(model)  # per-tensor U-Nets: their blocks make their int8 convolutions' codes in one C++ kernel
    return model.eval()


def load_generator(name_or_path: str | Path = "builtin"):
    """Return the generator (MusicDiT + control encoder) ``"builtin"`` or saved at a path, in eval mode, float32.

    A file written by ``accelerando quantize`` (``accelerando.quant.presets.save_quantized_generator``) is recognised
    by its metadata and comes back with its quantized layers rebuilt (its float layers float32).
    """
    from accelerando.models.generator import MusicGenerator, backbone_config

    if str(name_or_path) == "builtin" and not (BUILTIN_DIR / "generator.safetensors").is_file():
        raise UserError("no built-in generator is shipped in this version yet; pass --model PATH to a trained one")
    if str(name_or_path) != "builtin" and _quant_format(Path(name_or_path)):
        return _load_quantized_generator(Path(name_or_path))
    return _load("generator", name_or_path, lambda cfg: MusicGenerator(backbone_config(cfg)))
