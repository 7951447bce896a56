"""Atomic files: everything the runner writes goes to a temporary file in the same folder, then is renamed, so an
interrupted run never leaves a half-written record, results file or report behind."""

import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "clean_json", "read_json"]


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def clean_json(value):
    """JSON-safe copy: numpy scalars and arrays become python values, non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return clean_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(path: Path, data) -> Path:
    return atomic_write_text(path, json.dumps(clean_json(data), indent=1, ensure_ascii=False) + "\n")


def read_json(path: Path):
    """The JSON in ``path``, or None when it is missing or unreadable (a record to regenerate)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
