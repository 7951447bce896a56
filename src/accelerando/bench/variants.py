"""Benchmark variants: a model plus an ordered list of techniques applied to its pipeline.

Spec syntax (one variant; ``--variants`` takes several separated by commas)::

    VARIANT   = [NAME "="] MODEL ("+" TECHNIQUE)*
    MODEL     = "builtin" | path to a generator .safetensors file
    TECHNIQUE = KIND (":" ITEM)*
    ITEM      = VALUE                 the technique's main argument (at most one; e.g. the quantize preset)
              | KEY "=" VALUE         a keyword option; VALUE is parsed as int, float, true/false/none, else string

Examples: ``builtin``, ``runs/gen.safetensors``, ``w4=builtin+quantize:w4a8-svd``,
``builtin+quantize:w4a8-svd:rank=32+sparse:threshold=0.1``, ``sparse10=builtin+sparse-edit:0.1``. NAME (letters,
digits, ``_ . -``) names the output folder; without it the name is derived from the spec
(``builtin+quantize-w4a8-svd``). Model paths may not contain ``+`` or ``,``.

Techniques come from a registry: :func:`register_technique` ``(kind, fn)`` with ``fn(pipeline, options) ->
pipeline``. Packages can also register through the entry-point group ``accelerando.bench_techniques`` (each entry
point is a callable taking no arguments that calls :func:`register_technique`), or a module passed to
``accelerando bench run --plugin MODULE``. The runner never needs to change for a new technique.

Built in: ``quantize:PRESET``, ``compile-norms`` (a per-frame-norm U-Net's norms compiled, bit-identical),
``fuse-norms`` (a per-tensor quantized U-Net's norm -> SiLU -> quantize chains fused:
:mod:`accelerando.quant.norm_codes`) and ``sparse-edit:FRACTION`` (each clip becomes an edit, sparse against full
regeneration; it must come last: :mod:`accelerando.bench.edit`).
"""

import hashlib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from accelerando.errors import UserError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Technique",
    "TechniqueSpec",
    "Variant",
    "apply_techniques",
    "check_variant",
    "get_technique",
    "known_techniques",
    "load_pipeline",
    "load_variant",
    "parse_variant",
    "parse_variants",
    "register_technique",
    "unregister_technique",
]

ENTRY_POINT_GROUP = "accelerando.bench_techniques"
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_KIND_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

TechniqueFn = Callable[[object, dict], object]


@dataclass(frozen=True)
class Technique:
    kind: str
    fn: TechniqueFn
    arg: str = "arg"  # option name that a bare ITEM (``kind:VALUE``) is stored under
    check: Callable[[dict], None] | None = None  # cheap validation before any compute; raises UserError
    description: str = ""
    last: bool = False  # must be the variant's last technique (it changes what a clip is, e.g. sparse-edit)


@dataclass(frozen=True)
class TechniqueSpec:
    kind: str
    options: dict = field(default_factory=dict)
    main: str | None = field(default=None, compare=False)  # the option that was given as a bare value

    def label(self) -> str:
        parts = [self.kind] + [str(v) if k == self.main else f"{k}={v}" for k, v in self.options.items()]
        return "-".join(parts)

    def to_json(self) -> dict:
        return {"kind": self.kind, "options": dict(self.options)}


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    techniques: tuple[TechniqueSpec, ...] = ()
    spec: str = ""

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "spec": self.spec,
            "model": self.model,
            "techniques": [t.to_json() for t in self.techniques],
        }

    def fingerprint(self) -> dict:
        """What decides this variant's audio: the model file's identity and the techniques."""
        return {"model": _model_identity(self.model), "techniques": [t.to_json() for t in self.techniques]}


_REGISTRY: dict[str, Technique] = {}
_ENTRY_POINTS_LOADED = False


def register_technique(
    kind: str,
    fn: TechniqueFn,
    *,
    arg: str = "arg",
    check: Callable[[dict], None] | None = None,
    description: str = "",
    overwrite: bool = False,
    last: bool = False,
) -> None:
    """Register ``fn(pipeline, options: dict) -> pipeline`` as technique ``kind``.

    ``arg`` names the option that receives a bare value (``quantize:w4a8-svd`` -> ``{"preset": "w4a8-svd"}`` for
    ``arg="preset"``). ``check(options)`` runs when the variant is parsed, before any model is loaded; it raises
    :class:`UserError` for options that cannot work. ``fn`` may modify the pipeline in place or return a new one.
    ``last=True`` marks a technique that must come last in a variant, because it returns a task object rather
    than a pipeline (see "Task variants" in :mod:`accelerando.bench.runner`).
    """
    if not _KIND_RE.fullmatch(kind or ""):
        raise ValueError(f"technique kind {kind!r} must start with a letter and hold only letters, digits, _ or -")
    if kind in _REGISTRY and not overwrite:
        raise ValueError(f"technique {kind!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[kind] = Technique(kind, fn, arg, check, description, last)


def unregister_technique(kind: str) -> None:
    """Remove technique ``kind`` (tests, plugins that reload)."""
    _REGISTRY.pop(kind, None)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()()
        except Exception as err:  # a broken plugin must not break the benchmark for everyone else
            import warnings

            warnings.warn(f"bench technique plugin {ep.name!r} failed to load: {err}", stacklevel=2)


def known_techniques() -> dict[str, Technique]:
    _load_entry_points()
    return dict(_REGISTRY)


def get_technique(kind: str) -> Technique:
    techniques = known_techniques()
    if kind not in techniques:
        raise UserError(f"unknown technique {kind!r}; registered: {', '.join(sorted(techniques)) or 'none'}")
    return techniques[kind]


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _technique(text: str, spec: str) -> TechniqueSpec:
    kind, *items = text.split(":")
    if not _KIND_RE.fullmatch(kind):
        raise UserError(f"variant {spec!r}: bad technique {text!r}; write KIND[:VALUE][:KEY=VALUE...]")
    tech = get_technique(kind)
    options: dict = {}
    main = None
    for item in items:
        if not item:
            raise UserError(f"variant {spec!r}: empty option in technique {text!r}")
        if "=" in item:
            key, value = item.split("=", 1)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise UserError(f"variant {spec!r}: bad option name {key!r} in technique {text!r}")
        else:
            key, value, main = tech.arg, item, tech.arg
        if key in options:
            raise UserError(f"variant {spec!r}: option {key!r} given twice in technique {text!r}")
        options[key] = _value(value)
    if tech.check is not None:
        tech.check(dict(options))
    return TechniqueSpec(kind, options, main)


def _default_name(model: str, techniques: list[TechniqueSpec]) -> str:
    base = "builtin" if model == "builtin" else Path(model).stem
    name = "+".join([base] + [t.label() for t in techniques])
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def parse_variant(spec: str) -> Variant:
    """Parse one variant spec (see the module docstring); raise UserError naming the bad part."""
    text = spec.strip()
    if not text:
        raise UserError("empty variant spec; write e.g. builtin or NAME=MODEL+quantize:PRESET")
    name = None
    head, sep, rest = text.partition("=")
    if sep and _NAME_RE.fullmatch(head) and "+" not in head:
        name, text = head, rest
    elif sep and "+" not in head and "/" not in head and "\\" not in head:
        raise UserError(f"variant {spec!r}: bad name {head!r}; use letters, digits, '_', '.' or '-'")
    model, *techs = text.split("+")
    model = model.strip()
    if not model:
        raise UserError(f"variant {spec!r} names no model; write builtin or a .safetensors path")
    techniques = [_technique(t.strip(), spec) for t in techs]
    for t in techniques[:-1]:
        if get_technique(t.kind).last:
            raise UserError(f"variant {spec!r}: technique {t.kind!r} must be the last one; move it to the end")
    return Variant(name or _default_name(model, techniques), model, tuple(techniques), spec.strip())


def parse_variants(specs: str | list[str]) -> list[Variant]:
    """Comma-separated specs (or a list of such strings) -> variants with unique names; the first is the baseline."""
    items = [specs] if isinstance(specs, str) else list(specs)
    parts = [p for s in items for p in s.split(",") if p.strip()]
    if not parts:
        raise UserError("no variants given; e.g. --variants builtin,w4=builtin+quantize:w4a8-svd")
    variants = [parse_variant(p) for p in parts]
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"variant name {dup[0]!r} is used twice; give each variant a name with NAME=MODEL...")
    return variants


def check_variant(variant: Variant) -> None:
    """Fail fast, before any generation: the model must exist (builtin shipped, or the file present)."""
    if variant.model == "builtin":
        from accelerando.pretrained import BUILTIN_DIR

        if not (BUILTIN_DIR / "generator.safetensors").is_file():
            raise UserError(
                f"variant {variant.name!r}: no built-in generator is shipped in this version yet; "
                "pass a generator .safetensors path instead of builtin"
            )
        return
    path = Path(variant.model).expanduser()
    if not path.is_file():
        raise UserError(f"variant {variant.name!r}: model file not found: {variant.model}")


_HASHES: dict[tuple, str] = {}


def _model_identity(model: str) -> dict:
    """The model's sha256 (cached per path, size and mtime), or its name when it is not a file."""
    path = Path(model).expanduser()
    if model == "builtin":
        from accelerando.pretrained import BUILTIN_DIR

        path = BUILTIN_DIR / "generator.safetensors"
    if not path.is_file():
        return {"name": model}
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return {"name": model, "sha256": _HASHES[key], "bytes": st.st_size}


def load_pipeline(model: str):
    """The pipeline for a model id or path, through :func:`accelerando.load_pipeline`."""
    import accelerando

    return accelerando.load_pipeline(model)


def apply_techniques(pipeline, techniques, variant_name: str = "?"):
    """Apply each technique in order; a technique's ValueError/KeyError becomes a one-line UserError."""
    for spec in techniques:
        tech = get_technique(spec.kind)
        try:
            out = tech.fn(pipeline, dict(spec.options))
        except (ValueError, KeyError, TypeError) as err:
            msg = " ".join(str(err).split()) or type(err).__name__
            raise UserError(f"variant {variant_name!r}: technique {spec.label()!r} failed: {msg}") from None
        if out is None:
            raise UserError(f"variant {variant_name!r}: technique {spec.kind!r} returned no pipeline")
        pipeline = out
    return pipeline


def load_variant(variant: Variant):
    """Load the variant's model and apply its techniques."""
    return apply_techniques(load_pipeline(variant.model), variant.techniques, variant.name)


# -- built-in techniques ----------------------------------------------------------------------------------------


def _import_quantize_pipeline():
    try:
        module = importlib.import_module("accelerando.quant.presets")
        return module.quantize_pipeline
    except (ImportError, AttributeError) as err:
        raise UserError(
            f"technique 'quantize' is unavailable: accelerando.quant.presets.quantize_pipeline cannot be imported "
            f"({' '.join(str(err).split())})"
        ) from None


def _check_quantize(options: dict) -> None:
    if "preset" not in options:
        raise UserError("technique 'quantize' needs a preset, e.g. quantize:w4a8-svd")
    _import_quantize_pipeline()


def _quantize(pipeline, options: dict):
    options = dict(options)
    preset = options.pop("preset", None)
    if preset is None:
        raise UserError("technique 'quantize' needs a preset, e.g. quantize:w4a8-svd")
    return _import_quantize_pipeline()(pipeline, str(preset), **options)


register_technique(
    "quantize",
    _quantize,
    arg="preset",
    check=_check_quantize,
    description="accelerando.quant.presets.quantize_pipeline(pipeline, preset, **options)",
)


def _sparse_edit(pipeline, options: dict):
    from accelerando.bench.edit import sparse_edit_technique

    return sparse_edit_technique(pipeline, options)


def _check_sparse_edit(options: dict) -> None:
    from accelerando.bench.edit import check_options

    check_options(options)


register_technique(
    "sparse-edit",
    _sparse_edit,
    arg="fraction",
    check=_check_sparse_edit,
    last=True,
    description="each clip becomes an edit: a centred FRACTION (0-1) of it inpainted token-sparse from an edit "
    "session and by full regeneration, same seed; wall and MACs ratios, sparse-vs-full paired metrics, seams, "
    "outside-region identity (options halo=S, cache_update=auto|refresh|reuse, macs=true|false)",
)


def _no_options(kind: str) -> Callable[[dict], None]:
    """The ``check`` of a technique that takes no argument and no option: a ``UserError`` naming what was given."""

    def check(options: dict) -> None:
        if options:
            given = ", ".join(str(v) if k == "arg" else f"{k}={v}" for k, v in options.items())
            raise UserError(f"technique {kind!r} takes no arguments or options, got {given!r}")

    return check


def _compile_norms(pipeline, options: dict):
    from accelerando.kernels import compile_frame_norms

    if not compile_frame_norms(pipeline.model.dit):
        raise UserError("technique 'compile-norms' needs a U-Net with per-frame norms (norm='frame'), as the built-in")
    return pipeline


register_technique(
    "compile-norms",
    _compile_norms,
    check=_no_options("compile-norms"),
    description="the U-Net's per-frame GroupNorms compiled by inductor (accelerando.kernels.compile_frame_norms): "
    "bit-identical output; the variant's warm-up generation pays the compile",
)


def _fuse_norms(pipeline, options: dict):
    from accelerando.quant import norm_codes
    from accelerando.quant.api import has_per_tensor_layers

    dit = pipeline.model.dit
    if not has_per_tensor_layers(dit):
        raise UserError(
            "technique 'fuse-norms' needs per-tensor quantized convolutions: put it after "
            "quantize:PRESET:act_scale=tensor"
        )
    if not norm_codes.fuse_block_norms(dit):
        raise UserError("technique 'fuse-norms' needs a U-Net with per-frame norms (norm='frame'), as the built-in")
    return pipeline


register_technique(
    "fuse-norms",
    _fuse_norms,
    check=_no_options("fuse-norms"),
    description="a per-tensor quantized U-Net's blocks make their int8 convolutions' input codes with the fused "
    "norm + SiLU + quantize kernel (accelerando.quant.norm_codes.fuse_block_norms; apply after quantize:...)",
)
