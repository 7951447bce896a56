"""`accelerando eval metrics`: score one audio file (against a reference, a requested tempo or key) as JSON.

Distribution metrics (``fad``, ``fad_inf``, ``per_clip_fad``, ``kad``) compare two sets: ``--pred`` and ``--ref``
are then each a file or a directory of audio files, embedded window by window with ``--embedder``.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from accelerando.errors import UserError

__all__ = ["register", "METRICS"]

PAIRED = ("lsd", "mrstft", "mel_distance", "si_sdr", "complex_stft", "transient_smearing")
SINGLE = ("tempo", "key", "beat_consistency", "key_stability", "structure", "pitch_drift")
DISTRIBUTION = ("fad", "fad_inf", "per_clip_fad", "kad")
METRICS = PAIRED + SINGLE + DISTRIBUTION
_DEFAULT = ("tempo", "key", "beat_consistency")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="music-aware metrics")
    esub = p.add_subparsers(dest="eval_command", metavar="ACTION", parser_class=type(p))
    m = esub.add_parser("metrics", help="score one audio file; prints one JSON object")
    m.add_argument("--pred", type=Path, required=True, help="audio file to score (or a directory: fad metrics)")
    m.add_argument("--ref", type=Path, default=None, help="reference audio (file, or a directory for fad metrics)")
    m.add_argument("--embedder", default=None, help="embedder for the fad metrics (default: melflow)")
    m.add_argument("--ref-label", type=Path, default=None, help="corpus label.json (sections for 'structure')")
    m.add_argument("--requested-bpm", type=float, default=None)
    m.add_argument("--requested-key", default=None, help='e.g. "D major"')
    m.add_argument("--metrics", default=",".join(_DEFAULT), help=f"comma-separated from: {', '.join(METRICS)}")
    m.add_argument("--json", action="store_true", help="(the output is always one JSON object)")
    m.set_defaults(func=_metrics)
    p.set_defaults(func=lambda args: p.print_help(sys.stderr) or 2)


def _clean(value):
    """JSON-safe: floats that are not finite become null, numpy scalars become python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metrics(args: argparse.Namespace) -> int:
    import numpy as np

    from accelerando.audio import load

    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    for n in names:
        if n not in METRICS:
            raise UserError(f"unknown metric {n!r}; choose from {', '.join(METRICS)}")
    dist = [n for n in names if n in DISTRIBUTION]
    if dist:
        if len(dist) != len(names):
            raise UserError(f"distribution metrics ({', '.join(dist)}) cannot be mixed with per-file metrics")
        print(json.dumps(_clean(_distribution(dist, args))))
        return 0
    if args.pred.is_dir():
        raise UserError(f"--pred {args.pred} is a directory; per-file metrics take one audio file")
    if any(n in PAIRED for n in names) and args.ref is None:
        raise UserError(f"metrics {', '.join(n for n in names if n in PAIRED)} compare against a reference: pass --ref")
    if "structure" in names and args.ref_label is None:
        raise UserError("metric 'structure' needs the reference sections: pass --ref-label label.json")
    wav, sr = load(args.pred, mono=True)
    y = wav[0].numpy().astype(np.float64)
    ref = None
    if args.ref is not None:
        rwav, _ = load(args.ref, sample_rate=sr, mono=True)
        ref = rwav[0].numpy().astype(np.float64)
        if len(ref) != len(y):
            n = min(len(ref), len(y))
            if abs(len(ref) - len(y)) > 0.01 * sr:
                raise UserError(f"--pred has {len(y)} samples and --ref {len(ref)} at {sr} Hz; align them first")
            y, ref = y[:n], ref[:n]
    try:
        result = _compute(names, y, ref, sr, args)
    except ValueError as err:
        raise UserError(" ".join(str(err).split())) from None
    print(json.dumps(_clean(result)))
    return 0


def _compute(names: list[str], y, ref, sr: int, args) -> dict:
    from accelerando.eval import key as key_mod
    from accelerando.eval import tempo as tempo_mod

    out: dict = {"file": str(args.pred), "sample_rate": sr, "seconds": len(y) / sr}
    out["tempo_bpm"] = tempo_mod.estimate_tempo(y, sr)
    out["key"] = " ".join(key_mod.estimate_key(y, sr))
    for name in names:
        if name in ("lsd", "mrstft", "mel_distance", "si_sdr", "complex_stft"):
            from accelerando.eval.paired import PAIRED_METRICS

            out[name] = PAIRED_METRICS[name](y, ref, sr)
        elif name == "transient_smearing":
            from accelerando.eval.transients import transient_smearing_ratio

            out[name] = transient_smearing_ratio(y, ref, sr)
        elif name == "tempo":
            if args.requested_bpm is None:
                continue  # the estimate alone is already in tempo_bpm
            out[name] = tempo_mod.tempo_adherence(out["tempo_bpm"], args.requested_bpm)
        elif name == "key":
            if args.requested_key is None:
                continue
            from accelerando.eval.key_stability import key_adherence

            out["key_adherence"] = key_adherence(y, sr, args.requested_key)
        elif name == "beat_consistency":
            out[name] = tempo_mod.beat_consistency(y, sr)
        elif name == "key_stability":
            from accelerando.eval.key_stability import key_stability_index

            out[name] = key_stability_index(y, sr)
        elif name == "structure":
            from accelerando.eval.structure import structure_accuracy

            sections = json.loads(Path(args.ref_label).read_text())["sections"]
            out[name] = structure_accuracy(y, sr, sections)
        elif name == "pitch_drift":
            from accelerando.eval.pitch import pitch_drift

            try:
                out[name] = pitch_drift(y, sr)
            except ImportError as err:
                raise UserError(f"pitch_drift needs torchcrepe: {err}") from None
    return out


def _audio_files(path: Path, flag: str) -> list[Path]:
    from accelerando.bench.metrics import AUDIO_EXTENSIONS, audio_files_under

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{flag} {path}: no such file or directory")
    files = audio_files_under(path)
    if not files:
        raise UserError(f"{flag} {path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    return files


def _distribution(names: list[str], args) -> dict:
    """FAD, FAD-inf, per-clip FAD and KAD of the --pred set against the --ref set."""
    from accelerando.bench.metrics import embed_files
    from accelerando.eval import fad as fad_mod
    from accelerando.eval.embeddings import DEFAULT_EMBEDDER, get_embedder

    if args.ref is None:
        raise UserError(f"metrics {', '.join(names)} compare two sets: pass --ref FILE|DIR")
    pred_files, ref_files = _audio_files(args.pred, "--pred"), _audio_files(args.ref, "--ref")
    try:
        emb = get_embedder(args.embedder or DEFAULT_EMBEDDER)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise UserError(" ".join(str(err).split())) from None
    pred, per_file, pred_s = embed_files(pred_files, emb)
    ref, _, ref_s = embed_files(ref_files, emb)
    out: dict = {
        "pred": str(args.pred),
        "ref": str(args.ref),
        "embedder": emb.version,
        "fad_version": fad_mod.FAD_VERSION,
        "n_pred_files": len(pred_files),
        "n_ref_files": len(ref_files),
        "pred_seconds": pred_s,
        "ref_seconds": ref_s,
    }
    try:
        for name in names:
            if name == "fad":
                out[name] = fad_mod.fad(pred, ref)
            elif name == "fad_inf":
                out[name] = fad_mod.fad_inf(pred, ref)
            elif name == "kad":
                out[name] = fad_mod.kad(pred, ref)
            else:
                out[name] = dict(zip((str(f) for f in pred_files), fad_mod.per_clip_fad(per_file, ref), strict=True))
    except ValueError as err:
        raise UserError(" ".join(str(err).split())) from None
    return out
