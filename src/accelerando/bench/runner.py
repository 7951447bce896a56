"""`accelerando bench run`: generate a suite with each variant, score every clip, write results, report and plots.

Layout of ``OUT``::

    OUT/results.json             every number (schema ``accelerando.bench.results/1``)
    OUT/report.md                the Markdown report; plots in OUT/plots/*.png
    OUT/VARIANT/PROMPT_ID.wav    one clip per prompt (float WAV, what the pipeline returned)
    OUT/VARIANT/PROMPT_ID.json   its record (schema ``accelerando.bench.clip/1``): request, timings, metrics
    OUT/VARIANT/PROMPT_ID.NAME.wav  side audio of a task variant (sparse-edit: ``orig``, ``full``)
    OUT/VARIANT/variant.json     FLOPs per backbone call, model size
    OUT/ref_embeddings.npz       cached reference embeddings for FAD

Resuming: a clip whose WAV exists and whose record matches the request (prompt, controls, seed, generation
settings) and the variant (model sha256, techniques) is not generated again; metrics whose versions match are not
recomputed; paired metrics are recomputed only when the baseline clip changed (its audio sha1). Every file is
written atomically, so an interrupted run loses at most the clip in progress.

The first variant is the baseline of the paired metrics and of ``speedup_vs_baseline``. Variants run one after
another in this process; on a CPU compare their speed as that ratio, not as absolute times.

Task variants. A technique may return, instead of a pipeline, an object called like one whose output carries
``metadata["bench"]``: ``wall_s`` (the clip's wall time, when the call does more than produce the clip), ``audio``
(``{NAME: [C, S]}`` side audio, saved as ``PROMPT_ID.NAME.wav`` and listed in the record's ``side_audio``) and
``record`` (extra record sections). It may also have ``bench_info()``, which overrides fields of ``variant.json``.
The ``sparse-edit`` technique (:mod:`accelerando.bench.edit`) is one: its records hold an ``edit`` section that
the scoring phase completes with the edit metrics (:func:`accelerando.bench.edit.edit_metrics`).
"""

import gc
import hashlib
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from accelerando.bench import metrics as bm
from accelerando.bench.edit import edit_summary
from accelerando.bench.measure import BackboneProbe, PeakMemory, model_size
from accelerando.bench.prompts import BenchPrompt, PromptSet
from accelerando.bench.store import atomic_write_json, read_json
from accelerando.bench.summary import efficiency_summary, group_summary, quality_summary
from accelerando.bench.variants import Variant, check_variant, load_variant
from accelerando.modules.precision import use_bf16

__all__ = ["RESULTS_SCHEMA", "CLIP_SCHEMA", "BenchConfig", "run_bench", "machine_info"]

RESULTS_SCHEMA = "accelerando.bench.results/1"
CLIP_SCHEMA = "accelerando.bench.clip/1"
VARIANT_SCHEMA = "accelerando.bench.variant/1"


@dataclass
class BenchConfig:
    suite: PromptSet
    variants: list[Variant]
    out: Path
    ref: Path | None = None
    progress: bool = True
    command: str | None = None
    plots: bool = True
    warmup: bool = True  # one unsaved generation per variant before the timed clips (FLOPs are counted on it)
    interleave: bool = False  # all variants loaded at once, prompts going round them (see _generate_all)
    stats: dict = field(default_factory=dict)  # filled by the run: clips generated / reused, metrics computed


def _bar(enabled: bool):
    """A tqdm factory on stderr; bars show when ``enabled`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    def make(**kw):
        return tqdm(disable=None if enabled else True, file=sys.stderr, dynamic_ncols=True, leave=False, **kw)

    return make


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # two CPUs with the same model name ran the same generation 23x apart in bf16 (AVX2 vs AVX512-BF16)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_precision": "bf16" if use_bf16("cpu") else "float32",
    }
    return info


def _request(prompt: BenchPrompt, suite: PromptSet) -> dict:
    return prompt.request() | {k: suite.generation[k] for k in sorted(suite.generation)}


def _audio_sha1(audio: torch.Tensor) -> str:
    """sha1 of the float32 samples (not of the file: libsndfile stamps float WAVs with the time of writing)."""
    return hashlib.sha1(np.ascontiguousarray(audio.detach().cpu().float().numpy()).tobytes()).hexdigest()


def _wav_frames(path: Path) -> int | None:
    import soundfile as sf

    try:
        return sf.info(str(path)).frames
    except (RuntimeError, OSError, sf.LibsndfileError):
        return None


def _valid_record(rec, wav: Path, request: dict, fingerprint: dict) -> bool:
    return (
        isinstance(rec, dict)
        and rec.get("schema") == CLIP_SCHEMA
        and rec.get("request") == request
        and rec.get("variant") == fingerprint
        and wav.is_file()
        and _wav_frames(wav) == rec.get("num_samples")
        and all(
            isinstance(side, dict) and _wav_frames(wav.parent / str(side.get("wav"))) == side.get("num_samples")
            for side in (rec.get("side_audio") or {}).values()
        )
    )


def _generate(pipe, prompt: BenchPrompt, suite: PromptSet):
    g = suite.generation
    return pipe(
        prompt.prompt,
        bpm=prompt.bpm,
        key=prompt.key,
        meter=prompt.meter,
        instruments=prompt.instruments,
        duration=prompt.duration,
        steps=int(g["steps"]),
        cfg=float(g["cfg"]),
        sampler=str(g["sampler"]),
        generator=torch.Generator().manual_seed(prompt.seed),
    )


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Generation:
    """One variant's generation: which clips are missing, its pipeline while open, and its variant info."""

    def __init__(self, cfg: BenchConfig, variant: Variant) -> None:
        self.cfg, self.variant = cfg, variant
        self.vdir = cfg.out / variant.name
        self.fingerprint = variant.fingerprint()
        suite = cfg.suite
        self.todo = [
            p
            for p in suite.prompts
            if not _valid_record(
                read_json(self.vdir / f"{p.id}.json"), self.vdir / f"{p.id}.wav", _request(p, suite), self.fingerprint
            )
        ]
        info = read_json(self.vdir / "variant.json")
        self.info_ok = (
            isinstance(info, dict)
            and info.get("schema") == VARIANT_SCHEMA
            and info.get("variant") == self.fingerprint
            and info.get("flops_request") in [_request(p, suite) for p in suite.prompts]
        )
        self.info = info if self.info_ok else None
        self.pipe = self.probe = self.probed = None
        self.load_s = self.warmup_s = None
        self.mem = PeakMemory()
        cfg.stats.setdefault("generated", {})[variant.name] = len(self.todo)

    @property
    def needs_pipeline(self) -> bool:
        return bool(self.todo) or not self.info_ok

    def open(self) -> None:
        """Load the variant; warm up on the first prompt (unless disabled), probing its backbone calls."""
        suite = self.cfg.suite
        t0 = time.perf_counter()
        self.pipe = load_variant(self.variant)
        self.load_s = time.perf_counter() - t0
        self.probe = BackboneProbe(self.pipe)
        if self.cfg.warmup or not self.todo:
            self.probed = suite.prompts[0]
            with self.probe:
                t0 = time.perf_counter()
                _generate(self.pipe, self.probed, suite)
                _sync()
                self.warmup_s = time.perf_counter() - t0

    def generate(self, p: BenchPrompt) -> dict:
        """Generate, time and save one clip and its record (atomically, the WAV first)."""
        from accelerando.audio import save

        suite = self.cfg.suite
        probing = self.probed is None
        if probing:  # no warm-up: the first timed clip is probed
            self.probed = p
            self.probe.__enter__()
        self.mem.reset()
        _sync()
        t0 = time.perf_counter()
        out = _generate(self.pipe, p, suite)
        _sync()
        wall = call_wall = time.perf_counter() - t0
        memory = self.mem.read()
        if probing:
            self.probe.__exit__()
        bench = out.metadata.pop("bench", None) or {}  # a task variant's extras (see the module docstring)
        wall = float(bench.get("wall_s", wall))
        sr = int(out.sample_rate)
        side = {}
        for name, extra in (bench.get("audio") or {}).items():
            extra = extra.float().cpu()
            save(self.vdir / f"{p.id}.{name}.wav", extra, sr, subtype="FLOAT")
            side[name] = {"wav": f"{p.id}.{name}.wav", "num_samples": int(extra.shape[-1])}
        audio = out.audio[0].float().cpu()  # [C, S]
        save(self.vdir / f"{p.id}.wav", audio, sr, subtype="FLOAT")
        seconds = out.audio.shape[-1] / out.sample_rate
        timings = {
            "wall_s": wall,
            "rtf": seconds / wall,
            "first_audio_s": out.timings.get("first_audio_s"),
            "pipeline": {k: v for k, v in out.timings.items() if isinstance(v, int | float)},
        }
        if "wall_s" in bench:
            timings["call_wall_s"] = call_wall  # the whole call (a task variant does more than produce the clip)
        record = {
            "schema": CLIP_SCHEMA,
            "id": p.id,
            "request": _request(p, suite),
            "variant": self.fingerprint,
            "sample_rate": int(out.sample_rate),
            "num_samples": int(out.audio.shape[-1]),
            "channels": int(out.audio.shape[1]),
            "audio_sha1": _audio_sha1(audio),
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "timings": timings,
            "memory": memory,
        }
        if side:
            record["side_audio"] = side
        for key, value in (bench.get("record") or {}).items():
            if key in record:
                raise RuntimeError(f"variant {self.variant.name!r}: the pipeline's bench record may not set {key!r}")
            record[key] = value
        atomic_write_json(self.vdir / f"{p.id}.json", record)
        if not self.info_ok:
            self._write_info()
        return record

    def _write_info(self) -> None:
        flops = self.probe.count_flops()
        pipe = self.pipe
        params = list(getattr(pipe, "model", torch.nn.Linear(1, 1)).parameters())
        self.info = {
            "schema": VARIANT_SCHEMA,
            "variant": self.fingerprint,
            "flops_request": _request(self.probed, self.cfg.suite),
            "load_s": self.load_s,
            "warmup_s": self.warmup_s,
            "backbone_calls_per_clip": self.probe.calls if self.probe.available else None,
            "flops_per_backbone_call": flops["flops"] if flops else None,
            "backbone_call_shape": {"batch": flops["batch"], "frames": flops["frames"]} if flops else None,
            "flops_per_clip": round(flops["flops"] * self.probe.flop_rows) if flops else None,
            "flops_note": None if flops else "the pipeline has no pipeline.model.dit backbone to count",
            "device": str(params[0].device) if params else None,
            **model_size(pipe),
        }
        if callable(getattr(pipe, "bench_info", None)):  # a task variant describes its own work
            self.info.update(pipe.bench_info())
        atomic_write_json(self.vdir / "variant.json", self.info)
        self.info_ok = True

    def finish(self) -> None:
        """After a complete pass: make sure the variant info (FLOPs, size) is written."""
        if self.pipe is not None and not self.info_ok:
            self._write_info()

    def close(self) -> None:
        self.pipe = self.probe = None
        _release_memory()


def _release_memory() -> None:
    """Free the last pipeline before the next variant: garbage-collect, return freed heap to the OS (glibc)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _generate_all(cfg: BenchConfig) -> dict:
    """Generate every missing clip; return ``{variant name: variant info}``.

    Sequential (default): one variant after another, each loaded once. Interleaved: every variant is loaded at
    once and the prompts go round the variants (prompt 1 on A, B, C, then prompt 2, ...), so that a slow drift of
    a shared machine's load hits all variants alike; it needs the memory of all pipelines together.
    """
    gens = [_Generation(cfg, v) for v in cfg.variants]
    bar = _bar(cfg.progress)
    if cfg.interleave:
        active = [g for g in gens if g.needs_pipeline]
        try:
            for g in active:
                g.open()
            total = sum(len(g.todo) for g in active)
            with bar(total=total, desc="generate (interleaved)", unit="clip") as pbar:
                for p in cfg.suite.prompts:
                    for g in active:
                        if p in g.todo:
                            rec = g.generate(p)
                            pbar.set_postfix(variant=g.variant.name, rtf=f"{rec['timings']['rtf']:.2f}")
                            pbar.update(1)
            for g in active:
                g.finish()
        finally:
            for g in active:
                g.close()
    else:
        for g in gens:
            if not g.needs_pipeline:
                continue
            try:
                g.open()
                with bar(total=len(g.todo), desc=f"generate {g.variant.name}", unit="clip") as pbar:
                    for p in g.todo:
                        rec = g.generate(p)
                        pbar.set_postfix(rtf=f"{rec['timings']['rtf']:.2f}")
                        pbar.update(1)
                g.finish()
            finally:
                g.close()
    return {g.variant.name: g.info for g in gens}


def _load_mono(path: Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    from accelerando.audio import load

    wav, sr = load(path, sample_rate=sample_rate, mono=True)
    return wav[0].numpy().astype(np.float64), sr


def _score_clips(cfg: BenchConfig, variant: Variant, versions: dict) -> None:
    clip_versions = {k: versions[k] for k in ("tempo", "bcs", "key_adherence", "ksi")}
    vdir = cfg.out / variant.name
    todo = []
    for p in cfg.suite.prompts:
        rec = read_json(vdir / f"{p.id}.json")
        if rec.get("metric_versions") != clip_versions or "metrics" not in rec:
            todo.append((p, rec))
    cfg.stats.setdefault("scored", {})[variant.name] = len(todo)
    with _bar(cfg.progress)(total=len(todo), desc=f"metrics {variant.name}", unit="clip") as pbar:
        for p, rec in todo:
            y, sr = _load_mono(vdir / f"{p.id}.wav")
            rec["metrics"], rec["skipped"] = bm.clip_metrics(y, sr, p.bpm, p.key)
            rec["metric_versions"] = clip_versions
            atomic_write_json(vdir / f"{p.id}.json", rec)
            pbar.update(1)


def _score_paired(cfg: BenchConfig, variant: Variant, baseline: Variant, versions: dict) -> None:
    paired_versions = {k: versions[k] for k in bm.PAIRED_KEYS if k in versions}
    vdir, bdir = cfg.out / variant.name, cfg.out / baseline.name
    todo = []
    for p in cfg.suite.prompts:
        rec = read_json(vdir / f"{p.id}.json")
        base = read_json(bdir / f"{p.id}.json")
        key = {"baseline": baseline.name, "baseline_audio_sha1": base["audio_sha1"], "versions": paired_versions}
        if rec.get("paired_against") != key:
            todo.append((p, rec, key))
    cfg.stats.setdefault("paired", {})[variant.name] = len(todo)
    with _bar(cfg.progress)(total=len(todo), desc=f"paired {variant.name}", unit="clip") as pbar:
        for p, rec, key in todo:
            ref, sr = _load_mono(bdir / f"{p.id}.wav")
            pred, _ = _load_mono(vdir / f"{p.id}.wav", sample_rate=sr)
            rec["paired"], rec["paired_skipped"] = bm.paired_metrics(pred, ref, sr)
            rec["paired_against"] = key
            atomic_write_json(vdir / f"{p.id}.json", rec)
            pbar.update(1)


def _score_edits(cfg: BenchConfig, variant: Variant) -> None:
    """Edit metrics of a sparse-edit variant's clips (sparse vs full regeneration, seams, outside samples)."""
    from accelerando.bench.edit import edit_metric_versions, edit_metrics

    versions = edit_metric_versions()
    vdir = cfg.out / variant.name
    todo = []
    for p in cfg.suite.prompts:
        rec = read_json(vdir / f"{p.id}.json")
        edit = rec.get("edit")
        if isinstance(edit, dict) and (edit.get("metric_versions") != versions or "metrics" not in edit):
            todo.append((p, rec))
    if not todo:
        return
    cfg.stats.setdefault("edits_scored", {})[variant.name] = len(todo)
    with _bar(cfg.progress)(total=len(todo), desc=f"edits {variant.name}", unit="clip") as pbar:
        for p, rec in todo:
            edit, side = rec["edit"], rec.get("side_audio") or {}
            sparse, sr = _load_mono(vdir / f"{p.id}.wav")
            orig, _ = _load_mono(vdir / side["orig"]["wav"], sample_rate=sr)
            full, _ = _load_mono(vdir / side["full"]["wav"], sample_rate=sr)
            edit["metrics"], edit["skipped"] = edit_metrics(orig, full, sparse, sr, edit["region_s"])
            edit["metric_versions"] = versions
            atomic_write_json(vdir / f"{p.id}.json", rec)
            pbar.update(1)


def _distribution(cfg: BenchConfig, files: list[Path], info: dict, notes: list[str]) -> tuple[dict, dict, dict]:
    """FAD, FAD-inf and per-clip FAD of each variant against the reference: ``(per_variant, per_clip, info)``."""
    info = dict(info)
    per_variant: dict = {v.name: {"fad": None, "fad_inf": None, "fad_inf_r2": None} for v in cfg.variants}
    per_clip: dict = {v.name: {} for v in cfg.variants}
    if not files:
        notes.append(info["note"])
        return per_variant, per_clip, info
    from accelerando.eval.embeddings import get_embedder
    from accelerando.eval.fad import fad, fad_inf, per_clip_fad

    embedder = get_embedder()
    bar = _bar(cfg.progress)
    ref_emb, ref_seconds = bm.reference_embeddings(files, embedder, cfg.out / "ref_embeddings.npz", bar)
    info |= {"embedder": embedder.name, "embedder_version": embedder.version, "seconds": ref_seconds}
    info["windows"] = int(ref_emb.shape[0])
    for v in cfg.variants:
        paths = [cfg.out / v.name / f"{p.id}.wav" for p in cfg.suite.prompts]
        with bar(total=len(paths), desc=f"embed {v.name}", unit="clip") as pbar:
            emb, per_file, _ = bm.embed_files(paths, embedder, pbar)
        row = per_variant[v.name]
        row["windows"] = int(emb.shape[0])
        try:
            row["fad"] = fad(emb, ref_emb)
        except ValueError as err:
            notes.append(f"{v.name}: FAD skipped: {' '.join(str(err).split())}")
        if row["fad"] is not None:
            try:
                fi = fad_inf(emb, ref_emb)
                row["fad_inf"], row["fad_inf_r2"] = fi["fad_inf"], fi["r2"]
            except ValueError as err:
                notes.append(f"{v.name}: FAD-inf skipped: {' '.join(str(err).split())}")
        try:
            scores = per_clip_fad(per_file, ref_emb)
            per_clip[v.name] = {p.id: s for p, s in zip(cfg.suite.prompts, scores, strict=True)}
        except ValueError as err:
            notes.append(f"{v.name}: per-clip FAD skipped: {' '.join(str(err).split())}")
    return per_variant, per_clip, info


def _clip_entry(p: BenchPrompt, rec: dict, variant: Variant, per_clip_fad: dict) -> dict:
    return {
        "id": p.id,
        "clip_id": p.clip_id,
        "collection": p.collection,
        "family": p.family,
        "instruments": p.instruments,
        "bpm": p.bpm,
        "key": p.key,
        "meter": p.meter,
        "seed": p.seed,
        "duration": p.duration,
        "wav": f"{variant.name}/{p.id}.wav",
        "timings": {k: v for k, v in rec.get("timings", {}).items() if k != "pipeline"},
        "memory": rec.get("memory"),
        "metrics": rec.get("metrics"),
        "skipped": rec.get("skipped") or {},
        "paired": rec.get("paired"),
        "paired_skipped": rec.get("paired_skipped") or {},
        "per_clip_fad": per_clip_fad.get(p.id),
        "edit": rec.get("edit"),
        "side_audio": {k: f"{variant.name}/{v['wav']}" for k, v in (rec.get("side_audio") or {}).items()} or None,
    }


def run_bench(cfg: BenchConfig) -> dict:
    """Run the benchmark described by ``cfg``; return the results dict (also written to OUT/results.json)."""
    from accelerando import __version__
    from accelerando.bench.report import write_outputs

    if not cfg.variants:
        from accelerando.errors import UserError

        raise UserError("no variants to run")
    for v in cfg.variants:
        check_variant(v)
    ref_files, ref_info = bm.reference_files(cfg.ref)  # a bad --ref fails here, before any generation
    cfg.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    notes: list[str] = []
    infos = _generate_all(cfg)
    embedder_version = None
    try:
        from accelerando.eval.embeddings import DEFAULT_EMBEDDER, get_embedder

        embedder_version = get_embedder(DEFAULT_EMBEDDER).version
    except Exception:  # the version tag is informative only
        embedder_version = None
    versions = bm.metric_versions(embedder_version)
    baseline = cfg.variants[0]
    for v in cfg.variants:
        _score_clips(cfg, v, versions)
        _score_edits(cfg, v)
    for v in cfg.variants[1:]:
        _score_paired(cfg, v, baseline, versions)
    dist, per_clip, ref_info = _distribution(cfg, ref_files, ref_info, notes)

    entries = {}
    for v in cfg.variants:
        clips = []
        for p in cfg.suite.prompts:
            rec = read_json(cfg.out / v.name / f"{p.id}.json")
            clips.append(_clip_entry(p, rec, v, per_clip[v.name]))
        entries[v.name] = clips
    if any((c["timings"] or {}).get("first_audio_s") is None for clips in entries.values() for c in clips):
        notes.append(
            "time to first audio: not reported for non-streaming pipelines (the first audio is the whole clip, "
            "at wall_s)"
        )
    variants_out = []
    for v in cfg.variants:
        clips = entries[v.name]
        info = {k: val for k, val in infos[v.name].items() if k not in ("schema", "variant", "flops_request")}
        eff = efficiency_summary(clips, entries[baseline.name] if v is not baseline else None)
        if v is baseline:
            eff["speedup_vs_baseline"] = 1.0
        eff |= {
            k: info.get(k)
            for k in (
                "flops_per_backbone_call",
                "backbone_calls_per_clip",
                "flops_per_clip",
                "backbone_call_shape",
                "params",
                "model_bytes",
                "device",
                "load_s",
                "warmup_s",
            )
        }
        summary = quality_summary(clips) | dist[v.name]
        variants_out.append(
            v.to_json()
            | {
                "fingerprint": v.fingerprint(),
                "is_baseline": v is baseline,
                "generated_this_run": cfg.stats.get("generated", {}).get(v.name, 0),
                "summary": summary,
                "efficiency": eff,
                "edit": edit_summary(clips),
                "by_collection": group_summary(clips, "collection"),
                "by_family": group_summary(clips, "family"),
                "clips": clips,
            }
        )
    if any(v["edit"] for v in variants_out):
        from accelerando.bench.edit import edit_metric_versions

        versions = versions | {k: v for k, v in edit_metric_versions().items() if k not in versions}
    results = {
        "schema": RESULTS_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "accelerando": __version__,
        "command": cfg.command,
        "machine": machine_info(),
        "suite": {
            "id": cfg.suite.id,
            "name": cfg.suite.name,
            "version": cfg.suite.version,
            "sha256": cfg.suite.sha256,
            "n_prompts": len(cfg.suite.prompts),
            "durations": sorted({p.duration for p in cfg.suite.prompts}),
            "generation": cfg.suite.generation,
        },
        "baseline": baseline.name,
        "reference": ref_info,
        "metric_versions": versions,
        "run_seconds": time.perf_counter() - started,
        "notes": notes,
        "variants": variants_out,
    }
    write_outputs(results, cfg.out, plots=cfg.plots)
    return results
