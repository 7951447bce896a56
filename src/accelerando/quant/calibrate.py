"""``calibrate_``: record per-layer activation statistics with forward hooks, then ``quantize_`` with them.

API (one call, in place, like ``quantize_``)::

    calibrate_(model, SVDQuantConfig(w_bits=4, a_bits=8, rank=32), batches=[lambda m: m.decode(z_train)])

``batches`` is an iterable whose items are either tensors (run as ``model(item)``) or callables (run as
``item(model)``, for models whose calibration pass is not ``forward``: a codec's ``decode``, a sampler loop). They
run under ``torch.no_grad()`` on the float model. For every layer the plan gives a config with
``needs_calibration`` a forward pre-hook records the per-input-channel absmax of its input [K] and, when the config
picks its smoothing by output MSE (``SVDQuantConfig(calibration="mse")``), a uniform random sample of up to
``max_rows`` input rows (reservoir by random keys, seeded). Then ``quantize_`` runs with the same
``config`` / ``filter_fn`` / ``overrides``; layers whose config needs no calibration (RTN) are quantized as usual.
Use calibration data from the train split only.

``SVDQuantConfig(calibration="stft")`` layers also need ``objective``: a callable ``(model) -> float`` that runs
the model end to end and returns the error to minimise (for a generator: the complex-STFT error of the decoded audio
against the float model's, see :func:`accelerando.quant.presets.quantize_pipeline`). After ``quantize_``,
:func:`accelerando.quant.stft_search.stft_refine_` refines those layers greedily against it; the report is stored
on ``model.stft_calibration``. Given ``sensitivity`` (:func:`accelerando.quant.sensitivity.record_sensitivity`
of the float model) instead, those layers are re-picked layer by layer on the sensitivity-weighted output error
(:func:`~accelerando.quant.sensitivity.sensitivity_refine_`), with no end-to-end objective.
"""

from collections.abc import Callable, Iterable

import torch
from torch import nn

from accelerando.quant.api import quant_plan, quantize_
from accelerando.quant.configs import QuantConfig, SVDQuantConfig
from accelerando.quant.sensitivity import check_sensitivity, sensitivity_refine_
from accelerando.quant.stft_search import stft_refine_

__all__ = ["calibrate_", "record_activations"]


def _wants_sample(cfg: QuantConfig) -> bool:
    return isinstance(cfg, SVDQuantConfig) and cfg.calibration in ("mse", "stft")


def _is_stft(cfg: QuantConfig) -> bool:
    return isinstance(cfg, SVDQuantConfig) and cfg.calibration == "stft"


def record_activations(
    model: nn.Module,
    names: dict[str, bool],
    batches: Iterable,
    max_rows: int = 2048,
    seed: int = 0,
) -> dict[str, dict[str, torch.Tensor]]:
    """Run ``batches`` through ``model``; return name -> ``{"absmax": [K], "sample": [<=max_rows, K]?}``.

    ``names``: module name -> whether to keep a row sample as well as the absmax.
    """
    modules = dict(model.named_modules())
    stats: dict[str, dict[str, torch.Tensor]] = {}
    keys: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(seed)

    def hook_for(name: str, want_sample: bool):
        def hook(mod, args):
            x = args[0].detach()
            x2 = x.reshape(-1, x.shape[-1]).float()  # [M, K]
            if not len(x2):
                return
            st = stats.setdefault(name, {"absmax": torch.zeros(x2.shape[1], device=x2.device)})
            st["absmax"] = torch.maximum(st["absmax"], x2.abs().amax(dim=0))
            if want_sample:
                k = torch.rand(len(x2), generator=gen).to(x2.device)
                rows = x2 if "sample" not in st else torch.cat([st["sample"], x2])
                k = k if name not in keys else torch.cat([keys[name], k])
                if len(rows) > max_rows:
                    idx = torch.topk(k, max_rows, largest=False).indices
                    rows, k = rows[idx], k[idx]
                st["sample"], keys[name] = rows, k

        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n, s)) for n, s in names.items()]
    try:
        with torch.no_grad():
            for b in batches:
                b(model) if callable(b) else model(b)
    finally:
        for h in handles:
            h.remove()
    return stats


def calibrate_(
    model: nn.Module,
    config: QuantConfig | None,
    batches: Iterable[torch.Tensor | Callable[[nn.Module], object]],
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    overrides: dict[str, QuantConfig | None] | None = None,
    max_rows: int = 2048,
    seed: int = 0,
    objective: Callable[[nn.Module], float | list[float]] | None = None,
    unit_fn: Callable[[str], str] | None = None,
    stats: dict[str, dict[str, torch.Tensor]] | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    min_gain: float = 0.0,
    accept: str = "mean",
    sensitivity: dict[str, dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """Record activation statistics for the layers that need them, then ``quantize_`` ``model`` in place.

    ``objective`` / ``unit_fn`` / ``callback`` / ``min_gain`` / ``accept``: for ``calibration="stft"`` layers (see
    the module docstring and :func:`~accelerando.quant.stft_search.stft_refine_`). ``sensitivity``: for those
    layers, the sensitivity-weighted form instead of the search (then ``objective`` is not needed). ``stats``:
    activation statistics already recorded with :func:`record_activations` (with row samples for mse / stft
    layers); ``batches`` is then not run.

    Raises ``ValueError`` naming the layers no batch ran, when stft layers have neither ``objective`` nor
    ``sensitivity`` (or both), or when the sensitivity rows do not fit a layer; all before quantizing. Returns
    ``model``.
    """
    plan = quant_plan(model, config, filter_fn, overrides)
    need = {n: _wants_sample(c) for n, c in plan.items() if c.needs_calibration}
    stft = [n for n, c in plan.items() if _is_stft(c)]
    if stft and objective is not None and sensitivity is not None:
        raise ValueError("give calibration='stft' layers an objective (the search) or sensitivity rows, not both")
    if stft and objective is None and sensitivity is None:
        raise ValueError(
            f"calibration='stft' needs objective=(model -> float), an end-to-end error to minimise; {len(stft)} "
            "layer(s) use it (accelerando.quant.presets.quantize_pipeline builds one for a generator)"
        )
    if stats is None:
        stats = record_activations(model, need, batches, max_rows, seed) if need else {}
    missing = sorted(set(need) - set(stats))
    if missing:
        raise ValueError(f"calibration batches never ran these layers: {missing}")
    no_rows = sorted(n for n, s in need.items() if s and "sample" not in stats[n])
    if no_rows:
        raise ValueError(f"calibration stats hold no activation rows for these mse/stft layers: {no_rows}")
    modules = dict(model.named_modules())
    floats = {n: modules[n] for n in stft}
    if stft and sensitivity is not None:
        check_sensitivity(floats, sensitivity)  # before anything is quantized
    for n in need:
        modules[n]._quant_calib = stats[n]
    try:
        quantize_(model, config, filter_fn, overrides)
    finally:
        for n in need:
            modules[n].__dict__.pop("_quant_calib", None)
    if stft and sensitivity is not None:
        model.stft_calibration = sensitivity_refine_(model, floats, stats, sensitivity, callback)
    elif stft:
        model.stft_calibration = stft_refine_(
            model, floats, stats, objective, unit_fn, callback, min_gain, accept=accept
        )
    return model
