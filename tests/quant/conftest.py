"""Fixtures shared by the quantization tests."""

import pytest


@pytest.fixture
def no_vnni(monkeypatch):
    """Pretend the CPU has no VNNI (``primitives`` and ``int8_conv`` both read it), with
    ``ACCELERANDO_QUANT_INT_MM`` unset (auto)."""
    from accelerando.quant import int8_conv, primitives

    monkeypatch.setattr(int8_conv, "_cpu_has_vnni", lambda: False)
    monkeypatch.setattr(primitives, "_cpu_has_vnni", lambda: False)
    monkeypatch.delenv(primitives.INT_MM_ENV, raising=False)
