"""Write the benchmark prompt sets (suites) from TEST-split metadata of the local corpus.

    .venv/bin/python benchmarks/make_prompt_sets.py [--corpus DIR] [--version 1] [--force]

Reads ``manifest.jsonl`` of the corpus (default ``~/.cache/accelerando/corpus``), keeps test-split clips only (the
split is a pure function of the score id, see ``accelerando.data.split``), and writes
``src/accelerando/bench/prompts/{quick,full}-vN.json``:

- quick: 16 prompts x 10 s, seeds 0-15;
- full: 64 prompts x 20 s, seeds 1000-1063.

Selection is deterministic (``accelerando.bench.prompts.select_prompts``): collections take turns, distinct scores
first. An existing suite file is never overwritten unless ``--force``: a changed suite must get a new version.
"""

import argparse
import json
import sys
from pathlib import Path

from accelerando.bench.prompts import PROMPTS_SCHEMA, SUITE_DIR, select_prompts
from accelerando.data.build import default_corpus_dir
from accelerando.data.split import SPLIT_VERSION

SUITES = {
    "quick": {"n": 16, "duration": 10.0, "seed_base": 0, "description": "16 test-split prompts x 10 s"},
    "full": {"n": 64, "duration": 20.0, "seed_base": 1000, "description": "64 test-split prompts x 20 s"},
}
GENERATION = {"steps": 8, "cfg": 3.0, "sampler": "euler"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=default_corpus_dir())
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--out", type=Path, default=SUITE_DIR)
    ap.add_argument("--force", action="store_true", help="overwrite existing suite files")
    args = ap.parse_args(argv)
    manifest = args.corpus / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    n_test = sum(r["split"] == "test" for r in rows)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cfg in SUITES.items():
        path = args.out / f"{name}-v{args.version}.json"
        if path.exists() and not args.force:
            print(f"{path} exists; keeping it (a changed suite needs a new --version)", file=sys.stderr)
            continue
        prompts = select_prompts(
            rows, cfg["n"], cfg["duration"], salt=f"{name}-v{args.version}", seed_base=cfg["seed_base"]
        )
        data = {
            "schema": PROMPTS_SCHEMA,
            "name": name,
            "version": args.version,
            "description": cfg["description"],
            "source": {
                "corpus_manifest_rows": len(rows),
                "test_clips": n_test,
                "split": "test",
                "split_version": SPLIT_VERSION,
                "selection": f"accelerando.bench.prompts.select_prompts(salt={name}-v{args.version!r})",
            },
            "generation": GENERATION,
            "prompts": [p.__dict__ for p in prompts],
        }
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        colls = sorted({p.collection for p in prompts})
        fams = sorted({p.family for p in prompts})
        print(f"wrote {path}: {len(prompts)} prompts, collections {colls}, families {fams}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
