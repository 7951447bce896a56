"""The YAML definition of a listening test, read into dataclasses and validated up front.

A test file looks like this (paths are relative to the YAML file)::

    version: 1
    title: "int4 against full precision"
    instructions: "Rate each sound against the reference."   # optional
    seed: 0                                                  # base seed for every per-listener shuffle
    mushra:
      anchors: true            # add the BS.1534-3 low (3.5 kHz) and mid-range (7 kHz) low-pass anchors
      trials:
        - name: clip01
          reference: ref/clip01.wav
          conditions: {int8: int8/clip01.wav, int4: int4/clip01.wav}
    abx:
      repeats: 4               # ABX trials per comparison and listener (a comparison may override it)
      comparisons:
        - {name: clip01-int4, a: ref/clip01.wav, b: int4/clip01.wav}

Every problem raises :class:`accelerando.errors.UserError` with one line that names the file, the field (as a
path such as ``mushra.trials[1].conditions.int4``) and the bad value.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from accelerando.errors import UserError

__all__ = [
    "ANCHORS",
    "HIDDEN_REFERENCE",
    "MID_ANCHOR",
    "RESERVED_NAMES",
    "VERSION",
    "AbxComparison",
    "ListenConfig",
    "MushraTrial",
    "load_config",
    "parse_config",
]

VERSION = 1
HIDDEN_REFERENCE = "reference"  # condition name of the hidden reference in every MUSHRA trial
ANCHORS = {"anchor_3.5k": 3500.0, "anchor_7k": 7000.0}  # condition name -> low-pass cutoff in Hz (BS.1534-3)
MID_ANCHOR = "anchor_7k"  # the mid-range anchor that BS.1534-3 post-screening looks at
RESERVED_NAMES = frozenset({HIDDEN_REFERENCE, *ANCHORS})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass
class MushraTrial:
    name: str  # unique among the MUSHRA trials; the key the answers are stored under
    reference: Path  # the open reference, also played hidden among the conditions
    conditions: dict[str, Path]  # condition name -> audio file, the systems under test


@dataclass
class AbxComparison:
    name: str  # unique among the ABX comparisons
    a: Path  # audio file played as A
    b: Path  # audio file played as B
    repeats: int = 4  # ABX trials per listener; X is drawn afresh for each


@dataclass
class ListenConfig:
    path: Path  # the YAML file; anchors are cached and the default database lives next to it
    title: str = "Listening test"
    instructions: str = ""
    seed: int = 0  # base seed for the per-listener trial order, condition order and X assignment
    anchors: bool = True  # add the 3.5 kHz and 7 kHz low-pass anchors to every MUSHRA trial
    mushra: list[MushraTrial] = field(default_factory=list)
    abx: list[AbxComparison] = field(default_factory=list)

    @property
    def condition_names(self) -> list[str]:
        """The conditions under test, in the order of the first MUSHRA trial (no reference, no anchors)."""
        return list(self.mushra[0].conditions) if self.mushra else []

    @property
    def all_condition_names(self) -> list[str]:
        """Everything a MUSHRA slider can rate: the conditions, the hidden reference and the anchors."""
        names = [*self.condition_names, HIDDEN_REFERENCE]
        return names + list(ANCHORS) if self.anchors else names

    def default_db_path(self) -> Path:
        """``test.yaml`` -> ``test.answers.sqlite`` in the same directory."""
        return self.path.with_name(f"{self.path.stem}.answers.sqlite")


def _fail(where: str, msg: str) -> UserError:
    return UserError(f"{where}: {msg}")


def _mapping(value, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping, got {type(value).__name__} {value!r}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(where, f"missing required key {missing[0]!r}")
    return value


def _name(value, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(where, f"bad name {value!r}; use 1-64 letters, digits, '_', '.', '-', starting with a letter/digit")
    return value


def _audio(value, where: str, base: Path) -> Path:
    import soundfile as sf

    if not isinstance(value, str) or not value:
        raise _fail(where, f"expected an audio file path, got {value!r}")
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        raise _fail(where, f"audio file not found: {value!r} (looked at {path})")
    try:
        sf.info(str(path))
    except Exception as err:  # libsndfile raises several types for unreadable files
        raise _fail(where, f"cannot read audio file {value!r}: {' '.join(str(err).split())}") from None
    return path.resolve()


def _int(value, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(where, f"expected an integer >= {low}, got {value!r}")
    return value


def _str(value, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _mushra(section, where: str, base: Path, anchors_default: bool) -> tuple[bool, list[MushraTrial]]:
    section = _mapping(section, where, {"anchors", "trials"}, {"trials"})
    anchors = section.get("anchors", anchors_default)
    if not isinstance(anchors, bool):
        raise _fail(f"{where}.anchors", f"expected true or false, got {anchors!r}")
    raw = section["trials"]
    if not isinstance(raw, list) or not raw:
        raise _fail(f"{where}.trials", f"expected a non-empty list of trials, got {raw!r}")
    trials: list[MushraTrial] = []
    for i, item in enumerate(raw):
        at = f"{where}.trials[{i}]"
        item = _mapping(item, at, {"name", "reference", "conditions"}, {"name", "reference", "conditions"})
        name = _name(item["name"], f"{at}.name")
        if any(t.name == name for t in trials):
            raise _fail(f"{at}.name", f"duplicate trial name {name!r}")
        conds = item["conditions"]
        if not isinstance(conds, dict) or not conds:
            raise _fail(f"{at}.conditions", f"expected a non-empty mapping name -> audio file, got {conds!r}")
        parsed: dict[str, Path] = {}
        for cname, cpath in conds.items():
            _name(cname, f"{at}.conditions.{cname}")
            if cname in RESERVED_NAMES:
                raise _fail(f"{at}.conditions.{cname}", f"the name {cname!r} is reserved; rename the condition")
            parsed[cname] = _audio(cpath, f"{at}.conditions.{cname}", base)
        if trials and set(parsed) != set(trials[0].conditions):
            raise _fail(
                f"{at}.conditions",
                f"names {sorted(parsed)} differ from those of trial {trials[0].name!r} {sorted(trials[0].conditions)}",
            )
        trials.append(MushraTrial(name, _audio(item["reference"], f"{at}.reference", base), parsed))
    return anchors, trials


def _abx(section, where: str, base: Path) -> list[AbxComparison]:
    section = _mapping(section, where, {"repeats", "comparisons"}, {"comparisons"})
    default_repeats = _int(section.get("repeats", 4), f"{where}.repeats", 1)
    raw = section["comparisons"]
    if not isinstance(raw, list) or not raw:
        raise _fail(f"{where}.comparisons", f"expected a non-empty list of comparisons, got {raw!r}")
    out: list[AbxComparison] = []
    for i, item in enumerate(raw):
        at = f"{where}.comparisons[{i}]"
        item = _mapping(item, at, {"name", "a", "b", "repeats"}, {"name", "a", "b"})
        name = _name(item["name"], f"{at}.name")
        if any(c.name == name for c in out):
            raise _fail(f"{at}.name", f"duplicate comparison name {name!r}")
        a, b = _audio(item["a"], f"{at}.a", base), _audio(item["b"], f"{at}.b", base)
        repeats = _int(item.get("repeats", default_repeats), f"{at}.repeats", 1)
        out.append(AbxComparison(name, a, b, repeats))
    return out


def parse_config(data, path: str | Path) -> ListenConfig:
    """Validate the parsed YAML ``data`` of the test file at ``path`` (relative audio paths resolve against it)."""
    path = Path(path).resolve()
    data = _mapping(data, str(path), {"version", "title", "instructions", "seed", "mushra", "abx"})
    version = data.get("version", VERSION)
    if version != VERSION:
        raise _fail(f"{path}: version", f"unsupported version {version!r}; this accelerando reads version {VERSION}")
    cfg = ListenConfig(path=path)
    cfg.title = _str(data.get("title", cfg.title), f"{path}: title")
    cfg.instructions = _str(data.get("instructions", ""), f"{path}: instructions")
    cfg.seed = _int(data.get("seed", 0), f"{path}: seed", 0)
    if "mushra" in data:
        cfg.anchors, cfg.mushra = _mushra(data["mushra"], f"{path}: mushra", path.parent, cfg.anchors)
    if "abx" in data:
        cfg.abx = _abx(data["abx"], f"{path}: abx", path.parent)
    if not cfg.mushra and not cfg.abx:
        raise _fail(str(path), "the test has no trials; add a 'mushra' and/or an 'abx' section")
    return cfg


def load_config(path: str | Path) -> ListenConfig:
    """Read and validate a test file; see the module docstring for the format."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"listening-test config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    return parse_config(data, path)
