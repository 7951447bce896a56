"""Versioned benchmark prompt sets ("suites"): fixed prompts, controls and seeds taken from test-split metadata.

A suite is a JSON file (schema ``accelerando.bench.prompts/1``) shipped as package data in ``bench/prompts/``,
named ``NAME-vVERSION.json``. ``--suite quick`` picks the highest version of ``quick``; ``--suite quick-v1`` pins
one; a path to a JSON file of the same schema also works. Suite files are written once by
``benchmarks/make_prompt_sets.py`` and never edited in place: a change makes a new version.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerando.errors import UserError

__all__ = [
    "PROMPTS_SCHEMA",
    "FAMILIES",
    "BenchPrompt",
    "PromptSet",
    "available_suites",
    "instrument_family",
    "load_suite",
    "select_prompts",
]

PROMPTS_SCHEMA = "accelerando.bench.prompts/1"
SUITE_DIR = Path(__file__).parent / "prompts"

# Corpus instrumentation -> instrument family (the per-family bars of the report).
FAMILIES = {
    "string_quartet": "strings",
    "fiddle": "strings",
    "piano": "keyboard",
    "organ": "keyboard",
    "harpsichord": "keyboard",
    "accordion": "keyboard",
    "guitar": "plucked",
    "harp": "plucked",
    "brass": "brass",
    "woodwinds": "woodwinds",
    "flute": "woodwinds",
    "choir": "voice",
}


def instrument_family(instrumentation: str | None) -> str:
    """The family of a corpus instrumentation name ("other" for names outside :data:`FAMILIES`)."""
    return FAMILIES.get(instrumentation or "", "other")


@dataclass(frozen=True)
class BenchPrompt:
    id: str  # unique within the suite, also the clip's file stem
    prompt: str
    bpm: float
    key: str
    meter: str
    instruments: str | None
    duration: float
    seed: int
    collection: str
    family: str
    clip_id: str  # the test-split corpus clip the controls and caption came from
    score_id: str = ""

    def request(self) -> dict:
        """What the pipeline is asked for: everything that changes the audio."""
        return {
            "prompt": self.prompt,
            "bpm": self.bpm,
            "key": self.key,
            "meter": self.meter,
            "instruments": self.instruments,
            "duration": self.duration,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class PromptSet:
    name: str
    version: int
    prompts: tuple[BenchPrompt, ...]
    generation: dict  # pipeline call settings shared by every prompt: steps, cfg, sampler
    description: str = ""
    source: dict | None = None
    sha256: str = ""  # of the suite file's bytes

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    def limit(self, n: int | None) -> "PromptSet":
        """The first ``n`` prompts (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 1:
            raise UserError(f"--limit {n}: use a positive number of prompts")
        return PromptSet(
            self.name, self.version, self.prompts[:n], self.generation, self.description, self.source, self.sha256
        )

    def to_json(self) -> dict:
        return {
            "schema": PROMPTS_SCHEMA,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "source": self.source or {},
            "generation": self.generation,
            "prompts": [asdict(p) for p in self.prompts],
        }


def available_suites() -> dict[str, Path]:
    """``{"quick-v1": path, ...}`` for the suites shipped with the package."""
    out = {}
    for path in sorted(SUITE_DIR.glob("*.json")):
        if re.fullmatch(r"[a-z0-9_]+-v\d+", path.stem):
            out[path.stem] = path
    return out


def _resolve(name: str) -> Path:
    suites = available_suites()
    if name in suites:
        return suites[name]
    versions = [(int(k.rsplit("-v", 1)[1]), p) for k, p in suites.items() if k.rsplit("-v", 1)[0] == name]
    if versions:
        return max(versions)[1]
    path = Path(name).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise UserError(f"suite file not found: {path}")
        return path
    names = sorted({k.rsplit("-v", 1)[0] for k in suites} | set(suites))
    raise UserError(f"unknown suite {name!r}; choose from {', '.join(names)} or pass a suite .json file")


def _prompt(entry: dict, where: str) -> BenchPrompt:
    fields = BenchPrompt.__dataclass_fields__
    missing = [k for k in fields if k not in entry and k != "score_id"]
    if missing:
        raise UserError(f"{where}: prompt {entry.get('id', '?')!r} lacks {', '.join(missing)}")
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise UserError(f"{where}: prompt {entry.get('id', '?')!r} has unknown fields {', '.join(unknown)}")
    try:
        return BenchPrompt(
            id=str(entry["id"]),
            prompt=str(entry["prompt"]),
            bpm=float(entry["bpm"]),
            key=str(entry["key"]),
            meter=str(entry["meter"]),
            instruments=entry["instruments"],
            duration=float(entry["duration"]),
            seed=int(entry["seed"]),
            collection=str(entry["collection"]),
            family=str(entry["family"]),
            clip_id=str(entry["clip_id"]),
            score_id=str(entry.get("score_id", "")),
        )
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: prompt {entry.get('id', '?')!r} is malformed: {err}") from None


def load_suite(name_or_path: str) -> PromptSet:
    """Load a shipped suite by name (``quick``, ``full``, ``quick-v1``) or a suite JSON file by path."""
    path = _resolve(str(name_or_path))
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UserError(f"suite file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("schema") != PROMPTS_SCHEMA:
        raise UserError(f"suite file {path} does not have schema {PROMPTS_SCHEMA!r}")
    prompts = tuple(_prompt(e, str(path)) for e in data.get("prompts", []))
    if not prompts:
        raise UserError(f"suite file {path} has no prompts")
    ids = [p.id for p in prompts]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UserError(f"suite file {path} repeats prompt ids {', '.join(dup)}")
    bad = [i for i in ids if not re.fullmatch(r"[A-Za-z0-9_.+-]+", i)]
    if bad:
        raise UserError(f"suite file {path}: prompt ids must be file-name safe, got {bad[0]!r}")
    generation = {"steps": 8, "cfg": 3.0, "sampler": "euler"} | dict(data.get("generation", {}))
    return PromptSet(
        name=str(data["name"]),
        version=int(data["version"]),
        prompts=prompts,
        generation=generation,
        description=str(data.get("description", "")),
        source=data.get("source"),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _order_key(row: dict, salt: str) -> str:
    return hashlib.sha1(f"{salt}:{row['clip_id']}".encode()).hexdigest()


def select_prompts(
    rows: list[dict], n: int, duration: float, *, salt: str, seed_base: int = 0, bpm_range=(40.0, 200.0)
) -> list[BenchPrompt]:
    """Pick ``n`` prompts from corpus manifest ``rows`` of the TEST split, spread over collections and scores.

    Deterministic: clips are ordered by a salted sha1 of their id; collections take turns (round robin, in name
    order), each collection giving a clip of a not-yet-used score, of the instrument family picked least so far;
    only when every score was used once does a second clip of a score get picked. Clips outside ``bpm_range`` are
    skipped (the generator only accepts that range). Each prompt is the clip's caption with its bpm, key, meter
    and instrumentation; seeds are ``seed_base + i``.
    """
    test = [r for r in rows if r.get("split") == "test" and bpm_range[0] <= float(r["bpm"]) <= bpm_range[1]]
    if len(test) < n:
        raise ValueError(f"only {len(test)} usable test-split clips, need {n}")
    by_coll: dict[str, list[dict]] = {}
    for r in sorted(test, key=lambda r: _order_key(r, salt)):
        by_coll.setdefault(r["collection"], []).append(r)
    picked: list[dict] = []
    used_clips: set[str] = set()
    used_scores: set[str] = set()
    family_count: dict[str, int] = {}
    for allow_repeat_score in (False, True):
        progress = True
        while len(picked) < n and progress:
            progress = False
            for coll in sorted(by_coll):
                if len(picked) >= n:
                    break
                eligible = [
                    r
                    for r in by_coll[coll]
                    if r["clip_id"] not in used_clips and (allow_repeat_score or r["score_id"] not in used_scores)
                ]
                if not eligible:
                    continue
                # the least-used instrument family first; ties keep the hashed order (min is stable)
                r = min(eligible, key=lambda r: family_count.get(instrument_family(r["instrumentation"]), 0))
                picked.append(r)
                used_clips.add(r["clip_id"])
                used_scores.add(r["score_id"])
                fam = instrument_family(r["instrumentation"])
                family_count[fam] = family_count.get(fam, 0) + 1
                progress = True
    out = []
    for i, r in enumerate(picked):
        out.append(
            BenchPrompt(
                id=f"{i:03d}-{re.sub(r'[^A-Za-z0-9_.+-]', '_', r['clip_id'])}",
                prompt=r["caption"],
                bpm=float(r["bpm"]),
                key=r["key"],
                meter=r["meter"],
                instruments=r["instrumentation"],
                duration=float(duration),
                seed=seed_base + i,
                collection=r["collection"],
                family=instrument_family(r["instrumentation"]),
                clip_id=r["clip_id"],
                score_id=r["score_id"],
            )
        )
    return out
