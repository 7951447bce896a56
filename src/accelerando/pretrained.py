"""Load built-in or user-supplied models by name or path. Weights are read from safetensors only."""

from pathlib import Path

from accelerando.errors import UserError

__all__ = ["load_codec", "BUILTIN_DIR"]

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
