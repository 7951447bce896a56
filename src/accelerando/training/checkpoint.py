"""Training checkpoints: weights as safetensors, optimizer state, and a JSON state file, each written atomically.

The optimizer state is read back with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

import json
from pathlib import Path

import torch
from torch import nn

from accelerando.models.io import load_state, save_model

__all__ = ["Checkpoint"]


class Checkpoint:
    """``out/checkpoint/{model.safetensors, optim.pt, state.json}`` for a model of ``kind``, plus
    ``ema.safetensors`` (an exponential moving average of the weights) when the trainer keeps one."""

    def __init__(self, out: Path, kind: str):
        self.dir = Path(out) / "checkpoint"
        self.kind = kind

    def exists(self) -> bool:
        return (self.dir / "state.json").exists()

    def state(self) -> dict:
        return json.loads((self.dir / "state.json").read_text())

    def load_weights(self, model: nn.Module) -> None:
        weights, _ = load_state(self.dir / "model.safetensors", self.kind)
        model.load_state_dict(weights)

    def has_ema(self) -> bool:
        return (self.dir / "ema.safetensors").exists()

    def load_ema(self, model: nn.Module) -> None:
        """The EMA weights into ``model`` (a module of the same architecture)."""
        weights, _ = load_state(self.dir / "ema.safetensors", self.kind)
        model.load_state_dict(weights)

    def load_optimizer(self, opt: torch.optim.Optimizer, device: str) -> None:
        if (self.dir / "optim.pt").exists():
            opt.load_state_dict(torch.load(self.dir / "optim.pt", weights_only=True, map_location=device))

    def save(
        self, model: nn.Module, opt: torch.optim.Optimizer, config: dict, state: dict, ema: nn.Module | None = None
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_model(model, self.dir / "model.safetensors", self.kind, config)
        if ema is not None:
            save_model(ema, self.dir / "ema.safetensors", self.kind, config)
        torch.save(opt.state_dict(), self.dir / ".optim.tmp")
        (self.dir / ".optim.tmp").replace(self.dir / "optim.pt")
        tmp = self.dir / ".state.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.dir / "state.json")
