"""Reading and writing audio files with soundfile.

Dims: ``C`` channels, ``S`` samples.
"""

import os
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from accelerando.errors import UserError

from .resample import resample

__all__ = ["load", "save"]

# File extension -> libsndfile major format, for names where the two differ.
_EXT_FORMATS = {"aif": "AIFF", "aiff": "AIFF", "oga": "OGG", "ogg": "OGG", "wave": "WAV"}
# Formats written as 16-bit PCM unless the caller names a subtype.
_PCM16_FORMATS = {"WAV", "FLAC", "AIFF"}


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False) -> tuple[torch.Tensor, int]:
    """Read an audio file as float32 in ``[-1, 1]``.

    Args:
        path: any file libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...).
        sample_rate: if given and different from the file's rate, resample to it with :func:`resample`.
        mono: average the channels into one, keeping the channel dim.

    Returns:
        ``(wav, sr)``: ``wav`` is float32 ``[C, S]`` (``[1, S]`` when ``mono``), ``sr`` its sample rate in Hz.

    Raises:
        UserError: the file is missing or unreadable; the one-line message names the path.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # [S, C]
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as err:
        raise UserError(f"cannot read audio file {path}: {_one_line(err)}") from err
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, S]
    if mono and wav.shape[0] != 1:
        wav = wav.mean(dim=0, keepdim=True)  # [1, S]
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def _infer_format(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    fmt = _EXT_FORMATS.get(ext, ext.upper())
    if not ext or fmt not in sf.available_formats():
        raise ValueError(f"cannot infer an audio format from the extension of {path}; use e.g. .wav or .flac")
    return fmt


def _to_frames(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[C, S]`` or ``[S]`` tensor/array -> ``[S, C]`` or ``[S]`` numpy array for soundfile."""
    if isinstance(wav, torch.Tensor):
        if not torch.is_floating_point(wav):
            raise ValueError(f"wav must be a floating-point tensor, got dtype {wav.dtype}")
        data = wav.detach().to("cpu", torch.float32).numpy()
    else:
        data = np.asarray(wav)
        if not (np.issubdtype(data.dtype, np.floating) or data.dtype in (np.int16, np.int32)):
            raise ValueError(f"wav must hold floats (or int16/int32 PCM), got dtype {data.dtype}")
    if data.ndim == 1:
        return data  # [S]
    if data.ndim != 2:
        raise ValueError(f"wav must have shape [C, S] or [S], got {tuple(data.shape)}")
    channels, samples = data.shape
    if channels > 16 and channels > samples:
        raise ValueError(f"wav of shape {tuple(data.shape)} looks like [S, C]; pass [C, S] (transpose it)")
    return data.T  # [S, C]


def save(
    path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> Path:
    """Write audio to ``path`` atomically, creating parent directories.

    The format comes from the extension. WAV, FLAC and AIFF default to 16-bit PCM, other formats to libsndfile's
    default subtype; libsndfile clips samples outside ``[-1, 1]`` for PCM subtypes. The data goes to a hidden
    temporary file in the same directory, which is then renamed onto ``path``, so no half-written file ever
    appears under the final name.

    Args:
        path: destination file, e.g. ``out/song.flac``.
        wav: ``[C, S]`` or ``[S]`` torch tensor or numpy array (floats in ``[-1, 1]``, or int16/int32 PCM).
        sample_rate: sample rate in Hz, a positive int.
        subtype: libsndfile subtype such as ``"PCM_24"`` or ``"FLOAT"``; ``None`` for the default above.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: unknown extension, bad shape/dtype, bad sample rate or a subtype the format does not support.
    """
    path = Path(path)
    fmt = _infer_format(path)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if subtype is None:
        subtype = "PCM_16" if fmt in _PCM16_FORMATS else sf.default_subtype(fmt)
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"subtype {subtype!r} is not supported for {fmt} files ({path})")
    data = _to_frames(wav)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        sf.write(tmp, data, int(sample_rate), subtype=subtype, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
