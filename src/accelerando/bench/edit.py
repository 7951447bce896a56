"""The ``sparse-edit`` technique of the benchmark runner: each clip is an edit, sparse against full regeneration.

``--variants builtin,sparse10=builtin+sparse-edit:0.1`` benchmarks token-sparse edits from an edit session
(:mod:`accelerando.cache.edit`, issue 6). For every suite prompt the variant

1. generates the clip as the pipeline does (the prompt's seed), recording an edit session in a temporary folder
   (the original clip: ``PROMPT_ID.orig.wav``);
2. inpaints a centred region covering ``fraction`` of the clip with seed ``prompt seed + 1`` twice: by full
   regeneration (the pipeline with ``init_audio`` and ``regions``: ``PROMPT_ID.full.wav``) and sparsely from the
   session (``PROMPT_ID.wav``, the variant's output, scored by the suite's metrics like any clip);
3. times both (wall seconds; for the sparse edit also the time to audio, before the session update), and counts
   the MACs of both in separate untimed passes (``torch.utils.flop_counter``, FLOPs / 2; option ``macs=false`` skips
   them): the sparse count with the configured session update and, unless that is ``reuse``, also with ``reuse``
   (the edit alone).

The scoring phase of the runner (:func:`edit_metrics`, version :data:`EDIT_VERSION`) then compares the sparse edit
with the full regeneration on the edited stretch (the region plus :data:`CONTEXT_S` on each side): LSD, MR-STFT and
complex-STFT error from :mod:`accelerando.eval.paired`, next to the same metrics of the full regeneration against
the original (how much the edit changed: the scale that the approximation error is small against); the seam score
(:mod:`accelerando.eval.seams`) at both region boundaries of the sparse and of the full edit; and whether every
sample outside the region equals the original exactly.

Options (``sparse-edit:FRACTION[:KEY=VALUE...]``): ``halo`` (seconds recomputed on each side; default the
backbone's: 0.5 s for a DiT, 0 for a per-frame U-Net), ``cache_update`` (``auto``, ``refresh`` or ``reuse``;
auto: refresh for a DiT, reuse for a U-Net), ``macs`` (true/false). The variant's clip timing (``wall_s``, the
speed against the baseline) is the sparse edit's total wall time: what producing its output clip costs given the
session.

This module imports torch only inside functions: the technique's option check runs when a variant is parsed.
"""

import math
import time

__all__ = [
    "CONTEXT_S",
    "EDIT_VERSION",
    "SparseEditBench",
    "check_options",
    "edit_metric_versions",
    "edit_metrics",
    "edit_summary",
    "region_of",
]

EDIT_VERSION = "bench-edit-v1"
CONTEXT_S = 0.25  # seconds on each side of the region that the paired edit metrics also cover
_OPTIONS = {"fraction", "halo", "cache_update", "macs"}
_SESSION_SEED_OFFSET = 1  # edits use the prompt's seed + 1, so that the region really changes


def _number(options: dict, key: str):
    v = options.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def check_options(options: dict) -> None:
    """Validate ``sparse-edit`` options; raise a one-line :class:`UserError` naming the bad one."""
    from accelerando.errors import UserError

    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise UserError(
            f"technique 'sparse-edit' has no option {unknown[0]!r}; use sparse-edit:FRACTION[:halo=S]"
            "[:cache_update=auto|refresh|reuse][:macs=true|false]"
        )
    if "fraction" not in options:
        raise UserError("technique 'sparse-edit' needs the edited fraction of each clip, e.g. sparse-edit:0.1")
    f = _number(options, "fraction")
    if f is None or not 0 < f < 1:
        raise UserError(
            f"technique 'sparse-edit': edit fraction {options['fraction']!r} must be a number between 0 and 1 "
            "(exclusive), e.g. sparse-edit:0.1 for 10% of each clip"
        )
    if "halo" in options:
        h = _number(options, "halo")
        if h is None or not (h >= 0 and math.isfinite(h)):
            raise UserError(f"technique 'sparse-edit': halo={options['halo']!r}; use seconds >= 0")
    if options.get("cache_update", "auto") not in ("auto", "refresh", "reuse"):
        raise UserError(
            f"technique 'sparse-edit': cache_update={options['cache_update']!r}; use auto, refresh or reuse"
        )
    if not isinstance(options.get("macs", True), bool):
        raise UserError(f"technique 'sparse-edit': macs={options['macs']!r}; use true or false")


def region_of(duration: float, fraction: float) -> tuple[float, float]:
    """The centred region (seconds) covering ``fraction`` of ``duration``."""
    length = fraction * duration
    a = (duration - length) / 2
    return a, a + length


def _macs(fn) -> tuple[int, object]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return int(counter.get_total_flops()) // 2, out


def _du(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class SparseEditBench:
    """A pipeline stand-in for the runner: ``__call__`` takes the pipeline's arguments and returns the sparse edit.

    ``model``, ``codec`` and every other attribute are the wrapped pipeline's (model size in the report).
    The output's ``metadata["bench"]`` tells the runner the clip's wall time, the side audio to save (``orig``,
    ``full``) and the record's ``edit`` section (see :mod:`accelerando.bench.runner`).
    """

    def __init__(self, pipeline, options: dict):
        from accelerando.cache.edit import SparseEditConfig, apply_sparse_edit

        if isinstance(pipeline, SparseEditBench):
            raise ValueError("sparse-edit is given twice in one variant")
        if getattr(getattr(pipeline, "model", None), "dit", None) is None or getattr(pipeline, "codec", None) is None:
            raise ValueError("sparse edits need a pipeline with a backbone (pipeline.model.dit) and a codec")
        self.options = dict(options)
        self.fraction = float(options["fraction"])
        self.count_macs = bool(options.get("macs", True))
        self.config = SparseEditConfig(
            halo_s=float(options["halo"]) if "halo" in options else None,
            cache_update=str(options.get("cache_update", "auto")),
        )
        self.pipe = apply_sparse_edit(pipeline, self.config)
        self.editor = self.pipe.sparse_edit
        self._last_macs: dict | None = None

    def __getattr__(self, name):  # model, codec, frame_rate, ...: the wrapped pipeline's
        if name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def bench_info(self) -> dict:
        """Variant info for ``variant.json``: the backbone probe does not describe this workflow."""
        macs = self._last_macs or {}
        return {
            "backbone_calls_per_clip": None,
            "flops_per_backbone_call": None,
            "backbone_call_shape": None,
            "flops_per_clip": None if macs.get("sparse") is None else 2 * macs["sparse"],
            "flops_note": "sparse-edit: flops_per_clip is the sparse edit's (session update included) on the last "
            "clip; per-clip MACs of full and sparse edits are in each clip's edit section",
        }

    def __call__(self, prompt: str, *, generator=None, **kwargs):
        import shutil
        import tempfile
        from pathlib import Path

        import torch

        self.editor.config = self.config
        seed = int(generator.initial_seed()) if generator is not None else 0
        edit_seed = seed + _SESSION_SEED_OFFSET
        sr = self.pipe.codec.sample_rate
        with tempfile.TemporaryDirectory(prefix="accelerando-bench-edit-") as tmp:
            session = Path(tmp) / "session"
            t0 = time.perf_counter()
            gen = self.editor.generate(session, prompt, seed=seed, **kwargs)
            t_record = time.perf_counter() - t0
            orig = self.editor.load(session).audio  # [C, S], what the edits start from
            duration = orig.shape[-1] / sr
            region = region_of(duration, self.fraction)
            settings = {k: v for k, v in kwargs.items() if k != "duration"}
            cache_mb, disk_mb = gen.metadata["session"]["cache_mb"], _du(session) / 2**20

            def full():
                return self.pipe(
                    prompt,
                    **settings,
                    duration=duration,
                    generator=torch.Generator().manual_seed(edit_seed),
                    init_audio=orig,
                    init_sample_rate=sr,
                    regions=[region],
                )

            def sparse(folder):
                return self.editor.edit(folder, regions=[region], seed=edit_seed)

            macs = {"full": None, "sparse": None, "sparse_edit_only": None}
            if self.count_macs:  # untimed passes, each sparse one on a fresh copy of the session
                macs["full"], _ = _macs(full)
                work = Path(tmp) / "work"
                shutil.copytree(session, work)
                macs["sparse"], _ = _macs(lambda: sparse(work))
                if self.editor.cache_update == "reuse":
                    macs["sparse_edit_only"] = macs["sparse"]
                else:
                    shutil.rmtree(work)
                    shutil.copytree(session, work)
                    self.editor.config = type(self.config)(halo_s=self.config.halo_s, cache_update="reuse")
                    try:
                        macs["sparse_edit_only"], _ = _macs(lambda: sparse(work))
                    finally:
                        self.editor.config = self.config
                self._last_macs = macs
            t0 = time.perf_counter()
            ref = full()
            t_full = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = sparse(session)
            t_sparse = time.perf_counter() - t0
            st = out.metadata["sparse_edit"]
        a, b = region
        edit = {
            "version": EDIT_VERSION,
            "fraction": self.fraction,
            "region_s": [a, b],
            "duration_s": duration,
            "seed": seed,
            "edit_seed": edit_seed,
            "halo_s": self.editor.halo_s,
            "cache_update": st["cache_update"],
            "wall_full_s": t_full,
            "wall_sparse_s": t_sparse,
            "wall_sparse_to_audio_s": st["edit_s"],
            "wall_record_s": t_record,
            "speedup_wall": t_full / t_sparse,
            "speedup_wall_to_audio": t_full / st["edit_s"],
            "macs_full": macs["full"],
            "macs_sparse": macs["sparse"],
            "macs_sparse_edit_only": macs["sparse_edit_only"],
            "macs_ratio": None if not macs["sparse"] else macs["full"] / macs["sparse"],
            "macs_ratio_edit_only": None if not macs["sparse_edit_only"] else macs["full"] / macs["sparse_edit_only"],
            "tokens_recomputed": st["tokens_recomputed"],
            "tokens": st["tokens"],
            "sparse_evals": st["sparse_evals"],
            "dense_evals": st["dense_evals"],
            "decode_fraction": st["decode_fraction"],
            "cache_mb": cache_mb,
            "disk_mb": disk_mb,
        }
        out.metadata["bench"] = {
            "wall_s": t_sparse,
            "audio": {"orig": orig, "full": ref.audio[0]},
            "record": {"edit": edit},
        }
        return out


def sparse_edit_technique(pipeline, options: dict):
    """The ``sparse-edit`` technique: wrap the pipeline in a :class:`SparseEditBench`."""
    return SparseEditBench(pipeline, options)


def edit_metric_versions() -> dict:
    """Version tags of everything :func:`edit_metrics` computes; a change rescores the edit sections."""
    from accelerando.eval.paired import PAIRED_METRIC_VERSIONS
    from accelerando.eval.seams import SEAM_VERSION

    return {"edit": EDIT_VERSION, "seam": SEAM_VERSION} | {
        k: PAIRED_METRIC_VERSIONS[k] for k in ("lsd", "mrstft", "complex_stft")
    }


def edit_metrics(orig, full, sparse, sr: int, region) -> tuple[dict, dict]:
    """Edit figures of mono ``sparse`` against ``full`` (and ``full`` against ``orig``), all [S] numpy arrays.

    Returns ``(metrics, skipped)`` like :func:`accelerando.bench.metrics.paired_metrics`.
    """
    import numpy as np

    from accelerando.eval.paired import PAIRED_METRICS
    from accelerando.eval.seams import seam_scores

    a, b = float(region[0]), float(region[1])
    n = min(len(orig), len(full), len(sparse))
    ia, ib = int(a * sr), int(b * sr)  # the pipeline's splice keeps [0, ia) and [ib, n) exactly
    m: dict = {}
    skipped: dict = {}
    m["outside_identical"] = bool(
        len(sparse) == len(orig) and np.array_equal(sparse[:ia], orig[:ia]) and np.array_equal(sparse[ib:], orig[ib:])
    )
    m["outside_identical_full"] = bool(
        len(full) == len(orig) and np.array_equal(full[:ia], orig[:ia]) and np.array_equal(full[ib:], orig[ib:])
    )
    m["outside_max_abs_diff"] = float(
        max(np.abs(sparse[:ia] - orig[:ia]).max(initial=0.0), np.abs(sparse[ib:n] - orig[ib:n]).max(initial=0.0))
    )
    lo, hi = max(0, int((a - CONTEXT_S) * sr)), min(n, int(math.ceil((b + CONTEXT_S) * sr)))
    m["stretch_s"] = [lo / sr, hi / sr]
    for name in ("lsd", "mrstft", "complex_stft"):
        fn = PAIRED_METRICS[name]
        for key, pred, ref in ((f"{name}_sparse_vs_full", sparse, full), (f"{name}_full_vs_orig", full, orig)):
            try:
                m[key] = float(fn(pred[lo:hi], ref[lo:hi], sr))
            except ValueError as err:
                m[key] = None
                skipped[key] = " ".join(str(err).split())
        rel = m[f"{name}_sparse_vs_full"], m[f"{name}_full_vs_orig"]
        m[f"{name}_relative"] = rel[0] / rel[1] if None not in rel and rel[1] > 0 else None
    for key, y in (("seam_sparse", sparse), ("seam_full", full)):
        try:
            s = seam_scores(y, sr, [a, b], reference=orig)
            m[key], m[f"{key}_above_threshold"] = s["max_ratio"], s["n_above_threshold"]
            m[f"{key}_excess"], m[f"{key}_artifacts"] = s["max_excess"], s["n_artifacts"]
        except ValueError as err:
            m[key] = m[f"{key}_above_threshold"] = m[f"{key}_excess"] = m[f"{key}_artifacts"] = None
            skipped[key] = " ".join(str(err).split())
    return m, skipped


def _median(xs):
    import statistics

    xs = [float(x) for x in xs if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)]
    return statistics.median(xs) if xs else None


def edit_summary(clips: list[dict]) -> dict | None:
    """Medians over a variant's clips of its edit figures; None when the variant does not edit."""
    edits = [c["edit"] for c in clips if c.get("edit")]
    if not edits:
        return None
    metrics = [e.get("metrics") or {} for e in edits]
    out = {"n_edits": len(edits), "fraction": edits[0].get("fraction"), "cache_update": edits[0].get("cache_update")}
    for key in (
        "speedup_wall",
        "speedup_wall_to_audio",
        "macs_ratio",
        "macs_ratio_edit_only",
        "wall_full_s",
        "wall_sparse_s",
        "wall_sparse_to_audio_s",
        "tokens_recomputed",
        "tokens",
        "cache_mb",
        "disk_mb",
    ):
        out[f"{key}_median"] = _median(e.get(key) for e in edits)
    for key in (
        "lsd_sparse_vs_full",
        "lsd_full_vs_orig",
        "lsd_relative",
        "mrstft_sparse_vs_full",
        "mrstft_full_vs_orig",
        "mrstft_relative",
        "complex_stft_sparse_vs_full",
        "complex_stft_full_vs_orig",
        "complex_stft_relative",
    ):
        out[f"{key}_median"] = _median(m.get(key) for m in metrics)
    out["seam_sparse_max"] = max((m["seam_sparse"] for m in metrics if m.get("seam_sparse") is not None), default=None)
    out["seam_full_max"] = max((m["seam_full"] for m in metrics if m.get("seam_full") is not None), default=None)
    out["seams_above_threshold"] = sum(m.get("seam_sparse_above_threshold") or 0 for m in metrics)
    for kind in ("sparse", "full"):
        vals = [m[f"seam_{kind}_excess"] for m in metrics if m.get(f"seam_{kind}_excess") is not None]
        out[f"seam_{kind}_excess_max"] = max(vals, default=None)
    out["seam_artifacts"] = sum(m.get("seam_sparse_artifacts") or 0 for m in metrics)
    scored = [m for m in metrics if "outside_identical" in m]
    out["outside_identical"] = all(m["outside_identical"] for m in scored) if scored else None
    out["n_outside_identical"] = sum(bool(m.get("outside_identical")) for m in scored)
    return out
