"""One attention function for every model, with a registry of backends and SDPA as the reference.

Models call :func:`attention` and never a kernel directly, so block-sparse or rhythmic backends (Radial-Audio,
flex_attention) plug in without touching model files. Pick a backend per call site with the ``backend`` argument
or for a whole region with ``with attention_backend("name"):``; there is no module-global switch.

Dims: ``B`` batch, ``H`` heads, ``N`` query tokens, ``M`` key tokens, ``D`` head dim.
"""

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

__all__ = ["attention", "register_backend", "attention_backend", "available_backends"]

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
_BACKENDS: dict[str, AttentionFn] = {}
_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("accelerando_attention_backend", default="sdpa")


def register_backend(name: str) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: register ``fn(q, k, v, mask) -> out`` under ``name`` (same shapes and semantics as SDPA)."""

    def deco(fn: AttentionFn) -> AttentionFn:
        _BACKENDS[name] = fn
        return fn

    return deco


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` for every :func:`attention` call inside the block (thread- and task-local)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(available_backends())}")
    token = _CURRENT.set(name)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, backend: str | None = None
) -> torch.Tensor:
    """Scaled dot-product attention.

    Args:
        q: [B, H, N, D]; k, v: [B, H, M, D].
        mask: boolean [B, 1 or H, N or 1, M], True where a key may be attended, or None.
        backend: registry name; default: the innermost :func:`attention_backend`, else "sdpa".

    Returns:
        [B, H, N, D].
    """
    name = backend or _CURRENT.get()
    fn = _BACKENDS.get(name)
    if fn is None:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(available_backends())}")
    return fn(q, k, v, mask)


@register_backend("sdpa")
def _sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@register_backend("math")
def _math(q, k, v, mask):
    """Plain softmax(QK^T / sqrt(D)) V in float32: the oracle every backend is tested against."""
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, H, N, M]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)
