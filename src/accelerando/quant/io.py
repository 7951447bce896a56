"""Save and load quantized models as safetensors, with every quantized layer's config in the file's metadata.

Metadata: ``format`` (:data:`QUANT_FORMAT`, versioned), ``layers`` (JSON: module name -> serialised config), an
optional ``model_config`` (JSON, passed through) and ``unfolded_convs`` (JSON list: the convolutions that run as
:class:`~accelerando.quant.conv.UnfoldConv1d`, converted again on load before the layers are rebuilt; absent in
files without any). Loading rebuilds the quantized layers on a fresh float model with
``quantize_`` (inside ``building_skeleton()``, so calibrated methods build empty layers of the stored shapes without
calibration data) and then loads the stored buffers over them, strictly: SmoothQuant / SVDQuant layers round-trip
their ``inv_smooth``, ``lora_up``, ``lora_down``, ``alpha`` and ``residual.*`` buffers bit-exactly.
"""

import json
from pathlib import Path

import torch
from torch import nn

from accelerando.quant.api import building_skeleton, quantize_, quantized_layers
from accelerando.quant.configs import config_from_dict
from accelerando.quant.conv import unfold_convs_, unfolded_convs

__all__ = ["QUANT_FORMAT", "save_quantized", "load_quantized", "read_quant_metadata"]

QUANT_FORMAT = "accelerando.quant/1"


def save_quantized(model: nn.Module, path: str | Path, model_config: dict | None = None) -> Path:
    """Write ``model``'s full state dict (quantized buffers included) and its quantization recipe to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = {name: cfg.to_dict() for name, cfg in quantized_layers(model).items()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": QUANT_FORMAT, "layers": json.dumps(layers), "model_config": json.dumps(model_config or {})}
    convs = unfolded_convs(model)
    if convs:
        meta["unfolded_convs"] = json.dumps(convs)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def _checked_metadata(path: str | Path) -> dict:
    """The raw metadata of a file written by :func:`save_quantized`; ValueError for any other format."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != QUANT_FORMAT:
        raise ValueError(
            f"{path} has format {meta.get('format')!r}, expected {QUANT_FORMAT!r}; re-save it with save_quantized"
        )
    return meta


def _layers(meta: dict) -> dict:
    return {name: config_from_dict(d) for name, d in json.loads(meta["layers"]).items()}


def read_quant_metadata(path: str | Path) -> tuple[dict, dict]:
    """(module name -> config, model_config) stored in a file written by :func:`save_quantized`."""
    meta = _checked_metadata(path)
    return _layers(meta), json.loads(meta.get("model_config", "{}"))


def load_quantized(model: nn.Module, path: str | Path) -> nn.Module:
    """Quantize the float ``model`` with the recipe stored at ``path`` and load its weights (strict). In place."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"quantized weights file {path} does not exist")
    meta = _checked_metadata(path)  # read once: the layer recipes and the unfolded convolutions
    layers = _layers(meta)
    convs = set(json.loads(meta.get("unfolded_convs", "[]")))
    unknown = sorted(convs - {n for n, m in model.named_modules() if type(m) is nn.Conv1d})
    if unknown:
        raise ValueError(f"{path} unfolds convolutions this model does not have: {unknown}")
    unfold_convs_(model, lambda _m, n: n in convs)
    with building_skeleton():  # calibrated layers (SmoothQuant / SVDQuant) are built empty, then filled below
        quantize_(model, None, overrides=layers)
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    state = load_file(str(path), device=str(device))
    modules = dict(model.named_modules())
    for key, t in state.items():  # files from before 2026-11-26 hold float32 group scales: keep them as stored
        owner, _, name = key.rpartition(".")
        module = modules.get(owner) if name == "weight_scale" else None
        if module is not None and isinstance(getattr(module, name, None), torch.Tensor):  # else strict load reports it
            if getattr(module, name).dtype != t.dtype:
                setattr(module, name, torch.empty_like(t))
    model.load_state_dict(state, strict=True)
    return model
