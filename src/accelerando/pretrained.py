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


def load_generator(name_or_path: str | Path = "builtin"):
    """Return the generator (MusicDiT + control encoder) ``"builtin"`` or saved at a path, in eval mode, float32."""
    from accelerando.models.dit import MusicDiTConfig
    from accelerando.models.generator import MusicGenerator

    if str(name_or_path) == "builtin" and not (BUILTIN_DIR / "generator.safetensors").is_file():
        raise UserError("no built-in generator is shipped in this version yet; pass --model PATH to a trained one")
    return _load("generator", name_or_path, lambda cfg: MusicGenerator(MusicDiTConfig(**cfg)))
