"""Phase-coherent ("stft") calibration: greedy end-to-end search over each SVDQuant layer's alpha, clipping and rank.

Layer-output MSE treats every error alike; what a listener (and the paired metrics) sees is the decoded audio,
after the error has gone through the sampler's trajectory and the codec. So ``SVDQuantConfig(calibration="stft")``
starts from the ``"mse"`` choice (per-layer alpha from the MSE grid, ``w_clip`` 1 or the MSE stage's pick with
``clip_search``, full rank) and then refines it
against an ``objective(model) -> float`` that runs the whole pipeline and returns the complex-STFT error of its audio
against the float pipeline's audio on the same prompts, seeds and noise (lower is better;
:func:`accelerando.quant.presets.quantize_pipeline` builds it).

Search (coordinate descent, greedy, unit by unit in model order): layers are grouped into units by ``unit_fn``
(default: each layer alone; the presets group a DiT block's layers). For each unit, in turn,

1. alpha in :data:`~accelerando.quant.configs.STFT_ALPHA_GRID` (all layers of the unit set to it),
2. residual weight clipping in :data:`~accelerando.quant.configs.STFT_CLIP_GRID`,
3. rank: the configured rank or half of it (the "rank split": how many singular directions stay in 16 bits),

each candidate is installed in the live model, the objective is evaluated, and the candidate is kept only when the
objective drops below the best so far (ties keep the current choice; for the rank step a candidate is kept when it
is not worse, since half the rank is fewer bytes). So the final objective is never above the starting ("mse")
one on the calibration items. Cost: ``1 + units * (len(alpha grid) + len(clip grid) - 1 + 1)`` objective calls at
most (candidates equal to the current state are skipped); low-rank splits are cached per (layer, alpha, rank).
"""

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from accelerando.quant.configs import STFT_ALPHA_GRID, STFT_CLIP_GRID, SVDQuantConfig
from accelerando.quant.svd import SVDQuantLinear, smoothed_split

__all__ = ["stft_refine_"]


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def stft_refine_(
    model: nn.Module,
    floats: dict[str, nn.Linear],
    stats: dict[str, dict[str, torch.Tensor]],
    objective: Callable[[nn.Module], float],
    unit_fn: Callable[[str], str] | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    min_gain: float = 0.0,
    search_rank: bool = True,
    accept: str = "mean",
) -> dict:
    """Refine the already-installed ``SVDQuantLinear`` layers named in ``floats`` (name -> the float layer they
    replaced; ``stats``: name -> recorded ``{"absmax": [K]}``) in place. Returns a report: ``{"start": objective of
    the starting point, "best": final objective, "evaluations": n, "history": [objective after each unit],
    "layers": {name: {"alpha", "w_clip", "rank"}}}``. ``callback(done, total, best)`` after every evaluation
    (``total`` is the upper bound above). ``min_gain``: an alpha / clipping candidate must lower the objective by this
    fraction of the best so far to be kept (guards against fitting the objective's noise on few items).
    ``search_rank``: whether to try half the rank per unit (step 3). ``accept``: ``"mean"`` keeps a candidate that
    lowers the objective (its mean, when ``objective`` returns one error per item); ``"all"`` also needs it not to
    raise the error of any single item (a consistency test against fitting one item's noise; an objective returning
    a plain float is one item)."""
    if accept not in ("mean", "all"):
        raise ValueError(f"accept={accept!r}; use 'mean' or 'all'")
    unit_fn = unit_fn or (lambda n: n)
    units: dict[str, list[str]] = {}
    for name in floats:
        units.setdefault(unit_fn(name), []).append(name)
    current = {n: model.get_submodule(n) for n in floats}
    state = {}
    for n, m in current.items():
        cfg = m.quant_config
        if not isinstance(m, SVDQuantLinear) or not isinstance(cfg, SVDQuantConfig):
            raise TypeError(f"stft calibration refines SVDQuantLinear layers only; {n!r} is {type(m).__name__}")
        state[n] = {"alpha": round(float(m.alpha), 6), "w_clip": float(cfg.w_clip), "rank": m.rank}
    splits: dict[tuple[str, float, int], tuple] = {}

    def build(n: str, st: dict) -> nn.Module:
        lin, cfg = floats[n], current[n].quant_config
        key = (n, st["alpha"], st["rank"])
        if key not in splits:
            splits[key] = smoothed_split(lin, stats[n]["absmax"], st["alpha"], cfg.act_scale, st["rank"])
        q = SVDQuantLinear.from_float(
            lin,
            stats[n]["absmax"],
            st["alpha"],
            cfg.w_bits,
            cfg.a_bits,
            cfg.group_size,
            st["rank"],
            st["w_clip"],
            split=splits[key],
            act_scale=cfg.act_scale,
            reduce_range=cfg.reduce_range,
        )
        q.quant_config = replace(cfg, smooth_alpha=st["alpha"], w_clip=st["w_clip"], rank=st["rank"])
        return q

    total = 1 + sum(
        len(STFT_ALPHA_GRID) + len(STFT_CLIP_GRID) - 1 + int(any(current[n].rank > 1 for n in names))
        for names in units.values()
    )
    done = 0

    def evaluate() -> tuple[float, list[float]]:
        """(mean error, per-item errors) of the model as it stands."""
        nonlocal done
        with torch.no_grad():
            out = objective(model)
        items = [float(v) for v in out] if isinstance(out, list | tuple) else [float(out)]
        err = sum(items) / len(items)
        done += 1
        if callback:
            callback(done, total, err)
        return err, items

    def keeps(err: float, items: list[float], ties: bool) -> bool:
        better = err < best * (1 - min_gain) or (ties and err <= best)
        if accept == "all":
            better = better and all(a <= b for a, b in zip(items, best_items, strict=True))
        return better

    best, best_items = evaluate()
    start = best
    history = []
    for names in units.values():
        full_rank = {n: min(current[n].quant_config.rank, floats[n].in_features, floats[n].out_features) for n in names}
        steps = [
            ("alpha", STFT_ALPHA_GRID, False),
            ("w_clip", STFT_CLIP_GRID, False),
            *([("rank", ("half",), True)] if search_rank else []),
        ]
        for field, grid, accept_ties in steps:
            for value in grid:
                if value == "half":
                    cand = {n: {**state[n], "rank": full_rank[n] // 2} for n in names if full_rank[n] > 1}
                    if not cand or all(state[n]["rank"] == c["rank"] for n, c in cand.items()):
                        continue
                else:
                    if all(state[n][field] == value for n in names):
                        continue
                    cand = {n: {**state[n], field: value} for n in names}
                saved = {n: current[n] for n in cand}
                for n, st in cand.items():
                    _set(model, n, build(n, st))
                err, items = evaluate()
                if keeps(err, items, accept_ties):
                    best, best_items = err, items
                    for n, st in cand.items():
                        state[n], current[n] = st, model.get_submodule(n)
                else:
                    for n, m in saved.items():
                        _set(model, n, m)
        history.append(best)
    for n, st in state.items():  # every layer's stored config records its final choice (rank sizes the reload)
        m = current[n]
        m.quant_config = replace(m.quant_config, smooth_alpha=st["alpha"], w_clip=st["w_clip"], rank=st["rank"])
    return {"start": start, "best": best, "evaluations": done, "history": history, "layers": state}
