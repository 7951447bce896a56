"""accelerando: efficient music generation, full stack.

Importing this package is cheap and side-effect free: no CUDA initialisation, no logging configuration and no
heavy optional imports. Subpackages are imported on use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_pipeline"]


def load_pipeline(model: str = "builtin", device: str = "cpu"):
    """The text-to-music pipeline for ``model`` ("builtin" or a generator .safetensors path), on ``device``.

    ``pipe = load_pipeline("builtin"); out = pipe("...", bpm=100, key="D major", duration=20, generator=g)``
    returns an :class:`~accelerando.pipelines.text_to_music.AudioOutput` (audio ``[B, C, S]``, ``sample_rate``,
    ``metadata``, ``timings``, ``.save(path)``).
    """
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    return TextToMusicPipeline.from_pretrained(model).to(device)
