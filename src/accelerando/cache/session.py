"""Edit sessions on disk: what a clip's later edits need, stored atomically and checked on every load.

Layout of a session directory ``DIR``::

    DIR/session.json            {"format": "accelerando-edit-session", "version": 2, "current": "v000003"}
    DIR/v000003/manifest.json   identity, generation settings, shapes, per-file sha256 and size, edit history
    DIR/v000003/state.safetensors   audio [C, S] f32, known [T, D] f32
    DIR/v000003/cache.safetensors   FAMILY.E for each cache family and each cached model evaluation E:
        cache_kind "kv" (DiT):            k.E / v.E [depth, B, H, N, Dh] bf16, the self-attention keys and values
        cache_kind "norm_stats" (U-Net):  mean.E / m2.E [norms, B, G, K] float32 and count.E [norms, K] int64, the
                                          GroupNorm statistics per chunk of frames
        cache_kind "none" (U-Net with per-frame norms): no tensors (windowed edits are exact without a cache)

Tensors are safetensors only (never pickle). A write goes to a fresh hidden directory, is fsynced, renamed to the
next version name and only then made current by atomically replacing ``session.json``; the previous version is
deleted afterwards. An interrupted write therefore leaves the previous version current and intact.

A load checks the format and version, the model and codec identity (sha256 of their weights), every file's size and
sha256, and every tensor's shape against the manifest's model dimensions; any problem raises a one-line
:class:`~accelerando.errors.UserError` that names it. Dims: ``C`` channels, ``S`` samples, ``T`` latent frames, ``D``
latent channels, ``N`` tokens.
"""

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from accelerando.errors import UserError

__all__ = [
    "SESSION_FORMAT",
    "SESSION_VERSION",
    "SessionData",
    "module_sha256",
    "identity_config",
    "UNHASHED_DEFAULTS",
    "kv_bytes",
    "CACHE_FAMILIES",
    "write_session",
    "load_session",
    "read_manifest",
]

SESSION_FORMAT = "accelerando-edit-session"
SESSION_VERSION = 2  # 2: cache.safetensors with a cache_kind, no cached decode (1: DiT keys/values in kv.safetensors)
_POINTER = "session.json"
_STATE = "state.safetensors"
_CACHE = "cache.safetensors"
CACHE_FAMILIES = {"kv": ("k", "v"), "norm_stats": ("mean", "m2", "count"), "none": ()}


@dataclass
class SessionData:
    """One version of a session, in memory."""

    manifest: dict  # see the module docstring; "files" is filled in by write_session
    audio: torch.Tensor  # [C, S] float32 at manifest["sample_rate"]: the clip as the user has it
    known: torch.Tensor  # [T, D] float32: the normalised latent the pipeline encodes from ``audio``
    cache: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)  # family -> eval index -> tensor

    @property
    def evals(self) -> list[int]:
        """The cached model evaluations (every family holds the same ones)."""
        return sorted(next(iter(self.cache.values()), {}))

    @property
    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for fam in self.cache.values() for t in fam.values())


# sampling defaults left out of a model's identity: a session records the resolved value and replays it, so the
# default does not change what an edit computes, and leaving it out keeps sessions recorded before it existed valid
UNHASHED_DEFAULTS = ("default_grid_guidance", "default_key_guidance")


def identity_config(module: torch.nn.Module) -> dict:
    """The part of ``module.config`` that identifies it for edit sessions (all of it but :data:`UNHASHED_DEFAULTS`)."""
    return {k: v for k, v in module.config.to_dict().items() if k not in UNHASHED_DEFAULTS}


def module_sha256(module: torch.nn.Module, extra: dict | None = None) -> str:
    """sha256 of a module's state (names, dtypes, shapes, bytes) and of ``extra`` (e.g. its config)."""
    h = hashlib.sha256()
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def kv_bytes(n_evals: int, depth: int, batch: int, tokens: int, width: int, itemsize: int = 2) -> int:
    """Bytes of the key/value cache for ``n_evals`` model evaluations."""
    return n_evals * 2 * depth * batch * tokens * width * itemsize


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_pointer(root: Path) -> dict:
    ptr = root / _POINTER
    if not ptr.is_file():
        raise UserError(
            f"{root} is not an edit session (no {_POINTER}); "
            f"record one with `accelerando generate ... --session {root}`"
        )
    try:
        data = json.loads(ptr.read_text())
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (ValueError, OSError) as err:
        msg = f"edit session {root} is corrupt: {_POINTER} is unreadable ({err}); record the clip again"
        raise UserError(msg) from None
    if data.get("format") != SESSION_FORMAT:
        raise UserError(f"{root}/{_POINTER} is not an accelerando edit session (format {data.get('format')!r})")
    if data.get("version") != SESSION_VERSION:
        raise UserError(
            f"edit session {root} has version {data.get('version')!r}; this accelerando reads version {SESSION_VERSION}"
        )
    return data


def write_session(root: str | Path, data: SessionData) -> Path:
    """Write ``data`` as the new current version of the session at ``root`` (created if missing); return its dir.

    Refuses a ``root`` that exists, is not empty and is not a session, so a typo cannot clobber other files.
    """
    from safetensors.torch import save_file

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"--session {root} is a file; give a directory")
    old = None
    if root.is_dir() and any(root.iterdir()):
        if not (root / _POINTER).is_file():
            raise UserError(f"--session {root} is a non-empty directory that is not an edit session; pick a new one")
        try:
            old = json.loads((root / _POINTER).read_text()).get("current")
        except (ValueError, OSError, AttributeError):
            old = None
    root.mkdir(parents=True, exist_ok=True)
    versions = [int(p.name[1:]) for p in root.glob("v[0-9]*") if p.name[1:].isdigit()]
    name = f"v{max(versions, default=0) + 1:06d}"
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        save_file(
            {
                "audio": data.audio.float().contiguous(),
                "known": data.known.float().contiguous(),
            },
            str(tmp / _STATE),
        )
        families = CACHE_FAMILIES[data.manifest.get("cache_kind", "kv")]
        if set(data.cache) - set(families) or any(sorted(data.cache.get(f, {})) != data.evals for f in families):
            raise ValueError(f"session cache families {sorted(data.cache)} do not match {families} for every eval")
        tensors = {f"{f}.{e}": data.cache[f][e].contiguous() for f in data.cache for e in data.evals}
        save_file(tensors, str(tmp / _CACHE))
        manifest = dict(data.manifest)
        manifest["format"], manifest["version"] = SESSION_FORMAT, SESSION_VERSION
        manifest.setdefault("cache_kind", "kv")
        manifest["cached_evals"] = data.evals
        manifest["files"] = {
            f: {"sha256": _sha256_file(tmp / f), "size": (tmp / f).stat().st_size} for f in (_STATE, _CACHE)
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for f in (_STATE, _CACHE, "manifest.json"):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, root / name)
        ptr_tmp = root / f".{_POINTER}.{uuid.uuid4().hex}"
        ptr_tmp.write_text(json.dumps({"format": SESSION_FORMAT, "version": SESSION_VERSION, "current": name}))
        with open(ptr_tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(ptr_tmp, root / _POINTER)  # the commit point
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    data.manifest = manifest
    for p in root.iterdir():  # the previous version and leftovers of interrupted writes
        stale = p.name == old or (p.name[:1] == "v" and p.name[1:].isdigit()) or p.name.startswith(".tmp-")
        if p.name != name and (stale or p.name.startswith(f".{_POINTER}.")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return root / name


def read_manifest(root: str | Path) -> dict:
    """The current version's manifest only (no tensor checks): for settings needed before loading a model."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"edit session {root} not found; record one with `accelerando generate ... --session {root}`")
    current = _read_pointer(root).get("current")
    try:
        manifest = json.loads((root / str(current) / "manifest.json").read_text())
        manifest["controls"], manifest["steps"], manifest["sampler"], manifest["samples"]  # noqa: B018
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise UserError(f"edit session {root} is corrupt: manifest of {current!r} is unreadable ({err})") from None
    return manifest


def load_session(root: str | Path, model_sha256: str | None = None, codec_sha256: str | None = None) -> SessionData:
    """Read and check the current version of the session at ``root``; raise a one-line UserError on any problem."""
    from safetensors import safe_open

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"edit session {root} not found; record one with `accelerando generate ... --session {root}`")
    current = _read_pointer(root).get("current")
    vdir = root / str(current)
    if not current or not vdir.is_dir():
        raise UserError(f"edit session {root} is corrupt: its current version {current!r} is missing")
    try:
        manifest = json.loads((vdir / "manifest.json").read_text())
        files = manifest["files"]
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise UserError(f"edit session {root} is corrupt: {current}/manifest.json is unreadable ({err})") from None
    if manifest.get("format") != SESSION_FORMAT or manifest.get("version") != SESSION_VERSION:
        raise UserError(f"edit session {root}: {current}/manifest.json has an unknown format or version")
    if model_sha256 is not None and manifest.get("model_sha256") != model_sha256:
        raise UserError(
            f"edit session {root} was recorded with a different model (sha256 {str(manifest.get('model_sha256'))[:12]}"
            f", this one is {model_sha256[:12]}); use the same --model or record the clip again"
        )
    if codec_sha256 is not None and manifest.get("codec_sha256") != codec_sha256:
        raise UserError(
            f"edit session {root} was recorded with a different codec (sha256 {str(manifest.get('codec_sha256'))[:12]}"
            f", this one is {codec_sha256[:12]}); record the clip again"
        )
    families = CACHE_FAMILIES.get(manifest.get("cache_kind"))
    if families is None:
        raise UserError(f"edit session {root} is corrupt: unknown cache_kind {manifest.get('cache_kind')!r}")
    for f in (_STATE, _CACHE):
        p = vdir / f
        want = files.get(f) if isinstance(files, dict) else None
        if want is None or not p.is_file():
            raise UserError(f"edit session {root} is corrupt: {current}/{f} is missing; record the clip again")
        size = p.stat().st_size
        if size != want.get("size"):
            raise UserError(
                f"edit session {root} is corrupt: {current}/{f} has {size} bytes, the manifest says "
                f"{want.get('size')} (truncated?); record the clip again"
            )
        if _sha256_file(p) != want.get("sha256"):
            raise UserError(
                f"edit session {root} is corrupt: {current}/{f} fails its sha256 check; record the clip again"
            )
    try:
        with safe_open(str(vdir / _STATE), "pt") as fh:
            state = {name: fh.get_tensor(name) for name in ("audio", "known")}
        cache = {f: {} for f in families}
        with safe_open(str(vdir / _CACHE), "pt") as fh:
            for e in manifest["cached_evals"]:
                for f in families:
                    cache[f][int(e)] = fh.get_tensor(f"{f}.{e}")
    except Exception as err:  # safetensors raises its own error types for malformed files
        msg = " ".join(str(err).split())
        msg = f"edit session {root} is corrupt: cannot read its tensors ({msg}); record the clip again"
        raise UserError(msg) from None
    data = SessionData(manifest, state["audio"], state["known"], cache)
    _check_shapes(root, data)
    return data


def _check_shapes(root: Path, data: SessionData) -> None:
    m = data.manifest
    try:
        want = {
            "audio": (m["channels"], m["samples"]),
            "known": (m["frames"], m["latent_dim"]),
        }
        kv = m["cache_kind"] == "kv"
        kv_shape = (m["depth"], m["batch"], m["heads"], m["tokens"], m["width"] // m["heads"]) if kv else None
        stats_shape = (m["norms"], m["batch"], m["groups"]) if m["cache_kind"] == "norm_stats" else None
    except (KeyError, TypeError) as err:
        raise UserError(f"edit session {root} is corrupt: the manifest lacks {err}; record the clip again") from None
    for name, shape in want.items():
        got = tuple(getattr(data, name).shape)
        if got != tuple(shape):
            raise UserError(f"edit session {root} is corrupt: tensor {name} has shape {got}, expected {tuple(shape)}")
    for fam, per_eval in data.cache.items():
        for e, t in per_eval.items():
            if kv:
                want = kv_shape
            else:  # chunks: as many as the evaluation's count holds
                chunks = data.cache["count"][e].shape[-1]
                want = (stats_shape[0], chunks) if fam == "count" else (*stats_shape, chunks)
            if tuple(t.shape) != want and tuple(t.shape) != (want[0], 1, *want[2:]):  # 1: an unguided step
                raise UserError(
                    f"edit session {root} is corrupt: tensor {fam}.{e} has shape {tuple(t.shape)}, expected {want}"
                )
