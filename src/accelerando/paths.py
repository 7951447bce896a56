"""Where accelerando keeps data that must never live in the work tree."""

import os
from pathlib import Path

__all__ = ["cache_dir", "CACHE_ENV"]

CACHE_ENV = "ACCELERANDO_CACHE"


def cache_dir(*parts: str) -> Path:
    """Return the cache directory (``$ACCELERANDO_CACHE`` or ``~/.cache/accelerando``), joined with ``parts``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "accelerando"
    return base.joinpath(*parts)
