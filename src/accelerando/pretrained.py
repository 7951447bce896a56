"""Load built-in or user-supplied models by name or path. Weights are read from safetensors only."""

from pathlib import Path

from accelerando.errors import UserError

__all__ = ["load_codec", "load_generator", "BUILTIN_DIR"]

BUILTIN_DIR = Path(__file__).parent / "weights"


def load_codec(name_or_path: str | Path = "builtin"):
    """Return the codec ``"builtin"`` (shipped with the package) or the one saved at a path, in eval mode, float32."""
    from accelerando.models.codec import CodecConfig, MelCodec
    from accelerando.models.io import load_state

    path = BUILTIN_DIR / "codec.safetensors" if str(name_or_path) == "builtin" else Path(name_or_path)
    try:
        state, cfg = load_state(path, "codec")
        codec = MelCodec(CodecConfig(**cfg))
        codec.load_state_dict(state)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise UserError(f"cannot load codec {str(name_or_path)!r}: {err}") from None
    return codec.eval()


def load_generator(name_or_path: str | Path = "builtin"):
    """Return the generator (MusicDiT + control encoder) ``"builtin"`` or saved at a path, in eval mode, float32."""
    from accelerando.models.dit import MusicDiTConfig
    from accelerando.models.generator import MusicGenerator
    from accelerando.models.io import load_state

    builtin = str(name_or_path) == "builtin"
    path = BUILTIN_DIR / "generator.safetensors" if builtin else Path(name_or_path)
    if builtin and not path.is_file():
        raise UserError("no built-in generator is shipped in this version yet; pass --model PATH to a trained one")
    try:
        state, cfg = load_state(path, "generator")
        model = MusicGenerator(MusicDiTConfig(**cfg))
        model.load_state_dict(state)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise UserError(f"cannot load generator {str(name_or_path)!r}: {err}") from None
    return model.eval()
