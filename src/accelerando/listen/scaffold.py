"""Write a test file from directories of audio: one MUSHRA trial (and optional ABX comparisons) per clip name."""

import os
import re
import uuid
from pathlib import Path

from accelerando.errors import UserError

from .config import ANCHORS, RESERVED_NAMES, VERSION, load_config

__all__ = ["AUDIO_EXTENSIONS", "scaffold_config", "write_config"]

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"})


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _trial_name(stem: str) -> str:
    return (re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("_.-") or "clip")[:64]


def scaffold_config(
    reference: Path, conditions: dict[str, Path], out: Path, abx_repeats: int = 0, title: str = "Listening test"
) -> tuple[dict, list[str]]:
    """The YAML data of a test over the clips found under the same file name in ``reference`` and every condition
    directory, with paths relative to ``out``'s directory, and the clip names skipped because a condition lacks
    them. ``abx_repeats > 0`` adds an ABX comparison of the reference against each condition for every clip."""
    import soundfile as sf

    if not reference.is_dir():
        raise UserError(f"--reference: not a directory: {reference}")
    if not conditions:
        raise UserError("give at least one --condition NAME=DIR")
    for name, folder in conditions.items():
        if name in RESERVED_NAMES:
            raise UserError(f"--condition {name}=...: the name {name!r} is reserved; pick another")
        if not folder.is_dir():
            raise UserError(f"--condition {name}={folder}: not a directory")
    base = out.resolve().parent
    trials, comparisons, skipped, rates = [], [], [], []
    for ref in sorted(p for p in reference.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS):
        found = {name: folder / ref.name for name, folder in conditions.items()}
        if not all(p.is_file() for p in found.values()):
            skipped.append(ref.name)
            continue
        try:
            rates.append(sf.info(str(ref)).samplerate)
        except Exception as err:  # libsndfile raises several types for unreadable files
            raise UserError(f"cannot read audio file {ref}: {' '.join(str(err).split())}") from None
        clip = _trial_name(ref.stem)
        if any(t["name"] == clip for t in trials):
            clip = f"{clip}{ref.suffix.lower().replace('.', '_')}"[:64]
        trials.append(
            {"name": clip, "reference": _rel(ref, base), "conditions": {n: _rel(p, base) for n, p in found.items()}}
        )
        if abx_repeats > 0:
            for n, p in found.items():
                comparisons.append({"name": f"{clip}-{n}"[:64], "a": _rel(ref, base), "b": _rel(p, base)})
    if not trials:
        raise UserError(f"no audio file in {reference} is present under the same name in every condition directory")
    anchors = min(rates) > 2 * max(ANCHORS.values())  # the 7 kHz anchor needs a sample rate above 14 kHz
    data: dict = {"version": VERSION, "title": title, "seed": 0, "mushra": {"anchors": anchors, "trials": trials}}
    if comparisons:
        data["abx"] = {"repeats": abx_repeats, "comparisons": comparisons}
    return data, skipped


def write_config(data: dict, out: Path) -> Path:
    """Write ``data`` as YAML to ``out`` atomically, then load it back to validate it."""
    import yaml

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    load_config(out)
    return out
