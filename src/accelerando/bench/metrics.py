"""The metrics the runner computes, by calling :mod:`accelerando.eval` (definitions in ``docs/metrics.md``).

- per clip, against the prompt: tempo (MIREX acc1/acc2 and error vs the requested bpm), Beat Consistency Score
  (clips of at least 10 s), key adherence (MIREX weighted score vs the requested key), Key Stability Index (clips of
  at least 8 s);
- per clip, against the baseline variant at the same prompt and seed: LSD, MR-STFT, mel distance, SI-SDR,
  complex-STFT error and the Transient Smearing Ratio;
- per variant, against reference audio: FAD, FAD-inf and per-clip FAD with the default embedder.

A metric that does not apply to a clip (too short, silent) is ``None`` in ``metrics`` and its reason is in
``skipped``; it never stops the run.
"""

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from accelerando.errors import UserError

__all__ = [
    "AUDIO_EXTENSIONS",
    "audio_files_under",
    "CLIP_METRICS",
    "HIGHER_IS_BETTER",
    "PAIRED_KEYS",
    "clip_metrics",
    "embed_files",
    "metric_versions",
    "paired_metrics",
    "reference_embeddings",
    "reference_files",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
CLIP_METRICS = (
    "tempo_bpm",
    "tempo_acc1",
    "tempo_acc2",
    "tempo_rel_error",
    "tempo_abs_rel_error",
    "tempo_factor",
    "pulse",
    "bcs",
    "bcs_agreement",
    "bcs_stability",
    "key_estimated",
    "key_adherence",
    "ksi",
)
PAIRED_KEYS = ("lsd", "mrstft", "mel_distance", "si_sdr", "complex_stft", "tsr", "tsr_attack_ratio", "tsr_highband_db")

# Direction of every summary number (True: higher is better); compare and the Pareto plot use it.
HIGHER_IS_BETTER = {
    "tempo_acc1": True,
    "tempo_acc2": True,
    "tempo_abs_rel_error_median": False,
    "pulse_mean": True,
    "bcs_mean": True,
    "key_adherence_mean": True,
    "ksi_mean": True,
    "fad": False,
    "fad_inf": False,
    "per_clip_fad_median": False,
    "lsd_mean": False,
    "mrstft_mean": False,
    "mel_distance_mean": False,
    "si_sdr_mean": True,
    "complex_stft_mean": False,
    "tsr_gmean": False,
    "wall_s_median": False,
    "rtf_median": True,
    "speedup_vs_baseline": True,
    "peak_rss_mb": False,
    "peak_rss_growth_mb": False,
    "cuda_max_mb": False,
    "flops_per_backbone_call": False,
    "flops_per_clip": False,
    "model_bytes": False,
    "params": False,
    # sparse-edit variants (results.json "edit", compared as edit.KEY)
    "edit.speedup_wall_median": True,
    "edit.speedup_wall_to_audio_median": True,
    "edit.macs_ratio_median": True,
    "edit.macs_ratio_edit_only_median": True,
    "edit.wall_sparse_s_median": False,
    "edit.wall_sparse_to_audio_s_median": False,
    "edit.lsd_sparse_vs_full_median": False,
    "edit.mrstft_sparse_vs_full_median": False,
    "edit.complex_stft_sparse_vs_full_median": False,
    "edit.lsd_relative_median": False,
    "edit.mrstft_relative_median": False,
    "edit.complex_stft_relative_median": False,
    "edit.seam_sparse_max": False,
    "edit.seams_above_threshold": False,
    "edit.seam_sparse_excess_max": False,
    "edit.seam_artifacts": False,
    "edit.cache_mb_median": False,
    "edit.disk_mb_median": False,
}


def metric_versions(embedder_version: str | None = None) -> dict:
    from accelerando.eval.efficiency import EFFICIENCY_VERSION
    from accelerando.eval.fad import FAD_INF_VERSION, FAD_VERSION, PER_CLIP_FAD_VERSION
    from accelerando.eval.key_stability import KSI_VERSION
    from accelerando.eval.paired import PAIRED_METRIC_VERSIONS
    from accelerando.eval.pulse import PULSE_VERSION
    from accelerando.eval.tempo import BCS_VERSION, TEMPO_VERSION
    from accelerando.eval.transients import TSR_VERSION

    out = {
        "tempo": TEMPO_VERSION,
        "pulse": PULSE_VERSION,
        "bcs": BCS_VERSION,
        "key_adherence": KSI_VERSION,
        "ksi": KSI_VERSION,
    }
    out |= {k: v for k, v in PAIRED_METRIC_VERSIONS.items()}
    out |= {"tsr": TSR_VERSION, "fad": FAD_VERSION, "fad_inf": FAD_INF_VERSION, "per_clip_fad": PER_CLIP_FAD_VERSION}
    out["efficiency"] = EFFICIENCY_VERSION
    if embedder_version:
        out["embedder"] = embedder_version
    return out


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def clip_metrics(y: np.ndarray, sr: int, bpm: float, key: str) -> tuple[dict, dict]:
    """Adherence and musicality of mono ``y`` [S] against the requested ``bpm`` and ``key``.

    Returns ``(metrics, skipped)``: every name of :data:`CLIP_METRICS` in ``metrics`` (None when it does not
    apply) and, for each None, the reason in ``skipped``.
    """
    from accelerando.eval.key import estimate_key
    from accelerando.eval.key_stability import key_adherence, key_stability_index
    from accelerando.eval.pulse import pulse_strength
    from accelerando.eval.tempo import beat_consistency, estimate_tempo, tempo_adherence

    m: dict = dict.fromkeys(CLIP_METRICS)
    skipped: dict = {}
    try:
        est = estimate_tempo(y, sr)
        adh = tempo_adherence(est, bpm)
        m |= {
            "tempo_bpm": est,
            "tempo_acc1": adh["acc1"],
            "tempo_acc2": adh["acc2"],
            "tempo_rel_error": adh["rel_error"],
            "tempo_abs_rel_error": abs(adh["rel_error"]),
            "tempo_factor": adh["factor"],
        }
    except ValueError as err:  # e.g. silence: the tracker finds no tempo
        skipped["tempo"] = _one_line(err)
    try:
        m["pulse"] = pulse_strength(y, sr, bpm)["strength"]
    except ValueError as err:
        skipped["pulse"] = _one_line(err)
    try:
        b = beat_consistency(y, sr)
        m |= {"bcs": b["bcs"], "bcs_agreement": b["agreement"], "bcs_stability": b["stability"]}
    except ValueError as err:
        skipped["bcs"] = _one_line(err)
    try:
        m["key_adherence"] = key_adherence(y, sr, key)
        m["key_estimated"] = " ".join(estimate_key(y, sr))
    except ValueError as err:
        skipped["key_adherence"] = _one_line(err)
    try:
        m["ksi"] = key_stability_index(y, sr)["ksi"]
    except ValueError as err:
        skipped["ksi"] = _one_line(err)
    return m, skipped


def paired_metrics(pred: np.ndarray, ref: np.ndarray, sr: int) -> tuple[dict, dict]:
    """Fidelity of ``pred`` against the baseline ``ref`` (mono, same prompt and seed)."""
    from accelerando.eval.paired import PAIRED_METRICS
    from accelerando.eval.transients import transient_smearing_ratio

    m: dict = dict.fromkeys(PAIRED_KEYS)
    skipped: dict = {}
    if pred.shape != ref.shape:
        n = min(len(pred), len(ref))
        skipped["length"] = f"pred has {len(pred)} samples and the baseline {len(ref)}; scored the first {n}"
        pred, ref = pred[:n], ref[:n]
    for name, fn in PAIRED_METRICS.items():
        try:
            m[name] = float(fn(pred, ref, sr))
        except ValueError as err:
            skipped[name] = _one_line(err)
    try:
        t = transient_smearing_ratio(pred, ref, sr)
        m |= {"tsr": t["tsr"], "tsr_attack_ratio": t["attack_ratio"], "tsr_highband_db": t["highband_loss_db"]}
        if not t["n_onsets"]:
            skipped["tsr"] = "the baseline clip has no detectable onsets"
    except ValueError as err:
        skipped["tsr"] = _one_line(err)
    return m, skipped


def audio_files_under(folder: Path) -> list[Path]:
    """Every audio file (by :data:`AUDIO_EXTENSIONS`) below ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def reference_files(ref_dir: Path | None) -> tuple[list[Path], dict]:
    """Reference audio for FAD: every audio file under ``ref_dir``, else the corpus's test-split mixes.

    Returns ``(files, info)``; ``files`` is empty when there is no reference, and ``info["note"]`` says why.
    """
    if ref_dir is not None:
        ref_dir = Path(ref_dir).expanduser()
        if not ref_dir.is_dir():
            raise UserError(f"--ref {ref_dir}: not a directory of reference audio files")
        files = audio_files_under(ref_dir)
        if not files:
            raise UserError(f"--ref {ref_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
        return files, {"source": "dir", "path": str(ref_dir), "n_files": len(files)}
    from accelerando.data.build import default_corpus_dir, read_manifest

    corpus = default_corpus_dir()
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        note = f"FAD skipped: no reference audio (no corpus manifest at {manifest}; build the corpus or pass --ref DIR)"
        return [], {"source": None, "path": str(corpus), "n_files": 0, "note": note}
    files = [corpus / r["path"] / "mix.flac" for r in read_manifest(corpus, "test")]
    files = [f for f in files if f.is_file()]
    if not files:
        note = f"FAD skipped: the corpus at {corpus} has no test-split mixes; pass --ref DIR"
        return [], {"source": None, "path": str(corpus), "n_files": 0, "note": note}
    return files, {"source": "corpus-test-split", "path": str(corpus), "n_files": len(files)}


def embed_files(files: list[Path], embedder, progress=None) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Embed each file (mono, at the embedder's rate): ``(all windows [N, dim], per-file arrays, seconds)``."""
    from accelerando.audio import load

    per_file, seconds = [], 0.0
    for path in files:
        wav, _ = load(path, sample_rate=embedder.sample_rate, mono=True)
        y = wav[0].numpy().astype(np.float64)
        seconds += len(y) / embedder.sample_rate
        per_file.append(embedder.embed(y))
        if progress is not None:
            progress.update(1)
    dim = getattr(embedder, "dim", 0)
    stacked = np.concatenate(per_file) if per_file else np.zeros((0, dim))
    return stacked, per_file, seconds


def reference_embeddings(files: list[Path], embedder, cache: Path, progress_factory=None) -> tuple[np.ndarray, float]:
    """Reference windows, cached in ``cache`` (.npz) keyed by the embedder version and the files' size and mtime."""
    from accelerando.bench.store import atomic_write_bytes

    ident = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps([embedder.version, ident]).encode()).hexdigest()
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    return z["emb"], float(z["seconds"])
        except (OSError, ValueError, KeyError):
            pass
    bar = progress_factory(total=len(files), desc="reference embeddings") if progress_factory else None
    try:
        emb, _, seconds = embed_files(files, embedder, bar)
    finally:
        if bar is not None:
            bar.close()
    buf = io.BytesIO()
    np.savez(buf, key=np.array(key), emb=emb, seconds=np.array(seconds))
    atomic_write_bytes(cache, buf.getvalue())
    return emb, seconds
