"""Save and load model weights as safetensors with their config in the file's metadata. Never pickle."""

import json
from pathlib import Path

import torch
from torch import nn

__all__ = ["save_model", "load_state", "WEIGHTS_FORMAT"]

WEIGHTS_FORMAT = "accelerando.weights/1"


def save_model(model: nn.Module, path: str | Path, kind: str, config: dict, dtype: torch.dtype | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) with ``kind`` and ``config`` as JSON metadata.

    Floating tensors are cast to ``dtype`` when given (e.g. ``torch.float16`` for shipped weights). The file is
    written next to its final name and renamed, so an interrupted save never leaves a truncated file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    meta = {"format": WEIGHTS_FORMAT, "kind": kind, "config": json.dumps(config)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_state(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_model`; returns (float32 state dict, config). ValueError on a mismatch."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file ({' '.join(str(err).split())})") from None
    if meta.get("format") != WEIGHTS_FORMAT or meta.get("kind") != kind:
        raise ValueError(f"{path} holds {meta.get('kind')!r} weights ({meta.get('format')}), not {kind!r}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, json.loads(meta["config"])
