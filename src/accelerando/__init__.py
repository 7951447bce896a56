"""accelerando: efficient music generation, full stack.

Importing this package is cheap and side-effect free: no CUDA initialisation, no logging configuration and no
heavy optional imports. Subpackages are imported on use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
