"""The calibration prompt set shipped with the package: train-split captions and controls from the local corpus.

``calib_prompts.json`` (package data, next to this file) is built once by :func:`build_calibration_prompts` from
the corpus manifest (``~/.cache/accelerando/corpus/manifest.jsonl``) and committed, because CI has no corpus. Only
rows with ``split == "train"`` are eligible; the test and valid splits are never used for calibration. Rows are
picked round-robin over (collection, instrumentation) cells in a seeded order, one clip per score, so the set spans
every collection and instrumentation before it repeats a cell.

Rebuild (the corpus must exist)::

    .venv/bin/python -m accelerando.quant.calib_prompts [--corpus DIR] [--n 64] [--seed 0]
"""

import argparse
import json
import random
from pathlib import Path

__all__ = ["CALIB_PROMPTS_PATH", "CALIB_PROMPTS_VERSION", "load_calibration_prompts", "build_calibration_prompts"]

CALIB_PROMPTS_PATH = Path(__file__).with_name("calib_prompts.json")
CALIB_PROMPTS_VERSION = 1
_FIELDS = ("clip_id", "score_id", "collection", "split", "instrumentation", "bpm", "key", "meter", "caption")


def build_calibration_prompts(corpus: str | Path, n: int = 64, seed: int = 0) -> dict:
    """Pick ``n`` train-split rows of ``corpus``/manifest.jsonl -> the JSON document shipped as package data."""
    from accelerando.conditioning.controls import BPM_RANGE
    from accelerando.data.build import read_manifest

    train = [r for r in read_manifest(corpus, "train") if BPM_RANGE[0] <= float(r["bpm"]) <= BPM_RANGE[1]]
    if not train:
        raise ValueError(f"{corpus}/manifest.jsonl has no train-split rows")
    rng = random.Random(seed)
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(train, key=lambda r: r["clip_id"]):
        cells.setdefault((r["collection"], r["instrumentation"]), []).append(r)
    order = sorted(cells)
    rng.shuffle(order)
    for rs in cells.values():
        rng.shuffle(rs)
    picked, scores = [], set()
    while len(picked) < n and any(cells.values()):
        for cell in order:
            while cells[cell] and cells[cell][-1]["score_id"] in scores:
                cells[cell].pop()
            if cells[cell] and len(picked) < n:
                r = cells[cell].pop()
                scores.add(r["score_id"])
                picked.append({k: r[k] for k in _FIELDS})
    return {
        "version": CALIB_PROMPTS_VERSION,
        "source": "train split of the accelerando corpus manifest (never test or valid)",
        "seed": seed,
        "prompts": picked,
    }


def load_calibration_prompts(n: int | None = None) -> list[dict]:
    """The first ``n`` (all when None) shipped calibration prompts: dicts with ``caption``, ``bpm``, ``key``,
    ``meter``, ``instrumentation`` and their provenance (``clip_id``, ``score_id``, ``collection``, ``split``)."""
    doc = json.loads(CALIB_PROMPTS_PATH.read_text())
    if doc.get("version") != CALIB_PROMPTS_VERSION:
        raise ValueError(f"{CALIB_PROMPTS_PATH} has version {doc.get('version')!r}, expected {CALIB_PROMPTS_VERSION}")
    prompts = doc["prompts"]
    if any(p["split"] != "train" for p in prompts):
        raise ValueError(f"{CALIB_PROMPTS_PATH} holds non-train prompts; rebuild it with build_calibration_prompts")
    return prompts if n is None else prompts[:n]


def _main(argv: list[str] | None = None) -> None:
    from accelerando.data.build import default_corpus_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    doc = build_calibration_prompts(args.corpus or default_corpus_dir(), args.n, args.seed)
    tmp = CALIB_PROMPTS_PATH.with_name(f".{CALIB_PROMPTS_PATH.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(CALIB_PROMPTS_PATH)
    print(f"wrote {len(doc['prompts'])} prompts to {CALIB_PROMPTS_PATH}")


if __name__ == "__main__":
    _main()
