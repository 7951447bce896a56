"""The U-Net's per-frame GroupNorm compiled by inductor: the same code, the same bits, faster on a CPU.

:class:`~accelerando.models.unet.FrameGroupNorm` sums each frame's channels in channel order with elementwise adds
(so that a window of frames normalises exactly as the whole clip does, which the sparse edits rely on). In eager
PyTorch that is one memory pass per channel of a group, plus float32 casts. Inductor turns the same code into one
loop per frame with the adds in the same order, so the output is bit-identical (tests compare against the eager
module, in float32 and under bf16 autocast, at several lengths). What it saves on the built-in U-Net's backbone call
is in BENCHMARKS.md ("W8A8 convolutions through oneDNN"): a few percent of a bf16 call, a larger share of a
quantized one, whose convolutions got cheaper.

:func:`compile_frame_norms` points every ``FrameGroupNorm`` of a model at one compiled function of its tensors (the
module's own ``forward`` traced with a stand-in for ``self``, so there is one compile per channel count and dtype,
not one per norm; lengths and batch sizes are dynamic). It is opt-in: the first calls of a process compile for
several seconds per channel count (about 45 s for the built-in's five, cold; inductor caches the result on disk),
which a single short generation would not win back. :func:`uncompile_frame_norms` undoes it. If
``torch.compile`` cannot run here, the first call warns once and the norms run eagerly.

Written here rather than taken from a library because the op is this model's own; ``torch.compile`` does the work.
"""

import types
import warnings

import torch
from torch import nn

from accelerando.kernels.modes import dispatch_mode_active
from accelerando.models.unet import FrameGroupNorm

__all__ = ["compile_frame_norms", "uncompile_frame_norms", "frame_norms_compiled"]

_state: dict = {"fn": None, "broken": None}


class _Norm:
    """What ``FrameGroupNorm.forward`` reads from ``self`` (a plain class: dynamo traces its construction)."""

    def __init__(self, num_groups: int, eps: float, weight: torch.Tensor, bias: torch.Tensor):
        self.num_groups, self.eps, self.weight, self.bias = num_groups, eps, weight, bias


def _frame_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int, eps: float):
    """``FrameGroupNorm.forward`` on ``x`` [B, C, T] with the given parameters (the model's code, unchanged)."""
    return FrameGroupNorm.forward(_Norm(num_groups, eps, weight, bias), x)


def _compiled():
    if _state["fn"] is None:
        _state["fn"] = torch.compile(_frame_norm, dynamic=True, options={"emulate_precision_casts": True})
    return _state["fn"]


def _forward(self, x: torch.Tensor) -> torch.Tensor:
    """The compiled forward installed on a ``FrameGroupNorm`` instance; eager when compiling failed, under a dispatch
    mode, or for autograd (training keeps the eager graph)."""
    args = (x, self.weight, self.bias, self.num_groups, self.eps)
    if _state["broken"] is not None or dispatch_mode_active():  # see accelerando.kernels.modes
        return _frame_norm(*args)
    if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
        return _frame_norm(*args)
    try:
        return _compiled()(*args)
    except Exception as err:  # no C++ compiler, unsupported platform, ...
        _state["broken"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        warnings.warn(f"compiled frame norms unavailable ({_state['broken']}); running them eagerly", stacklevel=2)
        return _frame_norm(*args)


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, FrameGroupNorm)]


# one graph per channel count and dtype (the channel loop unrolls): the built-in U-Net has 5 channel counts, so float32
# and bf16 calls together need 10, above dynamo's default limit of 8 per function
_RECOMPILE_LIMIT = 32


def compile_frame_norms(model: nn.Module) -> int:
    """Run every ``FrameGroupNorm`` in ``model`` through the compiled kernel (in place); returns how many.

    Raises dynamo's per-function recompile limit to at least 32 (process-wide), since the kernel compiles once per
    channel count and dtype; clip length and batch size are dynamic and never recompile."""
    norms = _norms(model)
    if norms and torch._dynamo.config.recompile_limit < _RECOMPILE_LIMIT:
        torch._dynamo.config.recompile_limit = _RECOMPILE_LIMIT
    for m in norms:
        m.forward = types.MethodType(_forward, m)
    return len(norms)


def uncompile_frame_norms(model: nn.Module) -> int:
    """Undo :func:`compile_frame_norms`; returns how many norms went back to the eager forward."""
    norms = [m for m in _norms(model) if "forward" in vars(m)]
    for m in norms:
        del m.forward
    return len(norms)


def frame_norms_compiled(model: nn.Module) -> bool:
    """Whether any ``FrameGroupNorm`` of ``model`` runs through the compiled kernel."""
    return any("forward" in vars(m) for m in _norms(model))
