"""Spectrogram-aware outlier analysis of the generator backbone's quantized layers (issue 5).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quant_outliers.py --model PATH [--prompts 8] [--seconds 5]
        [--steps 8] [--cfg 3] [--top 5] [--out outliers.png] [--json outliers.json]
    .venv/bin/python benchmarks/quant_outliers.py --bias-audit BENCH_OUT [--json audit.json] [--out audit.png]

For ``--prompts`` shipped TRAIN-split calibration prompts (``load_calibration_prompts``; prompt ``i`` at seed
``i`` with ``steps + 2 (i mod 3)`` Euler steps, as the calibration does), the float pipeline generates a clip while
forward pre-hooks record the input of every Linear that the presets quantize (``dit_filter``: q / kv / out of
self- and cross-attention and both MLP Linears of each DiT block) at every backbone call, i.e. across the whole
denoising trajectory and for both guidance branches (batch row 0: conditional, row 1: unconditional).

Per layer it reports the ``--top`` channels by absmax over everything recorded, their ratio to the median channel
absmax, their excess kurtosis (over all recorded values of the channel) and their "offset share" (mean^2 / mean
square: near 1 means the channel carries a constant offset shared by all tokens, e.g. from the adaLN shift, rather
than a token-dependent signal), plus the layer's pooled excess kurtosis. Persistence: Jaccard overlap of the top
set of each backbone call, of each guidance branch and of each prompt with the layer's overall top set; and across
layers, how often each residual-stream channel (the 384-wide inputs of attn.q / attn.kv / cross.q / mlp.0) is in a
layer's top set.

Spectral relation. Each token is 4 latent frames of the 100-band log-mel latent (93.75 fps). The decoded output of
each prompt is analysed on the same frame grid: log energy in the low (< 250 Hz), mid (250 Hz - 2 kHz) and high
(> 2 kHz) mel bands, the tilt (low minus high: bass-heavy vs bright), overall log energy and onset strength
(positive spectral flux, ``eval.seams.spectral_flux``), each pooled to tokens (mean; max for onsets). For each
outlier channel the per-token |activation| of the conditional branch (mean over the calls with flow time
t <= 0.5, when the sample has formed) is correlated (Pearson, per prompt, then averaged) with those features; the
same correlation for every channel of the layer gives the null distribution (median and 95th percentile of |r|).
The per-token absmax (which sets each token's int8 scale) is correlated too.
Mechanism: for residual-stream channels the adaLN modulation ``1 + scale`` / ``shift`` feeding the layer, and the
``in_proj`` weights that map the noisy latent's mel bands into the channel (share of |weight| on low / mid / high
bands against the mean channel's share).

A conv U-Net backbone (the built-in since 2026-11-26) is analysed through the presets' layers: its quantizable
convolutions run as unfold + Linear (``prepare_backbone``), so a "channel" is an (input channel, tap) pair, reported
as both; rows are output frames at the layer's level (features pooled to 2^level frames instead of the DiT's
patch); the guidance rows are (all conditions, text only, unconditional) under rhythm guidance. The DiT-only
mechanism (residual stream, adaLN, ``in_proj``) is replaced by the input channels that recur in the tops of one
level's ``conv1`` layers.

Prints a JSON summary; ``--json`` writes the full per-layer report, ``--out`` a PNG (matplotlib Agg).

Bias audit (``--bias-audit BENCH_OUT``, the output folder of ``accelerando bench run`` whose baseline is the float
model; no model is loaded): per variant, the paired metrics against the baseline (LSD, MR-STFT, complex-STFT;
mean over clips) per collection and per instrument family, each also as a ratio to the variant's mean over all
clips (> 1: this group degrades more than average); and, per clip, Spearman's rho between the paired metric and
features of the baseline's clip: low-band (< 250 Hz) share of mel power ("bass-heavy"), spectral tilt, and mean
onset strength (positive spectral flux, "percussive"). With n clips, |rho| above about 2 / sqrt(n) is the rough
5% level (0.50 for the 16-clip quick suite). ``--out`` plots the paired LSD per family / collection and against the
low-band share.
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from accelerando.audio.mel import hz_to_mel, mel_to_hz
from accelerando.eval.seams import spectral_flux
from accelerando.pipelines.text_to_music import TextToMusicPipeline
from accelerando.quant.calib_prompts import load_calibration_prompts
from accelerando.quant.presets import prepare_backbone, run_prompt

BANDS_HZ = {"low": (0.0, 250.0), "mid": (250.0, 2000.0), "high": (2000.0, None)}
FEATURES = ("low", "mid", "high", "tilt", "energy", "onset")
RESIDUAL_KINDS = ("attn.q", "attn.kv", "cross.q", "mlp.0")  # inputs in the 384-wide residual-stream space


def _kind(name: str) -> str:
    return ".".join(name.split(".")[-2:])


def _block(name: str) -> int:
    return int(name.split(".")[1])


def _jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(1, len(a | b))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def _pearson_cols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``x`` [N, C] with ``y`` [N] -> [C]."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean()
    den = np.sqrt((x * x).sum(0) * (y * y).sum())
    return np.where(den > 0, (x * y[:, None]).sum(0) / np.maximum(den, 1e-30), 0.0)


class Recorder:
    """Forward pre-hooks on the quantized-layer set and the backbone (for the flow time) and on each block (adaLN)."""

    def __init__(self, dit: torch.nn.Module, layer_filter):
        self.dit = dit
        self.names = [n for n, m in dit.named_modules() if layer_filter(m, n)]
        self.calls: dict[str, list[dict]] = {n: [] for n in self.names}
        self.mom: dict[str, list] = {}
        self.mod: dict[int, list] = {}
        self.prompt = 0
        self.t = 1.0
        self.handles = []

    def __enter__(self):
        def dit_hook(_m, args):
            self.t = float(args[1][0])

        self.handles.append(self.dit.register_forward_pre_hook(dit_hook))
        for name in self.names:
            self.handles.append(self.dit.get_submodule(name).register_forward_pre_hook(self._layer_hook(name)))
        for i, blk in enumerate(getattr(self.dit, "blocks", [])):  # DiT: adaLN modulation per block
            self.handles.append(blk.register_forward_pre_hook(self._block_hook(i)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _layer_hook(self, name: str):
        def hook(_m, args):
            x = args[0].detach().float()  # [B, N, C]: one row per guidance branch, the unconditional last
            a = x.abs()
            rec = {"prompt": self.prompt, "t": self.t, "amax": a.amax(dim=1).numpy()}  # [2, C]
            if not name.endswith("cross.kv"):  # cross.kv reads text tokens, not audio frames
                rec["tok"] = a[0].to(torch.float16).numpy()  # [N, C]
            self.calls[name].append(rec)
            x64 = x.reshape(-1, x.shape[-1]).double()
            m = [float(x64.shape[0])] + [(x64**k).sum(0).numpy() for k in (1, 2, 3, 4)]
            if name in self.mom:
                self.mom[name] = [u + v for u, v in zip(self.mom[name], m, strict=True)]
            else:
                self.mom[name] = m

        return hook

    def _block_hook(self, i: int):
        def hook(blk, args):
            mod = (args[1] + blk.mod_table[None]).detach().float()  # [2, 6, W]
            shift1, scale1, _, shift2, scale2, _ = mod.unbind(1)
            rec = np.stack([(1 + scale1).abs().mean(0), shift1.abs().mean(0), (1 + scale2).abs().mean(0)])
            rec = np.concatenate([rec, shift2.abs().mean(0)[None].numpy()])
            self.mod.setdefault(i, []).append(rec)  # [4, W]: |1+scale1|, |shift1|, |1+scale2|, |shift2|

        return hook


def _kurtosis(m) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel excess kurtosis and offset share (mean^2 / mean square) from summed raw moments."""
    n, s1, s2, s3, s4 = m
    mu, e2, e3, e4 = s1 / n, s2 / n, s3 / n, s4 / n
    var = np.maximum(e2 - mu**2, 1e-30)
    m4 = e4 - 4 * mu * e3 + 6 * mu**2 * e2 - 3 * mu**4
    return m4 / var**2 - 3.0, mu**2 / np.maximum(e2, 1e-30)


def _layer_kurtosis(m) -> float:
    n, s1, s2, s3, s4 = m
    nt = n * len(s1)
    mu, e2, e3, e4 = s1.sum() / nt, s2.sum() / nt, s3.sum() / nt, s4.sum() / nt
    var = e2 - mu**2
    return float((e4 - 4 * mu * e3 + 6 * mu**2 * e2 - 3 * mu**4) / var**2 - 3.0)


def _pool(feats: dict[str, np.ndarray], patch: int) -> dict[str, np.ndarray]:
    """Frame features -> per row of ``patch`` frames (mean; max for onsets)."""
    out = {}
    for k, v in feats.items():
        v = np.pad(v, (0, (-len(v)) % patch), mode="edge").reshape(-1, patch)
        out[k] = v.max(1) if k == "onset" else v.mean(1)
    return out


def _token_features(audio: torch.Tensor, codec, frames: int) -> dict[str, np.ndarray]:
    """Per-frame features of decoded ``audio`` [1, 1, S] on the latent frame grid, and the mel band centres."""
    sr = codec.sample_rate
    with torch.no_grad():
        logmel = codec.mel(audio[0, 0].float())[:, :frames].numpy()  # [100, T]
    n_mels = logmel.shape[0]
    f_max = sr / 2
    centres = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(f_max)), n_mels + 2))[1:-1]
    power = np.exp(2 * logmel)
    feats = {}
    for band, (lo, hi) in BANDS_HZ.items():
        sel = (centres >= lo) & (centres < (hi or f_max + 1))
        feats[band] = np.log(power[sel].mean(0) + 1e-10)
    feats["tilt"] = feats["low"] - feats["high"]  # bass-heavy (> 0) vs bright
    feats["energy"] = np.log(power.mean(0) + 1e-10)
    flux, _ = spectral_flux(audio[0, 0].numpy().astype(np.float64), sr)
    feats["onset"] = flux[:frames]
    return feats, centres


def _residual_report(dit, rec: "Recorder", layers: dict, centres: np.ndarray) -> dict:
    """DiT: residual-stream channels: recurrence across layers, adaLN modulation, in_proj mel-band weights."""
    patch = dit.config.patch
    res_names = [n for n in rec.names if _kind(n) in RESIDUAL_KINDS]
    width = dit.config.width
    counts = np.zeros(width, dtype=int)
    for n in res_names:
        for t in layers[n]["top"]:
            counts[t["channel"]] += 1
    recurrent = [int(c) for c in np.argsort(-counts) if counts[c] >= 2][:12]
    mods = {i: np.mean(v, axis=0) for i, v in rec.mod.items()}  # [4, W]
    w = dit.in_proj.weight.detach().float().reshape(width, patch, -1)[:, :, : dit.config.latent_dim]  # [W, p, D]
    band_w = w.abs().sum(1).numpy()  # [W, D]
    band_sel = {b: (centres >= lo) & (centres < (hi or 1e9)) for b, (lo, hi) in BANDS_HZ.items()}
    share = {b: band_w[:, s].sum(1) / band_w.sum(1) for b, s in band_sel.items()}  # [W] each
    row_norm = np.linalg.norm(dit.in_proj.weight.detach().float().numpy(), axis=1)
    x_norm = np.linalg.norm(w.reshape(width, -1).numpy(), axis=1)

    def pct(v, c):
        return float((v < v[c]).mean() * 100)

    rec_info = []
    for c in recurrent:
        info = {
            "channel": c,
            "layers_in_top": int(counts[c]),
            "in_proj_row_norm_percentile": pct(row_norm, c),
            "in_proj_latent_norm_percentile": pct(x_norm, c),
            "in_proj_band_share": {b: float(share[b][c]) for b in BANDS_HZ},
            "mod_scale1_percentile_per_block": [pct(mods[i][0], c) for i in sorted(mods)],
            "mod_shift1_percentile_per_block": [pct(mods[i][1], c) for i in sorted(mods)],
            "mod_scale2_percentile_per_block": [pct(mods[i][2], c) for i in sorted(mods)],
            "mod_shift2_percentile_per_block": [pct(mods[i][3], c) for i in sorted(mods)],
        }
        rec_info.append(info)
    return {
        "rec_info": rec_info,
        "res_names": res_names,
        "share": share,
        "recurrent": recurrent,
        "counts": counts,
        "band_sel": band_sel,
    }


def _unet_channels(dit, rec: "Recorder", layers: dict) -> dict:
    """U-Net: each top unfolded channel as (input channel, tap), and the input channels that recur in the tops of
    the ``conv1`` layers of one level (their inputs are that level's normalised residual stream)."""
    from accelerando.quant.conv import UnfoldConv1d

    per_level: dict[str, dict[int, int]] = {}
    for n in rec.names:
        conv = dit.get_submodule(n.rsplit(".", 1)[0])
        if not isinstance(conv, UnfoldConv1d):
            continue
        for t in layers[n]["top"]:
            t["input_channel"], t["tap"] = divmod(t["channel"], conv.kernel_size)
        if n.endswith("conv1.linear"):
            level = ".".join(n.split(".")[:2])  # down.L / mid.k / up.L
            for t in layers[n]["top"]:
                counts = per_level.setdefault(level, {})
                counts[t["input_channel"]] = counts.get(t["input_channel"], 0) + 1
    return {
        lvl: sorted(([c, k] for c, k in cnt.items() if k >= 2), key=lambda ck: -ck[1]) for lvl, cnt in per_level.items()
    }


def analyse(args) -> tuple[dict, dict]:
    torch.manual_seed(0)
    pipe = TextToMusicPipeline.from_pretrained(args.model)
    dit = pipe.model.dit
    is_dit = hasattr(dit, "blocks")
    layer_filter = prepare_backbone(dit)  # a U-Net's quantizable convs run as unfold + Linear from here on
    prompts = load_calibration_prompts(args.prompts)
    rec = Recorder(dit, layer_filter)
    feats = []
    t0 = time.perf_counter()
    with rec, torch.no_grad():
        for i, p in enumerate(prompts):
            rec.prompt = i
            audio = run_prompt(pipe, p, args.seconds, args.steps + 2 * (i % 3), args.cfg, args.seed + i)
            frames = int(round(args.seconds * pipe.frame_rate))
            f, centres = _token_features(audio, pipe.codec, frames)
            feats.append(f)  # per frame; pooled to each layer's rows below (DiT: patch; U-Net: 2^level frames)
            print(f"prompt {i + 1}/{len(prompts)} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    k = args.top
    layers = {}
    extra = {}  # for the plot
    for name in rec.names:
        calls = rec.calls[name]
        amax_all = np.stack([c["amax"] for c in calls])  # [calls, 2, C]
        amax = amax_all.max((0, 1))
        med = float(np.median(amax))
        order = np.argsort(-amax)
        top = [int(c) for c in order[:k]]
        kurt, offset = _kurtosis(rec.mom[name])
        # persistence across calls (timesteps x prompts), guidance branches and prompts
        per_call = [_jaccard(np.argsort(-c["amax"].max(0))[:k], top) for c in calls]
        rows = amax_all.shape[1]  # guidance branches: (cond, uncond) or, with a rhythm scale, (all, text, uncond)
        branch_names = ("cond", "uncond") if rows == 2 else ("all", "text", "uncond") if rows == 3 else range(rows)
        branch = {str(b): _jaccard(np.argsort(-amax_all[:, j].max(0))[:k], top) for j, b in enumerate(branch_names)}
        per_prompt = []
        for i in range(len(prompts)):
            a = np.stack([c["amax"] for c in calls if c["prompt"] == i]).max((0, 1))
            per_prompt.append(_jaccard(np.argsort(-a)[:k], top))
        ts = np.array([c["t"] for c in calls])
        early = amax_all[ts > 0.5].max((0, 1))
        late = amax_all[ts <= 0.5].max((0, 1))
        entry = {
            "in_features": int(amax.size),
            "median_channel_absmax": med,
            "top1_ratio": float(amax[order[0]] / med),
            "n_channels_over_8x_median": int((amax > 8 * med).sum()),
            "layer_excess_kurtosis": _layer_kurtosis(rec.mom[name]),
            "top": [
                {
                    "channel": c,
                    "absmax": float(amax[c]),
                    "ratio_to_median": float(amax[c] / med),
                    "excess_kurtosis": float(kurt[c]),
                    "offset_share": float(offset[c]),
                    "absmax_early_t_gt_0.5": float(early[c]),
                    "absmax_late_t_le_0.5": float(late[c]),
                }
                for c in top
            ],
            "jaccard_per_call_mean": float(np.mean(per_call)),
            "jaccard_per_call_min": float(np.min(per_call)),
            "jaccard_branch": branch,
            "jaccard_cond_vs_uncond": _jaccard(
                np.argsort(-amax_all[:, 0].max(0))[:k], np.argsort(-amax_all[:, -1].max(0))[:k]
            ),
            "jaccard_per_prompt_min": float(min(per_prompt)),
        }
        # spectral relation (audio-token inputs only)
        if "tok" in calls[0]:
            rs = {f: [] for f in FEATURES}
            rs_tokmax = {f: [] for f in FEATURES}
            for i in range(len(prompts)):
                toks = [c["tok"].astype(np.float32) for c in calls if c["prompt"] == i and c["t"] <= 0.5]
                if not toks:
                    continue
                act = np.mean(toks, axis=0)  # [N, C] mean |activation| over the late calls
                scale = max(1, round(len(feats[i]["energy"]) / act.shape[0]))  # frames per row of this layer
                fi = _pool(feats[i], scale)
                n = min(act.shape[0], fi["energy"].shape[0])
                tokmax = np.mean([t.max(1) for t in toks], axis=0)[:n]
                for f in FEATURES:
                    y = fi[f][:n]
                    rs[f].append(_pearson_cols(act[:n], y))
                    rs_tokmax[f].append(_pearson(tokmax, y))
            r = {f: np.mean(v, axis=0) for f, v in rs.items()}  # [C] each
            entry["spectral"] = {
                "null_abs_r_median": {f: float(np.median(np.abs(r[f]))) for f in FEATURES},
                "null_abs_r_p95": {f: float(np.percentile(np.abs(r[f]), 95)) for f in FEATURES},
                "top_r": {str(c): {f: float(r[f][c]) for f in FEATURES} for c in top},
                "token_absmax_r": {f: float(np.mean(v)) for f, v in rs_tokmax.items()},
            }
            extra[name] = {"r": r, "top": top}
        layers[name] = entry
        extra.setdefault(name, {})["ratio"] = amax / med

    if is_dit:
        resid = _residual_report(dit, rec, layers, centres)
        rec_info, unet_info = resid["rec_info"], None
    else:
        resid, rec_info, unet_info = None, None, _unet_channels(dit, rec, layers)

    # summaries
    def agg(kind_filter):
        sel = [layers[n] for n in rec.names if kind_filter(n)]
        return {
            "top1_ratio_median": statistics.median(e["top1_ratio"] for e in sel),
            "top1_ratio_max": max(e["top1_ratio"] for e in sel),
            "layer_kurtosis_median": statistics.median(e["layer_excess_kurtosis"] for e in sel),
            "jaccard_per_call_mean": statistics.mean(e["jaccard_per_call_mean"] for e in sel),
            "jaccard_cond_vs_uncond_mean": statistics.mean(e["jaccard_cond_vs_uncond"] for e in sel),
            "jaccard_per_prompt_min": min(e["jaccard_per_prompt_min"] for e in sel),
            "offset_share_top_median": statistics.median(t["offset_share"] for e in sel for t in e["top"]),
        }

    by_kind = {kd: agg(lambda n, kd=kd: _kind(n) == kd) for kd in sorted({_kind(n) for n in rec.names})}
    spec_layers = [n for n in rec.names if "spectral" in layers[n]]
    exceed = {f: 0 for f in FEATURES}
    total = 0
    best = []
    for n in spec_layers:
        sp = layers[n]["spectral"]
        for c, rr in sp["top_r"].items():
            total += 1
            for f in FEATURES:
                if abs(rr[f]) > sp["null_abs_r_p95"][f]:
                    exceed[f] += 1
            f_best = max(FEATURES, key=lambda f, rr=rr: abs(rr[f]))
            best.append((abs(rr[f_best]), n, int(c), f_best, rr[f_best]))
    best.sort(reverse=True)
    summary = {
        "model": str(args.model),
        "prompts": [p["clip_id"] for p in prompts],
        "seconds": args.seconds,
        "steps": [args.steps + 2 * (i % 3) for i in range(len(prompts))],
        "cfg": args.cfg,
        "layers": len(rec.names),
        "top_k": k,
        "wall_s": round(time.perf_counter() - t0, 1),
        "by_kind": by_kind,
        "backbone": type(dit).__name__,
        "recurrent_residual_channels": rec_info,
        "unet_recurrent_input_channels_per_level": unet_info,
        "spectral": {
            "outlier_channels_tested": total,
            "outlier_channels_with_abs_r_above_layer_p95": exceed,
            "median_abs_r_outliers": {
                f: float(
                    np.median(
                        [
                            abs(layers[n]["spectral"]["top_r"][c][f])
                            for n in spec_layers
                            for c in layers[n]["spectral"]["top_r"]
                        ]
                    )
                )
                for f in FEATURES
            },
            "median_abs_r_all_channels": {
                f: float(np.median([layers[n]["spectral"]["null_abs_r_median"][f] for n in spec_layers]))
                for f in FEATURES
            },
            "token_absmax_r_median": {
                f: float(np.median([layers[n]["spectral"]["token_absmax_r"][f] for n in spec_layers])) for f in FEATURES
            },
            "strongest": [{"layer": n, "channel": c, "feature": f, "r": round(r, 3)} for _, n, c, f, r in best[:10]],
        },
        "band_edges_hz": {b: [lo, hi] for b, (lo, hi) in BANDS_HZ.items()},
        "in_proj_band_share_mean_channel": ({b: float(resid["share"][b].mean()) for b in BANDS_HZ} if resid else None),
        "mel_bands_per_range": {
            b: int(((centres >= lo) & (centres < (hi or 1e9))).sum()) for b, (lo, hi) in BANDS_HZ.items()
        },
    }
    aux = {"extra": extra, "names": rec.names}
    if resid:
        aux.update({k: resid[k] for k in ("res_names", "share", "recurrent", "counts")})
    return {"summary": summary, "layers": layers}, aux


def plot(report: dict, aux: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    names = aux["names"]
    fig, ax = plt.subplots(2, 2, figsize=(13, 8.5))
    # (a) top-1 / median per layer, coloured by kind
    kinds = sorted({_kind(n) for n in names})
    cmap = plt.get_cmap("tab10")
    for j, kd in enumerate(kinds):
        idx = [i for i, n in enumerate(names) if _kind(n) == kd]
        ax[0, 0].bar(idx, [layers[names[i]]["top1_ratio"] for i in idx], color=cmap(j), label=kd)
    ax[0, 0].set_yscale("log")
    ax[0, 0].axhline(8, color="k", lw=0.8, ls="--")
    ax[0, 0].set_title("top channel absmax / median, per quantized Linear input")
    ax[0, 0].set_xlabel("layer (block-major order)")
    ax[0, 0].legend(fontsize=7, ncol=4)
    if "res_names" not in aux:  # a U-Net: no shared residual stream and no in_proj (panels b and d)
        ax[0, 1].axis("off")
        ax[1, 1].axis("off")
    # (b) residual-stream channel ratio heatmap
    res = aux.get("res_names", [])
    if res:
        _plot_residual(ax[0, 1], aux, res, fig)
    # (c) |r| of outlier channels vs the layer's null (all channels)
    feats = list(FEATURES)
    pos = np.arange(len(feats))
    spec = [n for n in names if "spectral" in layers[n]]
    out_r = [[abs(v[f]) for n in spec for v in layers[n]["spectral"]["top_r"].values()] for f in feats]
    null_r = [[abs(x) for n in spec for x in aux["extra"][n]["r"][f]] for f in feats]
    b1 = ax[1, 0].boxplot(null_r, positions=pos - 0.18, widths=0.3, showfliers=False, patch_artist=True)
    b2 = ax[1, 0].boxplot(out_r, positions=pos + 0.18, widths=0.3, showfliers=False, patch_artist=True)
    for b in b1["boxes"]:
        b.set_facecolor("#cccccc")
    for b in b2["boxes"]:
        b.set_facecolor("#e07b39")
    ax[1, 0].set_xticks(pos)
    ax[1, 0].set_xticklabels(feats)
    ax[1, 0].set_ylabel("|Pearson r| per token (late steps)")
    ax[1, 0].legend([b1["boxes"][0], b2["boxes"][0]], ["all channels", "top outlier channels"], fontsize=8)
    ax[1, 0].set_title("|activation| vs output band energy / onset strength")
    if res:
        _plot_in_proj(ax[1, 1], aux, cmap)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_residual(axis, aux: dict, res: list[str], fig) -> None:
    """DiT panel (b): residual-stream channel ratio heatmap."""
    mat = np.stack([aux["extra"][n]["ratio"] for n in res])
    im = axis.imshow(
        np.log2(np.maximum(mat, 1e-3)), aspect="auto", cmap="magma", vmin=0, vmax=max(1.0, float(np.log2(mat.max())))
    )
    axis.set_yticks(range(len(res)))
    axis.set_yticklabels([n.replace("blocks.", "b") for n in res], fontsize=5)
    axis.set_xlabel("residual-stream channel")
    axis.set_title("residual stream: log2(absmax / median)")
    fig.colorbar(im, ax=axis)


def _plot_in_proj(axis, aux: dict, cmap) -> None:
    """DiT panel (d): in_proj mel-band weight share of the recurrent outlier channels."""
    share = aux["share"]
    bands = list(BANDS_HZ)
    rc = aux["recurrent"][:8]
    width = 0.8 / (len(rc) + 1)
    for j, b in enumerate(bands):
        axis.bar(j, share[b].mean(), width, color="#888888", label="mean channel" if j == 0 else None)
        for q, c in enumerate(rc):
            axis.bar(j + (q + 1) * width, share[b][c], width, color=cmap(q % 10), label=f"ch {c}" if j == 0 else None)
    axis.set_xticks(np.arange(len(bands)) + 0.4)
    axis.set_xticklabels([f"{b} ({BANDS_HZ[b][0]:.0f}-{BANDS_HZ[b][1] or 'Nyq'} Hz)" for b in bands])
    axis.set_ylabel("share of |in_proj weight| on the noisy latent")
    axis.set_title("in_proj: mel bands feeding the recurrent outlier channels")
    axis.legend(fontsize=7, ncol=3)


PAIRED = ("lsd", "mrstft", "complex_stft")


def _rank(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for x in np.unique(v):  # average ties
        r[v == x] = r[v == x].mean()
    return r


def _clip_features(path: Path) -> dict[str, float]:
    from accelerando.audio import load
    from accelerando.audio.mel import MelSpectrogram

    wav, sr = load(path, mono=True)
    mel = MelSpectrogram(sr, 1024, 256, 100)
    logmel = mel(wav[0]).numpy()
    power = np.exp(2 * logmel)
    centres = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sr / 2)), 102))[1:-1]
    low = power[centres < 250].sum() / power.sum()
    high = power[centres >= 2000].sum() / power.sum()
    flux, _ = spectral_flux(wav[0].numpy().astype(np.float64), sr)
    return {
        "low_share": float(low),
        "tilt_db": float(10 * np.log10(low / max(high, 1e-12))),
        "onset_strength": float(flux.mean()),
    }


def bias_audit(folder: Path) -> dict:
    res = json.loads((folder / "results.json").read_text())
    variants = res["variants"]
    base = next(v for v in variants if v["is_baseline"])
    feats = {c["id"]: _clip_features(folder / c["wav"]) for c in base["clips"]}
    fnames = list(next(iter(feats.values())))
    out = {
        "folder": str(folder),
        "baseline": base["name"],
        "n_clips": len(feats),
        "clip_features": feats,
        "variants": {},
    }
    for v in variants:
        if v["is_baseline"]:
            continue
        clips = [c for c in v["clips"] if c.get("paired")]
        entry = {}
        for m in PAIRED:
            vals = np.array([c["paired"][m] for c in clips])
            overall = float(vals.mean())
            groups = {}
            for key in ("collection", "family"):
                g = {}
                for name in sorted({c[key] for c in clips}):
                    x = np.array([c["paired"][m] for c in clips if c[key] == name])
                    g[name] = {"n": int(x.size), "mean": float(x.mean()), "ratio": float(x.mean() / overall)}
                groups[key] = g
            rho = {}
            for f in fnames:
                fx = np.array([feats[c["id"]][f] for c in clips])
                rho[f] = _pearson(_rank(fx), _rank(vals))
            entry[m] = {"mean": overall, **groups, "spearman_vs_baseline_clip": rho}
        out["variants"][v["name"]] = entry
    return out


def plot_audit(audit: dict, path: Path, metric: str = "lsd") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(audit["variants"])
    feats = audit["clip_features"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    cmap = plt.get_cmap("tab10")
    for col, key in enumerate(("family", "collection")):
        groups = list(audit["variants"][names[0]][metric][key])
        width = 0.8 / len(names)
        for j, n in enumerate(names):
            vals = [audit["variants"][n][metric][key][g]["ratio"] for g in groups]
            ax[col].bar(np.arange(len(groups)) + j * width, vals, width, color=cmap(j % 10), label=n)
        ax[col].axhline(1.0, color="k", lw=0.8)
        ax[col].set_xticks(np.arange(len(groups)) + 0.4)
        ax[col].set_xticklabels(
            [f"{g}\n(n={audit['variants'][names[0]][metric][key][g]['n']})" for g in groups], fontsize=7, rotation=30
        )
        ax[col].set_ylabel(f"paired {metric} / variant mean")
        ax[col].set_title(f"paired {metric} vs baseline per {key}")
    ax[0].legend(fontsize=7, ncol=2)
    res = json.loads((Path(audit["folder"]) / "results.json").read_text())
    for j, v in enumerate(x for x in res["variants"] if not x["is_baseline"]):
        clips = [c for c in v["clips"] if c.get("paired")]
        xs = [feats[c["id"]]["low_share"] for c in clips]
        ys = [c["paired"][metric] for c in clips]
        rho = audit["variants"][v["name"]][metric]["spearman_vs_baseline_clip"]["low_share"]
        ax[2].scatter(xs, ys, s=14, color=cmap(j % 10), label=f"{v['name']} (rho {rho:.2f})")
    ax[2].set_xlabel("baseline clip: share of mel power below 250 Hz")
    ax[2].set_ylabel(f"paired {metric}")
    ax[2].set_title("bass-heavy clips vs degradation (per clip)")
    ax[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="generator safetensors (float)")
    ap.add_argument("--bias-audit", type=Path, default=None, help="bench output folder (baseline = float model)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="PNG plot path")
    ap.add_argument("--json", type=Path, default=None, help="full per-layer report")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bias_audit:
        audit = bias_audit(args.bias_audit)
        if args.json:
            args.json.write_text(json.dumps(audit, indent=1))
        if args.out:
            plot_audit(audit, args.out)
        print(json.dumps({k: v for k, v in audit.items() if k != "clip_features"}, indent=1))
        return
    if not args.model:
        ap.error("--model is required (or --bias-audit)")
    report, aux = analyse(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.out:
        plot(report, aux, args.out)
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
