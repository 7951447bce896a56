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
(with plain guidance the unconditional branch enters with weight ``(1 - cfg)²``, the conditional with ``cfg²``; with
rhythm guidance, three branches, as ``combine_guidance`` mixes them). The trajectory is the teacher's: guidance at
every step (``guidance_interval="all"``) and no latent guidance, so for a model with a guidance interval some rows
come from unconditional calls its sampler skips.

Approximations: the diagonal of ``H`` ignores correlations between output elements, which real quantization errors
have (one weight error meets correlated inputs), and the linearisation holds for small errors. The test checks the
estimator with i.i.d. noise (``tests/quant/test_sensitivity.py``); whether the choices it makes carry over is
measured in BENCHMARKS.md.

The candidates per layer are :data:`~accelerando.quant.configs.STFT_ALPHA_GRID` × the low-rank split × the
residual clipping in :data:`STFT_CLIP_GRID`, at the configured rank (the ``"mse"`` choice, plain split, with its
clipping, 1 unless ``clip_search`` picked another, is one of them and is kept on ties). The split is the plain
SVD of the smoothed weight, or its SVD weighted by each output channel's mean sensitivity
(:func:`~accelerando.quant.svd.lowrank_split` with ``row_weights``: Fisher-weighted SVD), which gives the 16-bit
branch the rows whose error the audio feels most. Cost: one forward and ``projections`` backward passes per prompt
on the float model, then a grid of layer evaluations on the recorded rows; no end-to-end evaluation per candidate.
"""

import itertools
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from accelerando.quant.configs import STFT_ALPHA_GRID, STFT_CLIP_GRID, SVDQuantConfig
from accelerando.quant.svd import SVDQuantLinear, smoothed_split

__all__ = [
    "SPLITS",
    "check_sensitivity",
    "layer_outputs",
    "record_sensitivity",
    "sensitivity_refine_",
    "weighted_error",
]

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

    Returns name -> ``{"x": [rows, K] float32 inputs, "w": [rows, N] float32 weights (mean g²), "call": [rows]
    int64, "hi": [calls, K], "lo": [calls, K]}``: ``call`` is each row's backbone call (one sampler step, its
    guidance branches together; numbered over all prompts), ``hi`` / ``lo`` the per-channel max / min of the layer's
    input over that whole call, so that per-tensor activation scales can be reproduced exactly on the sampled rows
    (:func:`weighted_error`).
    """
    from accelerando.quant.recovery import RECOVERY_RESOLUTIONS, teacher_forced_audio

    if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
        raise ValueError(f"projections={projections!r}; use an int >= 1")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows={max_rows!r}; use an int >= 1")
    if not teacher.items:
        raise ValueError("the teacher holds no prompts; record at least one")
    dit, codec = pipeline.model.dit, pipeline.codec
    modules = {n: dit.get_submodule(n) for n in names}
    gen = torch.Generator().manual_seed(seed)
    per_item = -(-max_rows // len(teacher.items))
    out: dict[str, dict[str, list]] = {n: {"x": [], "w": [], "call": [], "hi": [], "lo": []} for n in names}
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

    frozen = [p for p in (*dit.parameters(), *codec.parameters()) if p.requires_grad]  # no .grad left behind
    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        for p in frozen:
            p.requires_grad_(False)
        for i, item in enumerate(teacher.items):
            live.clear()
            with torch.enable_grad():  # the float backbone's calls, batched, through the hooks and the codec
                audio = teacher_forced_audio(pipeline, item, teacher.cfg, teacher.rhythm_cfg)
                for r in range(projections):
                    proj = _stft_projection(audio, item.audio, gen, RECOVERY_RESOLUTIONS)
                    proj.backward(retain_graph=r + 1 < projections)
            missing = sorted(set(names) - set(live))
            if missing:
                raise ValueError(f"the teacher's backbone calls never ran these layers: {missing[:5]}")
            for n, calls in live.items():
                d = out[n]
                x2 = torch.cat([x.reshape(-1, x.shape[-1]).float() for x, _ in calls])  # [M, K]
                w2 = torch.cat([sq.reshape(-1, sq.shape[-1]) for _, sq in calls]) / projections  # [M, N]
                ids = []
                for x, _ in calls:  # one group per sampler call: its guidance branches are one batch slice
                    groups = item.calls if x.dim() > 1 and x.shape[0] % item.calls == 0 else 1
                    g = x.reshape(groups, -1, x.shape[-1]).float()  # [groups, rows, K]
                    offset = sum(len(t) for t in d["hi"])
                    ids.append(torch.arange(groups).repeat_interleave(g.shape[1]) + offset)
                    d["hi"].append(g.amax(1))
                    d["lo"].append(g.amin(1))
                call = torch.cat(ids)  # [M], indices into the rows of hi / lo
                take = torch.randperm(len(x2), generator=gen)[: min(per_item, len(x2))].to(x2.device)
                d["x"].append(x2[take])
                d["w"].append(w2[take])
                d["call"].append(call[take])
            if callback:
                callback(i + 1, len(teacher.items))
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
        live.clear()
    return {
        n: {
            "x": torch.cat(d["x"])[:max_rows],
            "w": torch.cat(d["w"])[:max_rows],
            "call": torch.cat(d["call"])[:max_rows],
            "hi": torch.cat(d["hi"]),
            "lo": torch.cat(d["lo"]),
        }
        for n, d in out.items()
    }


def _row_weights(w: torch.Tensor) -> torch.Tensor:
    """Sensitivity weights [M, N] -> per output channel [N], mean 1, at least ``_MIN_ROW_WEIGHT``."""
    f = w.double().mean(0)
    f = f / f.mean().clamp(min=1e-300)
    return f.clamp(min=_MIN_ROW_WEIGHT) if bool(torch.isfinite(f).all()) and float(f.sum()) > 0 else torch.ones_like(f)


def layer_outputs(layer: nn.Module, rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """``layer`` on the recorded input rows ``rows["x"]`` [M, K] -> [M, N] float32. A layer with one activation scale
    per call (``act_scale="tensor"``) runs each call's rows with that call's per-channel max and min rows appended,
    so its scale is the one the whole call had (the range of ``x / s`` over a call is that of those two rows for any
    positive smoothing ``s``); other layers run all rows at once."""
    x = rows["x"]
    with torch.no_grad():
        if getattr(getattr(layer, "residual", layer), "act_scale", None) != "tensor":
            return layer(x).float()
        out = x.new_empty(len(x), layer.out_features)
        for c in rows["call"].unique().tolist():
            idx = (rows["call"] == c).nonzero().flatten()
            y = layer(torch.cat([x[idx], rows["hi"][c : c + 1], rows["lo"][c : c + 1]]))
            out[idx] = y[: len(idx)].float()
        return out


def weighted_error(layer: nn.Module, ref: torch.Tensor, rows: dict[str, torch.Tensor]) -> float:
    """``mean(w * (layer(x) - ref)²)``: the sensitivity-weighted output error of ``layer`` on the recorded rows
    (:func:`record_sensitivity`'s ``x`` [M, K], weights ``w`` [M, N]; per-call scales as :func:`layer_outputs`)
    against the float outputs ``ref`` [M, N]."""
    return float((rows["w"] * (layer_outputs(layer, rows) - ref).square()).mean())


def check_sensitivity(layers: dict[str, nn.Module], sensitivity: dict[str, dict[str, torch.Tensor]]) -> None:
    """``ValueError`` (one line) unless ``sensitivity`` holds consistent rows for every layer in ``layers`` (name ->
    the float layer): ``x`` [M, in_features], ``w`` [M, out_features] with M > 0, ``call`` [M] indexing ``hi`` /
    ``lo`` [calls, in_features]."""
    for n, lin in layers.items():
        d = sensitivity.get(n)
        if d is None:
            raise ValueError(f"no sensitivity rows recorded for layer {n!r}")
        x, w, call, hi, lo = (d.get(k) for k in ("x", "w", "call", "hi", "lo"))
        if any(t is None for t in (x, w, call, hi, lo)):
            raise ValueError(f"sensitivity rows of {n!r} lack one of x, w, call, hi, lo (use record_sensitivity)")
        k, m = lin.in_features, len(x)
        ok = m > 0 and x.shape == (m, k) and w.shape == (m, lin.out_features) and call.shape == (m,)
        ok = ok and hi.shape == lo.shape and hi.dim() == 2 and hi.shape[1] == k and int(call.max()) < len(hi)
        if not ok:
            raise ValueError(
                f"sensitivity rows of {n!r} do not fit the layer ({k} -> {lin.out_features}): x {tuple(x.shape)}, "
                f"w {tuple(w.shape)}, call {tuple(call.shape)}, hi {tuple(hi.shape)}"
            )


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
    check_sensitivity(floats, sensitivity)
    start = best_total = 0.0
    layers, evaluations = {}, 0
    for i, (n, lin) in enumerate(floats.items()):
        cur = model.get_submodule(n)
        cfg = cur.quant_config
        if not isinstance(cur, SVDQuantLinear) or not isinstance(cfg, SVDQuantConfig):
            raise TypeError(f"stft calibration refines SVDQuantLinear layers only; {n!r} is {type(cur).__name__}")
        rows = sensitivity[n]
        w = rows["w"]
        with torch.no_grad():
            ref = lin(rows["x"]).float()
        alpha0 = round(float(cur.alpha), 6)
        best, best_err = cur, weighted_error(cur, ref, rows)
        first = best_err
        choice = {"alpha": alpha0, "w_clip": float(cfg.w_clip), "rank": cur.rank, "split": "plain"}
        splits: dict[tuple[float, str], tuple] = {}
        evaluations += 1
        f = _row_weights(w)  # [N]: each output channel's mean sensitivity, for the weighted split
        kinds = SPLITS if cur.rank and not torch.allclose(f, torch.ones_like(f)) else ("plain",)
        for alpha, split_kind, clip in itertools.product(STFT_ALPHA_GRID, kinds, STFT_CLIP_GRID):
            if (alpha, split_kind, clip) == (alpha0, "plain", choice["w_clip"]) and best is cur:
                continue
            if (alpha, split_kind) not in splits:
                rows_w = f if split_kind == "weighted" else None
                splits[alpha, split_kind] = smoothed_split(
                    lin, stats[n]["absmax"], alpha, cfg.act_scale, cur.rank, rows_w
                )
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
                reduce_range=cfg.reduce_range,
            )
            err = weighted_error(cand, ref, rows)
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
