"""Where a Triton kernel test runs, shared by the Triton test modules of this folder (imported by name: pytest puts
this folder on ``sys.path``)."""

import pytest
import torch

from accelerando.quant import triton_kernels as tk


def triton_device(gpu: bool) -> str:
    """``"cuda"`` or ``"cpu"`` for a test's ``gpu`` parameter; skips without CUDA, or on CPU unless Triton's
    interpreter was chosen before triton was imported (``tests/conftest.py`` sets ``TRITON_INTERPRET=1``)."""
    if gpu and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if not gpu and not tk._interpreting():
        pytest.skip("CPU runs need TRITON_INTERPRET=1 before triton is imported")
    return "cuda" if gpu else "cpu"
