"""`accelerando data build`: render the music21 corpus into clips with exact labels, in parallel and resumably.

Layout of the output directory::

    build.json                 options that fix the audio format; a rerun must use the same ones
    clips/<collection>/<clip>/ mix.flac, stems/NN_<instrument>.flac, label.json (see clip.py)
    scores/<score>.<plan>.done the clip ids rendered for a score under one variant plan (resume marker)
    failures.jsonl             one line per score that failed to parse or render, with the error
    manifest.jsonl             one line per finished clip (rewritten at the end of every run)
    summary.json               hours per split, collection and instrumentation; throughput of the last run
"""

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerando.data.collections import DEFAULT_COLLECTIONS, parse_collections
from accelerando.data.instrumentations import INSTRUMENTATIONS, parse_instrumentations
from accelerando.data.scores import ScoreRef, list_scores

__all__ = ["BuildConfig", "BuildResult", "build_corpus", "write_manifest", "default_corpus_dir"]

_FORMAT_KEYS = ("sample_rate", "channels", "max_seconds", "tail_seconds", "target_lufs", "soundfont_name")


def default_corpus_dir() -> Path:
    from accelerando.paths import cache_dir

    return cache_dir("corpus")


@dataclass
class BuildConfig:
    out: Path = field(default_factory=default_corpus_dir)
    collections: tuple[str, ...] = DEFAULT_COLLECTIONS
    instrumentations: tuple[str, ...] = tuple(INSTRUMENTATIONS)
    sample_rate: int = 24000  # Hz
    channels: int = 1  # 1 mono, 2 stereo (parts panned across the field)
    variants: int = 2  # renderings per score, each with its own instrumentation, tempo and transposition
    limit: int | None = 250  # scores per collection (a deterministic sample); None renders all
    max_seconds: float | None = 60.0  # cut longer scores at the last bar line before this
    tail_seconds: float = 1.0  # release and reverb after the last note
    target_lufs: float = -20.0  # loudness of every mix (reduced where the peak limit requires)
    workers: int = 2  # worker processes
    soundfont: str | None = None  # None: $ACCELERANDO_SOUNDFONT or the installed Debian GM soundfont
    splits: tuple[str, ...] | None = None  # render only scores of these splits (e.g. ("test",)); None: all

    def __post_init__(self):
        self.out = Path(self.out).expanduser()
        self.collections = parse_collections(",".join(self.collections))
        self.instrumentations = parse_instrumentations(",".join(self.instrumentations))
        if not 8000 <= self.sample_rate <= 96000:
            raise ValueError(f"sample_rate={self.sample_rate} is outside 8000..96000 Hz")
        if self.channels not in (1, 2):
            raise ValueError(f"channels={self.channels}; use 1 (mono) or 2 (stereo)")
        if self.variants < 1:
            raise ValueError(f"variants={self.variants}; render at least 1 variant per score")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit}; give a positive number of scores per collection")
        if self.max_seconds is not None and self.max_seconds < 5:
            raise ValueError(f"max_seconds={self.max_seconds}; clips shorter than 5 s hold too little music")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}; use at least 1 worker")
        if self.splits is not None:
            from accelerando.data.split import SPLITS

            self.splits = tuple(self.splits.split(",")) if isinstance(self.splits, str) else tuple(self.splits)
            bad = [s for s in self.splits if s not in SPLITS]
            if bad or not self.splits:
                raise ValueError(
                    f"splits={','.join(self.splits)!r}; use a comma-separated subset of {', '.join(SPLITS)}"
                )

    @property
    def soundfont_name(self) -> str:
        return os.path.basename(self.soundfont or "")

    def plan_key(self) -> str:
        """Hash of the options that decide which clips a score gets."""
        text = json.dumps([self.variants, list(self.instrumentations), _format(self)], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def _format(cfg: BuildConfig) -> dict:
    return {k: getattr(cfg, k) for k in _FORMAT_KEYS}


@dataclass
class BuildResult:
    scores_total: int
    scores_skipped: int  # already finished in an earlier run
    scores_failed: int
    clips_written: int
    audio_seconds: float  # rendered in this run
    wall_seconds: float
    summary: dict


# --- worker side ------------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(cfg: BuildConfig) -> None:
    from accelerando.data.render import Renderer

    _WORKER["cfg"] = cfg
    _WORKER["renderer"] = Renderer(cfg.soundfont, cfg.sample_rate)


def _marker(cfg: BuildConfig, ref: ScoreRef) -> Path:
    from accelerando.data.clip import _slug

    return cfg.out / "scores" / f"{_slug(ref.score_id)}.{cfg.plan_key()}.done"


def _render_score(ref: ScoreRef) -> dict:
    """Render every variant of one score; never raises (errors come back in the result)."""
    from accelerando.data.clip import clip_id, plan_variants, write_clip
    from accelerando.data.scores import load_score

    cfg: BuildConfig = _WORKER["cfg"]
    result = {"score_id": ref.score_id, "collection": ref.collection, "clips": [], "seconds": 0.0, "error": None}
    try:
        score = load_score(ref)
        for v in plan_variants(score, cfg.instrumentations, cfg.variants):
            cid = clip_id(ref.score_id, v)
            if (cfg.out / "clips" / ref.collection / cid / "label.json").exists():
                result["clips"].append(cid)
                continue
            label = write_clip(
                score,
                v,
                _WORKER["renderer"],
                cfg.out,
                channels=cfg.channels,
                max_seconds=cfg.max_seconds,
                tail_seconds=cfg.tail_seconds,
                target_lufs=cfg.target_lufs,
            )
            result["clips"].append(cid)
            result["seconds"] += label["duration"]
        marker = _marker(cfg, ref)
        tmp = marker.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(result["clips"]))
        os.replace(tmp, marker)
    except Exception as err:  # one bad score must never stop the build
        msg = " ".join(f"{type(err).__name__}: {err}".split())
        result["error"] = msg[:500]
    return result


# --- main side --------------------------------------------------------------------------------------------------


def _prepare_out(cfg: BuildConfig) -> None:
    """Create the output tree, refuse a format change, and remove half-written clips left by an interrupted run."""
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        probe = cfg.out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"output directory {str(cfg.out)!r} is not writable ({err.strerror}); pass --out DIR to a writable place"
        ) from None
    (cfg.out / "scores").mkdir(exist_ok=True)
    spec = cfg.out / "build.json"
    fmt = _format(cfg)
    if spec.exists():
        old = json.loads(spec.read_text()).get("format", {})
        diff = [k for k in _FORMAT_KEYS if k in old and old[k] != fmt[k]]
        if diff:
            k = diff[0]
            raise ValueError(
                f"{cfg.out} was built with {k}={old[k]!r}, not {fmt[k]!r}; use the same option or a new --out"
            )
    else:
        spec.write_text(json.dumps({"format": fmt}, indent=1))
    clips = cfg.out / "clips"
    if clips.exists():
        for coll in clips.iterdir():
            for d in coll.glob(".tmp-*"):
                shutil.rmtree(d, ignore_errors=True)


def read_manifest(corpus: str | Path, split: str | None = None) -> list[dict]:
    """Rows of ``corpus/manifest.jsonl`` (one dict per clip; see :func:`write_manifest`), only ``split``'s if given."""
    lines = (Path(corpus) / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return rows if split is None else [r for r in rows if r["split"] == split]


def write_manifest(out: Path) -> dict:
    """Rewrite ``manifest.jsonl`` and ``summary.json`` from the finished clips in ``out``; return the summary."""
    rows = []
    for label_path in sorted((out / "clips").glob("*/*/label.json")):
        lab = json.loads(label_path.read_text())
        rows.append(
            {
                "clip_id": lab["clip_id"],
                "score_id": lab["score_id"],
                "collection": lab["collection"],
                "split": lab["split"],
                "instrumentation": lab["instrumentation"],
                "bpm": lab["bpm"],
                "key": lab["key"]["name"],
                "meter": lab["meter"],
                "duration": lab["duration"],
                "path": str(label_path.parent.relative_to(out)),
                "caption": lab["caption"],
            }
        )
    tmp = out / "manifest.jsonl.tmp"
    with open(tmp, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    os.replace(tmp, out / "manifest.jsonl")
    hours: dict[str, dict[str, float]] = {"split": defaultdict(float), "collection": defaultdict(float)}
    hours["instrumentation"] = defaultdict(float)
    scores: dict[str, set] = defaultdict(set)
    for r in rows:
        for k in hours:
            hours[k][r[k]] += r["duration"] / 3600
        scores[r["split"]].add(r["score_id"])
    summary = {
        "clips": len(rows),
        "hours": sum(r["duration"] for r in rows) / 3600,
        "hours_by": {k: dict(sorted(v.items())) for k, v in hours.items()},
        "scores_by_split": {k: len(v) for k, v in sorted(scores.items())},
        "disk_bytes": sum(f.stat().st_size for f in (out / "clips").rglob("*.flac")) if rows else 0,
    }
    return summary


def build_corpus(cfg: BuildConfig, progress: bool = True) -> BuildResult:
    """Render the corpus described by ``cfg``; finished scores are skipped, failures are logged and counted."""
    from tqdm import tqdm

    from accelerando.data.render import check_fluidsynth, find_soundfont

    cfg.soundfont = find_soundfont(cfg.soundfont)
    check_fluidsynth()
    _prepare_out(cfg)
    refs = list_scores(cfg.collections, cfg.limit)
    if cfg.splits is not None:  # the split is a function of the score id: the same scores a full build gives them
        from accelerando.data.split import split_for

        refs = [r for r in refs if split_for(r.score_id) in cfg.splits]
    todo = [r for r in refs if not _marker(cfg, r).exists()]
    t0 = time.perf_counter()
    clips = failed = 0
    seconds = 0.0
    bar = tqdm(total=len(todo), unit="score", desc="render", disable=not progress, mininterval=1.0, smoothing=0.05)
    try:
        with open(cfg.out / "failures.jsonl", "a") as failures:
            for res in _run(cfg, todo):
                bar.update(1)
                seconds += res["seconds"]
                if res["error"]:
                    failed += 1
                    failures.write(json.dumps({"score_id": res["score_id"], "error": res["error"]}) + "\n")
                    failures.flush()
                else:
                    clips += len(res["clips"])
                bar.set_postfix(audio_h=f"{seconds / 3600:.2f}", failed=failed, refresh=False)
    finally:
        bar.close()
        summary = write_manifest(cfg.out)
        wall = time.perf_counter() - t0
        summary["last_run"] = {
            "scores": len(todo),
            "failed": failed,
            "audio_seconds": seconds,
            "wall_seconds": wall,
            "audio_seconds_per_wall_second": seconds / wall if wall > 0 else 0.0,
            "workers": cfg.workers,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        }
        tmp = cfg.out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, cfg.out / "summary.json")
    return BuildResult(len(refs), len(refs) - len(todo), failed, clips, seconds, wall, summary)


def _run(cfg: BuildConfig, todo: list[ScoreRef]):
    if cfg.workers == 1 or len(todo) <= 1:
        _init_worker(cfg)
        for ref in todo:
            yield _render_score(ref)
        return
    ctx = mp.get_context("spawn")  # no fork: the parent may hold torch/OpenMP threads
    pool = ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,))
    try:
        yield from pool.imap_unordered(_render_score, todo, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
