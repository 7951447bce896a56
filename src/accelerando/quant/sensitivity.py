"""Phase-coherent calibration by output sensitivity: each SVDQuant layer's alpha and clipping chosen to minimise its
output error weighted by how much each output element moves the decoded audio's complex STFT.

The ``"search"`` form of ``calibration="stft"`` (:mod:`accelerando.quant.stft_search`) evaluates the whole pipeline
for every candidate. On a few short prompts that objective is noisy, and its choices did not carry over to held-out
prompts (BENCHMARKS.md, "stft against mse calibration, three seeds"). This form keeps the same end-to-end target
and makes it local, as BRECQ's Fisher-weighted reconstruction does for classification losses:

    loss(Δy) ≈ Δyᵀ H Δy,   H = Jᵀ J,   J = ∂ STFT(decode(z)) / ∂y      (Gauss-Newton, at the float model)

where ``y`` is one layer's output over the teacher-forced float trajectory (every sampler call and guidance branch),
``z`` the final latent the Euler sampler integrates from it (the linearisation :mod:`accelerando.quant.recovery`
uses), and the STFT the complex spectrogram at the recovery loss's three resolutions, each divided by the float
audio's norm. The diagonal of ``H`` is estimated without forming ``J``: for a random complex Gaussian ``ρ`` in
STFT space, ``g = Jᵀ ρ`` (one backward pass) has ``E[g²] = diag(H)`` (Hutchinson). Then per layer

    err(candidate) = mean over rows i, outputs n of  w[i, n] * (y_candidate[i, n] - y_float[i, n])²,   w = mean g²

over a sample of rows whose inputs and weights were recorded together. Uniform ``w`` is the ``"mse"`` objective;
``w`` adds what the codec and the sampler do to each output channel, frame, sampler step and guidance branch
(the unconditional branch enters with weight ``(1 - cfg)²``, the conditional with ``cfg²``).

The candidates per layer are :data:`~accelerando.quant.configs.STFT_ALPHA_GRID` × the low-rank split × the
residual clipping in :data:`STFT_CLIP_GRID`, at the configured rank (the ``"mse"`` choice, plain split, clipping 1,
is one of them and is kept on ties). The split is the plain SVD of the smoothed weight, or its SVD weighted by each
output channel's mean sensitivity (:func:`~accelerando.quant.svd.lowrank_split` with ``row_weights``: Fisher-weighted
SVD), which gives the 16-bit branch the rows whose error the audio feels most. Cost: one forward and
``projections`` backward passes per prompt on the float model, then a grid of layer evaluations on the recorded rows;
no end-to-end evaluation per candidate.
"""

import itertools
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from accelerando.modules.precision import autocast
from accelerando.quant.configs import STFT_ALPHA_GRID, STFT_CLIP_GRID, SVDQuantConfig
from accelerando.quant.svd import SVDQuantLinear, layer_smoothing, lowrank_split

__all__ = ["SPLITS", "record_sensitivity", "sensitivity_refine_", "weighted_error"]

SPLITS = ("plain", "weighted")  # the low-rank branch: plain SVD, or weighted by output-channel sensitivity
_MIN_ROW_WEIGHT = 1e-2  # of the mean: a channel the calibration never saw move the audio still counts a little


def _stft_projection(audio: torch.Tensor, ref: torch.Tensor, gen: torch.Generator, resolutions) -> torch.Tensor:
    """``sum_res Re<ρ_res, STFT_res(audio)> / (||STFT_res(ref)|| sqrt(len(resolutions)))`` with ``ρ`` complex
    standard normal (real and imaginary parts N(0, 1)): a scalar whose gradient ``g`` has ``E[g gᵀ]`` equal to the
    Gauss-Newton matrix of the recovery loss (up to a factor 2)."""
    a, r = audio.reshape(-1, audio.shape[-1]).float(), ref.reshape(-1, ref.shape[-1]).float()
    total = a.new_zeros(())
    for n_fft, hop in resolutions:
        win = torch.hann_window(n_fft, device=a.device)
        sa = torch.stft(a, n_fft, hop, window=win, return_complex=True)
        norm = torch.stft(r, n_fft, hop, window=win, return_complex=True).abs().square().sum().sqrt().clamp(min=1e-6)
        rho = torch.randn(sa.shape + (2,), generator=gen).to(a.device)
        total = total + (rho[..., 0] * sa.real + rho[..., 1] * sa.imag).sum() / norm
    return total / len(resolutions) ** 0.5


def record_sensitivity(
    pipeline,
    teacher,
    names: list[str],
    max_rows: int = 1024,
    projections: int = 2,
    seed: int = 0,
    callback: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs and output sensitivities of the FLOAT backbone's layers ``names`` along ``teacher``'s trajectories.

    Args:
        pipeline: the pipeline whose ``model.dit`` is still float (its layers named in ``names``: ``nn.Linear``).
        teacher: :func:`accelerando.quant.recovery.record_teacher` of that pipeline.
        names: layer names in ``pipeline.model.dit``.
        max_rows: rows kept per layer (spread evenly over the teacher's prompts, seeded uniform choice).
        projections: random STFT-space projections per prompt (backward passes); their ``g²`` are averaged.
        seed: seeds the projections and the row choice.
        callback: ``callback(done, total)`` after each prompt.

    Returns name -> ``{"x": [rows, K] float32 inputs, "w": [rows, N] float32 weights}`` (``w``: mean ``g²``).
    """
    from accelerando.quant.recovery import RECOVERY_RESOLUTIONS, _guided

    if projections < 1:
        raise ValueError(f"projections={projections!r}; use an int >= 1")
    dit, codec = pipeline.model.dit, pipeline.codec
    modules = {n: dit.get_submodule(n) for n in names}
    gen = torch.Generator().manual_seed(seed)
    per_item = -(-max_rows // len(teacher.items))
    out: dict[str, dict[str, list]] = {n: {"x": [], "w": []} for n in names}
    live: dict[str, tuple] = {}

    def hook_for(name: str):
        def hook(mod, args, y):
            if not y.requires_grad:  # a layer on the conditioning path: its output becomes a leaf that gets a grad
                y = y.detach().requires_grad_(True)
            sq = torch.zeros(y.shape, dtype=torch.float32, device=y.device)
            live.setdefault(name, []).append((args[0].detach(), sq))

            def accumulate(g: torch.Tensor) -> None:  # returns None: a tensor hook's return value replaces the grad
                sq.add_(g.detach().float().square())

            y.register_hook(accumulate)
            return y

        return hook

    frozen = [p for p in dit.parameters() if p.requires_grad]
    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        for p in dit.parameters():
            p.requires_grad_(False)
        for i, item in enumerate(teacher.items):
            live.clear()
            with torch.enable_grad():
                with autocast("cpu"):
                    v = dit(item.x, item.t, item.cond).float()
                guided = _guided(v, item.calls, teacher.cfg, teacher.rhythm_cfg)
                guided = guided - _guided(item.v, item.calls, teacher.cfg, teacher.rhythm_cfg)
                delta = (item.dt[:, None, None] * guided).sum(0)
                audio = codec.decode(item.latent + (delta * dit.latent_std).T[None])
                for r in range(projections):
                    proj = _stft_projection(audio, item.audio, gen, RECOVERY_RESOLUTIONS)
                    proj.backward(retain_graph=r + 1 < projections)
            missing = sorted(set(names) - set(live))
            if missing:
                raise ValueError(f"the teacher's backbone calls never ran these layers: {missing[:5]}")
            for n, calls in live.items():
                x2 = torch.cat([x.reshape(-1, x.shape[-1]).float() for x, _ in calls])  # [M, K]
                w2 = torch.cat([sq.reshape(-1, sq.shape[-1]) for _, sq in calls]) / projections  # [M, N]
                take = torch.randperm(len(x2), generator=gen)[: min(per_item, len(x2))].to(x2.device)
                out[n]["x"].append(x2[take])
                out[n]["w"].append(w2[take])
            if callback:
                callback(i + 1, len(teacher.items))
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
        live.clear()
    return {n: {"x": torch.cat(d["x"])[:max_rows], "w": torch.cat(d["w"])[:max_rows]} for n, d in out.items()}


def _row_weights(w: torch.Tensor) -> torch.Tensor:
    """Sensitivity weights [M, N] -> per output channel [N], mean 1, at least ``_MIN_ROW_WEIGHT``."""
    f = w.double().mean(0)
    f = f / f.mean().clamp(min=1e-300)
    return f.clamp(min=_MIN_ROW_WEIGHT) if bool(torch.isfinite(f).all()) and float(f.sum()) > 0 else torch.ones_like(f)


def weighted_error(layer: nn.Module, ref: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> float:
    """``mean(w * (layer(x) - ref)²)``: the sensitivity-weighted output error of ``layer`` on rows ``x`` [M, K]
    against the float outputs ``ref`` [M, N], weights ``w`` [M, N]."""
    with torch.no_grad():
        return float((w * (layer(x).float() - ref).square()).mean())


def sensitivity_refine_(
    model: nn.Module,
    floats: dict[str, nn.Linear],
    stats: dict[str, dict[str, torch.Tensor]],
    sensitivity: dict[str, dict[str, torch.Tensor]],
    callback: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Re-pick alpha, clipping and the low-rank split of the installed ``SVDQuantLinear`` layers named in ``floats``
    (name -> the float layer it replaced) in place, minimising :func:`weighted_error` on ``sensitivity`` (from
    :func:`record_sensitivity`); ``stats``: name -> ``{"absmax": [K]}`` as recorded for smoothing.

    Returns ``{"method": "sensitivity", "start", "best": summed weighted error of all layers at the starting and
    final choice, "evaluations", "layers": {name: {"alpha", "w_clip", "rank", "split", "gain"}}}`` (``split``:
    ``"plain"`` or ``"weighted"``, see :data:`SPLITS`; ``gain``: the layer's relative drop in weighted error).
    ``callback(done, total, best)`` after each layer."""
    start = best_total = 0.0
    layers, evaluations = {}, 0
    for i, (n, lin) in enumerate(floats.items()):
        cur = model.get_submodule(n)
        cfg = cur.quant_config
        if not isinstance(cur, SVDQuantLinear) or not isinstance(cfg, SVDQuantConfig):
            raise TypeError(f"stft calibration refines SVDQuantLinear layers only; {n!r} is {type(cur).__name__}")
        if n not in sensitivity:
            raise ValueError(f"no sensitivity rows recorded for layer {n!r}")
        x, w = sensitivity[n]["x"], sensitivity[n]["w"]
        with torch.no_grad():
            ref = lin(x).float()
        alpha0 = round(float(cur.alpha), 6)
        best, best_err = cur, weighted_error(cur, ref, x, w)
        first = best_err
        choice = {"alpha": alpha0, "w_clip": float(cfg.w_clip), "rank": cur.rank, "split": "plain"}
        splits: dict[tuple[float, str], tuple] = {}
        evaluations += 1
        rows = _row_weights(w)  # [N]: each output channel's mean sensitivity, for the weighted split
        kinds = SPLITS if cur.rank and not torch.allclose(rows, torch.ones_like(rows)) else ("plain",)
        for alpha, split_kind, clip in itertools.product(STFT_ALPHA_GRID, kinds, STFT_CLIP_GRID):
            if (alpha, split_kind, clip) == (alpha0, "plain", choice["w_clip"]) and best is cur:
                continue
            if (alpha, split_kind) not in splits:
                ws = lin.weight.detach().float() * layer_smoothing(lin, stats[n]["absmax"], alpha, cfg.act_scale)
                splits[alpha, split_kind] = lowrank_split(ws, cur.rank, rows if split_kind == "weighted" else None)
            split = splits[alpha, split_kind]
            cand = SVDQuantLinear.from_float(
                lin,
                stats[n]["absmax"],
                alpha,
                cfg.w_bits,
                cfg.a_bits,
                cfg.group_size,
                cur.rank,
                clip,
                split=split,
                act_scale=cfg.act_scale,
            )
            err = weighted_error(cand, ref, x, w)
            evaluations += 1
            if err < best_err:
                best, best_err, choice = (
                    cand,
                    err,
                    {"alpha": alpha, "w_clip": clip, "rank": cur.rank, "split": split_kind},
                )
        best.quant_config = replace(cfg, smooth_alpha=choice["alpha"], w_clip=choice["w_clip"], rank=choice["rank"])
        if best is not cur:
            parent, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, best)
        start += first
        best_total += best_err
        layers[n] = {**choice, "gain": 1.0 - best_err / first if first > 0 else 0.0}
        if callback:
            callback(i + 1, len(floats), best_total)
    return {"method": "sensitivity", "start": start, "best": best_total, "evaluations": evaluations, "layers": layers}
