"""Process-level settings for CPU inference: glibc's malloc keeps freed memory instead of handing it back.

Why: a backbone call allocates tens of megabytes of activations, frees them, and allocates them again on the next
call. glibc gives freed memory at the top of its heap back to the OS once more than ``M_TRIM_THRESHOLD`` of it is
free (a threshold that follows the mmap threshold, so a few tens of MB at most), and the next call then touches
fresh pages again: each first touch is a page fault and a zeroed page. On the AVX2 CPU of BENCHMARKS.md ("Keeping
freed memory") that was about 8,000 minor page faults per 30 s W8A8 backbone call (more for float32), and keeping
the memory took 3-8% off a float32 backbone call. Keeping it in the process, which is what PyTorch's CPU
performance guides get by preloading jemalloc or tcmalloc, removes them. No library sets this from inside Python,
so it is done here with ``mallopt``.

:func:`keep_freed_memory` raises the trim threshold to 1 GiB, the mmap threshold to 32 MiB (glibc's maximum on
64-bit: larger blocks are still mapped and unmapped per allocation) and the top pad to 64 MiB. The cost: the
process keeps its peak heap until it exits rather than shrinking between calls. The ``accelerando`` command calls it
at start; ``ACCELERANDO_MALLOC=default`` leaves glibc's settings alone (``keep``, the default, applies them; any
other value is a ``UserError``). Elsewhere than glibc it does nothing.
"""

import ctypes

from accelerando.errors import env_choice

__all__ = ["MALLOC_ENV", "keep_freed_memory", "apply_malloc_setting"]

MALLOC_ENV = "ACCELERANDO_MALLOC"

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory in the process (see the module doc); True if every setting took,
    False where there is no glibc ``mallopt`` (another libc or OS)."""
    try:  # the symbols already loaded into the process (libc among them); no library search at start-up
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in _SETTINGS])  # every setting tried


def apply_malloc_setting() -> bool:
    """:func:`keep_freed_memory` unless ``ACCELERANDO_MALLOC=default``; returns whether the settings were applied.
    ``UserError`` naming any other value."""
    return env_choice(MALLOC_ENV, ("keep", "default"), "keep") == "keep" and keep_freed_memory()
