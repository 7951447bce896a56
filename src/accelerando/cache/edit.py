"""Sparse, cached edits of a generated clip (SIGE-Audio): one config and one apply function.

``apply_sparse_edit(pipeline, SparseEditConfig(...))`` attaches a :class:`SparseEditor` as ``pipeline.sparse_edit``
and routes the backbone's and the codec decoder's calls through it (by instance attributes; the model files are
untouched, and outside an editor call both behave exactly as before). Then::

    pipe.sparse_edit.generate("song.session", "a chorale", duration=30, seed=0)        # records the session
    pipe.sparse_edit.edit("song.session", regions=[(10.0, 12.0)], seed=1)              # inpaint, token-sparse
    pipe.sparse_edit.edit("song.session", extend_s=5.0, seed=2)                        # extend, token-sparse

What is cached. For every model evaluation of the sampler and each classifier-free-guidance branch it runs (all of them,
or the conditional one alone at steps outside a ``guidance_interval``), what the backbone's sparse call needs
(:mod:`accelerando.cache.edit_backends`): for a DiT each block's self-attention keys and values (after RoPE, bf16 as
computed under the pipeline's autocast) of every token; for a conv U-Net each GroupNorm's statistics. They come from a
*recording pass*: the pipeline run as an edit with nothing to regenerate (every frame known, the clip's own latent as
the known latent). That is exactly what a full inpaint of the clip computes for its unedited tokens, except for their
dependence on the region being regenerated. Plus the clip's audio and its latent (served to the edit instead of encoding
the clip again).

The edit. The pipeline runs the edit as usual (same conditioning, same seed handling, same splice), but each model
evaluation runs only the units (DiT tokens, U-Net frames) that hold a frame to regenerate, dilated by ``halo_s``
seconds on each side (default: 0.5 s for the approximate backbones; none for a per-frame-norm U-Net, whose windows
are exact and whose velocity at known frames is never used, since those frames are clamped to the known latent,
unless it is quantized with per-tensor activation scales, which make its windows approximate: 0.5 s then).
A DiT's active queries attend to the cached keys and values of all other tokens; a U-Net runs the receptive-field
windows around the active frames and normalises with the cached statistics (SIGE's approximation: unedited parts
keep what they had in the recording pass). Model evaluations with no cache entry
(``over_budget="fewer_steps"``) run densely. The codec decodes only the generated frames
(:func:`~accelerando.cache.sparse_decode.decode_edit`, exact there; zeros elsewhere) and the pipeline's splice keeps
audio outside the regions sample-identical to the original, so no decoded sample outside them is ever used.

After the edit the session is updated: audio and latent exactly; the cache either by a sparse recording
pass over the new audio (``cache_update="refresh"``, the same semantics as the original recording, over the
recomputed units; about one more sparse edit) or by keeping what the edit computed (``"reuse"``, free: a DiT keeps
the keys and values the edit computed, which describe the region while it was being generated, not the finished
audio; a U-Net keeps the statistics chunks of the recorded clip, and each later edit replaces the chunks it
computes with live values; after an extend a U-Net refreshes, since it has no chunks for the new frames).
``"auto"`` (the default) is ``refresh`` for a DiT and ``reuse`` for a U-Net.
"""

import inspect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from accelerando.cache.dit_sparse import dilate_tokens, edited_tokens
from accelerando.cache.edit_backends import backend_for
from accelerando.cache.session import SessionData, identity_config, load_session, module_sha256, write_session
from accelerando.cache.sparse_decode import decode_edit, decoder_radius
from accelerando.cache.sparse_encode import encode_update
from accelerando.conditioning.controls import ControlSpec
from accelerando.errors import UserError

__all__ = ["LEGACY_SETTINGS", "SparseEditConfig", "SparseEditor", "apply_sparse_edit"]


# pipeline keyword arguments that the editor sets per call (never recorded as a session's settings)
_PER_CALL = ("num_outputs", "generator", "init_audio", "init_sample_rate", "regions", "strength", "callback")
# what a session recorded before a setting existed replays: plain guidance, every step guided
LEGACY_SETTINGS = {"rhythm_cfg": "off", "guidance_interval": "all", "grid_guidance": "off", "key_guidance": "off"}
# recorded settings stored next to the controls in the manifest (the rest of the settings are its "controls")
_RUN_SETTINGS = ("steps", "cfg", "sampler")


@dataclass
class SparseEditConfig:
    # dilation of the regenerated frames, seconds on each side, recomputed with them; None: the backbone's default
    # (0.5 s where the edit approximates, SIGE-style; 0 for a per-frame-norm U-Net, whose windows are exact anyway,
    # unless per-tensor activation scales make them approximate)
    halo_s: float | None = None
    max_cache_mb: float = 2048.0  # memory and disk budget of the cache
    over_budget: str = "fewer_steps"  # "fewer_steps": cache the first evaluations that fit; "refuse": UserError
    cache_update: str = "auto"  # "auto", "refresh" or "reuse" (see the module docstring)
    sparse_decode: bool = True  # decode only the generated frames (codecs without time upsampling; else full)

    def __post_init__(self):
        if self.halo_s is not None and not (self.halo_s >= 0 and math.isfinite(self.halo_s)):
            raise ValueError(f"halo_s={self.halo_s}; use a finite number of seconds >= 0")
        if not self.max_cache_mb > 0:
            raise ValueError(f"max_cache_mb={self.max_cache_mb}; use a positive budget")
        if self.over_budget not in ("fewer_steps", "refuse"):
            raise ValueError(f"over_budget={self.over_budget!r}; use 'fewer_steps' or 'refuse'")
        if self.cache_update not in ("auto", "refresh", "reuse"):
            raise ValueError(f"cache_update={self.cache_update!r}; use 'auto', 'refresh' or 'reuse'")


def apply_sparse_edit(pipeline, config: SparseEditConfig | None = None):
    """Attach (or reconfigure) ``pipeline.sparse_edit``, a :class:`SparseEditor`; return the pipeline."""
    config = config or SparseEditConfig()
    editor = getattr(pipeline, "sparse_edit", None)
    if isinstance(editor, SparseEditor):
        editor.config = config
    else:
        pipeline.sparse_edit = SparseEditor(pipeline, config)
    return pipeline


@dataclass
class _Run:
    """State of one pipeline call routed through the editor."""

    idx: torch.Tensor | str = "edited"  # unit indices to compute, "all", or "edited" (dilated from the mask)
    halo: int = 0  # units
    cache: dict = field(default_factory=dict)  # family -> eval -> tensor (a session's cache)
    n_cached: int | None = None  # units in the cache
    record: frozenset = frozenset()  # evals whose cache entries (keys/values, statistics) to record
    compute: bool = True  # False: skip the backbone where every frame is known (output unused)
    times: list | None = None  # expected evaluation times
    sparse_decode: bool = False  # decode only the frames to generate (the splice keeps the input's audio elsewhere)
    encoded: tuple | None = None  # (mono [S], normalised latent [1, T, D]): a known encode, served without the codec
    calls: int = 0
    cond: object = None
    seen_times: list = field(default_factory=list)
    rec: dict = field(default_factory=dict)  # eval -> {family: tensor} recorded for the computed units
    sparse_evals: int = 0
    dense_evals: int = 0
    tokens: int = 0  # units to regenerate, with the halo
    work: int = 0  # units the backbone runs per evaluation (a U-Net adds its receptive-field windows)
    decode_fraction: float | None = None


class SparseEditor:
    """Sessions and sparse edits for one pipeline; made by :func:`apply_sparse_edit`."""

    def __init__(self, pipeline, config: SparseEditConfig):
        self.pipe = pipeline
        self.config = config
        self._run: _Run | None = None
        dit, codec = pipeline.model.dit, pipeline.codec
        self.backend = backend_for(dit)
        self._dense_forward = dit.forward
        self._full_decode = codec.decode
        self._full_encode = pipeline._encode_audio
        pipeline._encode_audio = self._encode_call
        dit.forward = self._dit_call  # instance attributes: nn.Module.__call__ dispatches to them
        codec.decode = self._decode_call

    @property
    def cache_update(self) -> str:
        """The configured cache update, ``auto`` resolved for this backbone."""
        cu = self.config.cache_update
        return self.backend.default_update if cu == "auto" else cu

    # -- identities --------------------------------------------------------------------------------------------------
    def model_sha256(self) -> str:
        return self._sha256(self.pipe.model)

    def codec_sha256(self) -> str:
        return self._sha256(self.pipe.codec)

    def _sha256(self, module) -> str:
        """:func:`module_sha256` of ``module`` and its config, hashed again only when a tensor changed: the key holds
        each tensor's storage, version counter (in-place ops) and float64 sum (writes through ``.data``, which skip
        the version counter), a few milliseconds against the full hash's tens."""
        cfg = identity_config(module)
        state = module.state_dict()
        with torch.no_grad():
            sums = torch.stack([t.detach().double().sum() for t in state.values()]).tolist()
        key = (id(module), repr(cfg), tuple((n, t.data_ptr(), t._version) for n, t in state.items()), tuple(sums))
        memo = self.__dict__.setdefault("_sha_memo", {})
        if memo.get(id(module), (None,))[0] != key:
            memo[id(module)] = (key, module_sha256(module, cfg))
        return memo[id(module)][1]

    @property
    def halo_s(self) -> float:
        """The halo an edit uses: the config's, or the backbone's default (``default_halo_s``)."""
        return self.backend.default_halo_s if self.config.halo_s is None else self.config.halo_s

    # -- dispatch ----------------------------------------------------------------------------------------------------
    def _dit_call(self, x, t, cond):
        run = self._run
        if run is None:
            return self._dense_forward(x, t, cond)
        be = self.backend
        e = run.calls
        run.calls += 1
        run.seen_times.append(float(t[0]))
        if run.times is not None and (e >= len(run.times) or abs(run.times[e] - float(t[0])) > 1e-6):
            raise RuntimeError(f"model evaluation {e} at t={float(t[0]):.6f} does not match the session's schedule")
        nb, frames, _ = x.shape
        p = be.patch
        n = -(-frames // p)
        if run.cond is None:
            run.cond = cond
            kmask = cond.known_mask[0] if cond.known_mask is not None else x.new_zeros(frames)
            if isinstance(run.idx, str):
                if run.idx == "all":
                    run.idx = torch.arange(n)
                else:
                    run.idx = dilate_tokens(edited_tokens(kmask, p, run.n_cached), run.halo).nonzero().flatten()
            run.tokens = len(run.idx)
            run.work = be.work_units(run.idx, n)
        all_known = cond.known_mask is not None and bool((cond.known_mask > 0).all())
        if not run.compute and all_known and e not in run.record:
            return x.new_zeros(x.shape)  # every frame is clamped to the known latent: the velocity is unused
        entry = be.entry(run.cache, e, nb, n)
        if entry is None and len(run.idx) < n:
            run.dense_evals += 1
            return self._dense_forward(x, t, cond)
        v, rec = be.forward(x, t, cond, run.idx, entry, record=e in run.record)
        if run.work < n:
            run.sparse_evals += 1
        else:
            run.dense_evals += 1
        if rec is not None:
            run.rec[e] = rec
        return v

    def _encode_call(self, mono):
        """The pipeline's audio encode; inside an editor call, audio whose latent the session holds is not
        re-encoded (the session's latent is what encoding it gave)."""
        run = self._run
        if run is not None and run.encoded is not None:
            known_mono, latent = run.encoded
            if mono.shape == known_mono.shape and torch.equal(mono, known_mono):
                return latent.clone()
        return self._full_encode(mono)

    def _decode_call(self, latent):
        run = self._run
        if run is None:
            return self._full_decode(latent)
        if not (run.sparse_decode and self.config.sparse_decode) or run.cond is None:
            run.decode_fraction = 1.0
            return self._full_decode(latent)
        audio, run.decode_fraction = self._decode_generated(latent, run.cond.known_mask[0])
        return audio

    def _decode_generated(self, latent, known_mask):
        """Decode ``latent`` [1, D, T] exactly on the frames to generate (``known_mask`` [T] == 0) and zeros
        elsewhere: the pipeline's splice keeps the input's own samples outside the regions (the crossfades lie on
        the generated side), so no other decoded sample reaches the output."""
        gen = (known_mask == 0).nonzero().flatten()
        zeros = latent.new_zeros(latent.shape[0], 1, latent.shape[-1] * self.pipe.codec.samples_per_frame)
        if len(gen) == 0:  # nothing generated (a recording pass): the output is the input itself
            return zeros, 0.0
        try:
            decoder_radius(self.pipe.codec)
        except NotImplementedError:  # codec with time upsampling: no sparse decoder yet
            return self._full_decode(latent), 1.0
        res = decode_edit(self.pipe.codec, latent, zeros, int(gen[0]), int(gen[-1]) + 1)
        return res.audio, res.fraction

    def _call(self, run: _Run, *args, **kwargs):
        if self._run is not None:
            raise RuntimeError("the sparse editor is already running a call (not re-entrant)")
        self._run = run
        try:
            return self.pipe(*args, **kwargs)
        finally:
            self._run = None

    # -- budget ------------------------------------------------------------------------------------------------------
    def _evals_to_cache(self, n_evals: int, batch: int, units: int) -> int:
        per_eval = self.backend.bytes_per_eval(batch, units)
        if per_eval == 0:  # a backbone that needs no cache
            return n_evals
        budget = self.config.max_cache_mb * 2**20
        fit = min(n_evals, int(budget // per_eval))
        if fit < n_evals and (self.config.over_budget == "refuse" or fit == 0):
            raise UserError(
                f"the edit cache needs {per_eval * n_evals / 2**20:.0f} MB ({n_evals} model evaluations x "
                f"{per_eval / 2**20:.1f} MB), over the budget of {self.config.max_cache_mb:g} MB; raise the cache "
                "budget, use fewer steps or a shorter clip"
            )
        return fit

    # -- sessions ----------------------------------------------------------------------------------------------------
    def _record(self, audio, settings: dict, prompt: str, run: _Run) -> _Run:
        """Recording pass over ``audio`` [C, S], every frame known: fills ``run.rec`` and ``run.cond``."""
        self._call(
            run,
            prompt,
            **settings,
            duration=audio.shape[-1] / self.pipe.codec.sample_rate,
            init_audio=audio,
            init_sample_rate=self.pipe.codec.sample_rate,
            generator=torch.Generator().manual_seed(0),
        )
        return run

    def _settings(self, m: dict, cfg: float | None = None) -> dict:
        """The pipeline keyword arguments of a recorded session (``cfg`` overridden when given). A session recorded
        before rhythm guidance (guidance intervals) existed replays plain guidance (every step guided)."""
        names = {q.name for q in self._call_parameters()}
        base = {k: v for k, v in LEGACY_SETTINGS.items() if k in names}
        return {
            **base,
            **m["controls"],
            "steps": m["steps"],
            "cfg": m["cfg"] if cfg is None else cfg,
            "sampler": m["sampler"],
        }

    def _branches(self, settings: dict) -> int:
        """Backbone batch rows of a call with these settings (1, 2 or 3; see ``guidance_branches``)."""
        from accelerando.pipelines.text_to_music import guidance_branches

        rhythm = self.pipe.resolve_rhythm_cfg(settings.get("rhythm_cfg", "off"))  # "off" -> None, plain guidance
        return guidance_branches(settings["cfg"], rhythm)

    def _call_parameters(self) -> list[inspect.Parameter]:
        """The pipeline's call parameters after ``self``, following ``**kwargs`` into the base classes' ``__call__``."""
        params: dict[str, inspect.Parameter] = {}
        for cls in type(self.pipe).__mro__:
            fn = cls.__dict__.get("__call__")
            if fn is None:
                continue
            more = False
            for q in list(inspect.signature(fn).parameters.values())[1:]:
                if q.kind is q.VAR_KEYWORD:
                    more = True
                elif q.kind is not q.VAR_POSITIONAL:
                    params.setdefault(q.name, q)
            if not more:
                break
        return list(params.values())

    def _recording_settings(self, kwargs: dict) -> tuple[float, dict]:
        """``(duration, settings)`` of a recorded clip: the pipeline's own keyword arguments, defaults filled in.

        Derived from the pipeline's signature, so a control the pipeline gains is recorded and replayed by every
        edit without changes here. ``settings`` holds every keyword except ``duration`` and the per-call ones
        (:data:`_PER_CALL`); :meth:`_settings` rebuilds it from the manifest (``controls`` plus ``steps``, ``cfg``,
        ``sampler``).
        """
        taken = sorted(set(kwargs) & set(_PER_CALL))
        if taken:
            raise TypeError(f"generate() records one new clip and sets {', '.join(taken)} itself; drop them")
        params = self._call_parameters()
        positional = [q for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
        prompt = positional[0] if positional else None
        params = [q for q in params if q is not prompt]  # the keywords
        names = [q.name for q in params]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f"generate(): the pipeline takes no argument {unknown[0]!r} (it takes {', '.join(names)})")
        args = {}
        for q in params:
            if q.name in kwargs:
                args[q.name] = kwargs[q.name]
            elif q.default is q.empty:
                raise TypeError(f"generate(): the pipeline needs the argument {q.name!r}")
            else:
                args[q.name] = q.default
        settings = {k: v for k, v in args.items() if k not in _PER_CALL and k != "duration"}
        for k, v in settings.items():
            try:
                json.dumps(v)
            except (TypeError, ValueError):
                raise TypeError(f"generate(): {k}={v!r} cannot be recorded in an edit session (not JSON)") from None
        return args["duration"], settings

    def generate(
        self,
        session_dir: str | Path,
        prompt: str,
        *,
        seed: int = 0,
        callback=None,
        store_audio=None,
        **kwargs,
    ):
        """Generate one clip as the pipeline does and record its edit session in ``session_dir``.

        ``kwargs`` are the pipeline's own keyword arguments (``bpm``, ``key``, ``meter``, ``instruments``,
        ``duration``, ``steps``, ``cfg``, ``sampler``, and whatever else its signature has), with its defaults;
        ``seed`` stands for its ``generator``. Every one of them except ``duration`` is recorded and edits replay
        them (``cfg`` may change per edit).

        ``store_audio(output) -> [C, S]`` (codec rate) gives the audio the session should hold, e.g. the output file
        read back after writing it as 16-bit PCM; by default ``output.audio[0]``.
        """
        pipe = self.pipe
        duration, settings = self._recording_settings(kwargs)
        if settings.get("cfg") is None:
            settings["cfg"] = pipe.default_cfg  # recorded resolved, so edits replay the same scale
        if "rhythm_cfg" in settings:  # resolved too ("off" for plain guidance), so a new model default cannot creep in
            rhythm = pipe.resolve_rhythm_cfg(settings["rhythm_cfg"])
            settings["rhythm_cfg"] = "off" if rhythm is None else rhythm
        if "guidance_interval" in settings:  # likewise ("all" for every step guided)
            interval = pipe.resolve_guidance_interval(settings["guidance_interval"])
            settings["guidance_interval"] = "all" if interval is None else list(interval)
        for name, resolve in (
            ("grid_guidance", pipe.resolve_grid_guidance),
            ("key_guidance", pipe.resolve_key_guidance),
        ):
            if name in settings:  # likewise ("off" for none)
                value = resolve(settings[name])
                settings[name] = "off" if value == 0 else value
        steps, cfg, sampler = settings["steps"], settings["cfg"], settings["sampler"]
        controls = {k: v for k, v in settings.items() if k not in _RUN_SETTINGS}
        spec_params = inspect.signature(ControlSpec.from_user).parameters
        pipe.check_inputs(
            prompt, {k: v for k, v in controls.items() if k in spec_params}, duration, steps, cfg, sampler
        )
        mcfg = pipe.model.config
        n_evals = steps if sampler == "euler" else 2 * steps - 1
        batch = self._branches(settings)
        sr = pipe.codec.sample_rate
        p = self.backend.patch
        units = -(-math.ceil(round(duration * sr) / pipe.codec.samples_per_frame) // p)
        n_cache = self._evals_to_cache(n_evals, batch, units)
        model_sha, codec_sha = self.model_sha256(), self.codec_sha256()
        t0 = time.perf_counter()
        out = pipe(
            prompt, **settings, duration=duration, generator=torch.Generator().manual_seed(seed), callback=callback
        )
        audio = (store_audio(out) if store_audio else out.audio[0]).float()
        # the recording pass computes only the evaluations it caches (none, for a backbone without a cache)
        run = _Run(
            idx="all",
            record=frozenset(range(n_cache)) if self.backend.families else frozenset(),
            compute=False,
            sparse_decode=True,  # every frame known: nothing to decode
        )
        run = self._record(audio, settings, prompt, run)
        known = run.cond.known[0].float().clone()  # [T, D]
        data = SessionData(
            manifest={
                "model_sha256": model_sha,
                "codec_sha256": codec_sha,
                "model_config": mcfg.to_dict(),
                "codec_config": pipe.codec.config.to_dict(),
                "prompt": prompt,
                "controls": controls,
                "seed": seed,
                "steps": steps,
                "sampler": sampler,
                "cfg": cfg,
                "sample_rate": sr,
                "channels": audio.shape[0],
                "samples": audio.shape[-1],
                "frames": known.shape[0],
                "latent_dim": known.shape[1],
                "samples_per_frame": pipe.codec.samples_per_frame,
                "tokens": -(-known.shape[0] // p),  # cache units: DiT tokens, U-Net frames
                "cache_kind": self.backend.kind,
                **self.backend.manifest_fields(),
                "batch": batch,
                "eval_times": run.seen_times,
                "budget": {"max_cache_mb": self.config.max_cache_mb, "over_budget": self.config.over_budget},
                "edits": [],
            },
            audio=audio,
            known=known,
            cache={f: {e: rec[f] for e, rec in run.rec.items()} for f in self.backend.families},
        )
        write_session(session_dir, data)
        out.metadata["session"] = {
            "dir": str(session_dir),
            "cached_evals": len(data.evals),
            "evals": len(run.seen_times),
            "cache_mb": data.cache_bytes / 2**20,
            "record_s": time.perf_counter() - t0,
        }
        return out

    def load(self, session_dir: str | Path) -> SessionData:
        """The session's current version, checked against this pipeline's model and codec."""
        return load_session(session_dir, self.model_sha256(), self.codec_sha256())

    def edit(
        self,
        session_dir: str | Path,
        *,
        regions: list[tuple[float, float]] | None = None,
        extend_s: float | None = None,
        prompt: str | None = None,
        cfg: float | None = None,
        seed: int = 0,
        audio: torch.Tensor | None = None,
        callback=None,
        store_audio=None,
    ):
        """Inpaint ``regions`` (seconds) or extend by ``extend_s`` seconds, sparsely, and update the session.

        ``audio`` [C, S] (codec rate), when given, must equal the session's audio (the clip the user is editing).
        ``prompt`` and ``cfg`` default to the session's; the controls, steps and sampler are the session's.
        Returns the pipeline's AudioOutput with ``metadata["sparse_edit"]`` (work done, timings).
        """
        if (regions is None) == (extend_s is None):
            raise UserError("an edit needs either regions (inpaint) or extend_s (extend)")
        sess = self.load(session_dir)
        m = sess.manifest
        sr = self.pipe.codec.sample_rate
        if m["sample_rate"] != sr:
            raise UserError(f"edit session {session_dir} is at {m['sample_rate']} Hz; this codec runs at {sr} Hz")
        if audio is not None and (audio.shape != sess.audio.shape or not torch.equal(audio.float(), sess.audio)):
            raise UserError(
                f"the input audio does not match edit session {session_dir} (it holds the clip its last run wrote); "
                "pass that file, or edit without --session"
            )
        if extend_s is not None and not extend_s > 0:
            raise UserError(f"extend by {extend_s} s; give a positive number of seconds")
        prompt = m["prompt"] if prompt is None else prompt
        settings = self._settings(m, cfg)
        length = m["samples"] / sr
        duration = length if extend_s is None else length + extend_s
        be = self.backend
        p = be.patch
        fr = self.pipe.frame_rate
        n_new = -(-max(1, math.ceil(duration * fr)) // p)
        keep = self._evals_to_cache(len(m["eval_times"]), m["batch"], max(n_new, m["tokens"]))
        keep_evals = [e for e in sess.evals if e < keep]
        halo = math.ceil(self.halo_s * fr / p)
        # reuse without records from the edit cannot cover an extension: such a backbone refreshes after an extend
        reuse = self.cache_update == "reuse" and (be.records_during_edit or extend_s is None)
        run = _Run(
            idx="edited",
            halo=halo,
            cache=sess.cache,
            n_cached=m["tokens"],
            record=frozenset(keep_evals) if reuse and be.records_during_edit else frozenset(),
            times=m["eval_times"],
            sparse_decode=True,
            encoded=(self.pipe._prepare_audio(sess.audio, sr), sess.known[None]),
        )
        t0 = time.perf_counter()
        out = self._call(
            run,
            prompt,
            **settings,
            duration=duration,
            generator=torch.Generator().manual_seed(seed),
            init_audio=sess.audio,
            init_sample_rate=sr,
            regions=regions,
            callback=callback,
        )
        t_edit = time.perf_counter() - t0
        new_audio = (store_audio(out) if store_audio else out.audio[0]).float()
        t1 = time.perf_counter()
        frames = run.cond.known_mask.shape[1]
        n_tokens = -(-frames // p)
        # update the session: the latent exactly, the cache of the recomputed units
        pipe = self.pipe
        mono_new = pipe._prepare_audio(new_audio, sr)
        # [T, D], as a full edit of the new clip computes it: only the changed frames when the margin check
        # of sparse_encode confirms they match a full encode (else the whole clip)
        upd = None
        if extend_s is None:
            upd = encode_update(pipe.codec, pipe.model.normalize, run.encoded[0], mono_new, sess.known)
        if upd is None:
            known_new = self._full_encode(mono_new)[0]
            frames_encoded = known_new.shape[0]
        else:
            known_new, frames_encoded = upd
        guided_same = self._branches(settings) == m["batch"]
        if reuse and guided_same:
            idx, records = run.idx, run.rec
        else:  # refresh: a sparse recording pass over the new audio
            old = sess.known
            t_common = min(old.shape[0], known_new.shape[0])
            changed = (known_new[:t_common] != old[:t_common]).any(dim=1)
            changed = F.pad(changed, (0, known_new.shape[0] - t_common), value=True)
            touched = edited_tokens((~changed).float(), p, m["tokens"])
            touched[run.idx] = True
            ref = _Run(
                idx=touched.nonzero().flatten(),
                cache=sess.cache,
                n_cached=m["tokens"],
                record=frozenset(keep_evals),
                compute=False,
                times=m["eval_times"],
                sparse_decode=True,
                encoded=(mono_new, known_new[None]),
            )
            ref = self._record(new_audio, self._settings(m), m["prompt"], ref)
            idx, records = ref.idx, ref.rec
        cache_new = {f: {} for f in be.families}
        for e in keep_evals:
            held = [sess.cache[f][e] for f in be.families if e in sess.cache.get(f, {})]
            batch = held[0].shape[1] if held else m["batch"]  # an unguided step (guidance_interval) holds 1 row
            merged = be.merge(be.entry(sess.cache, e, batch, n_tokens), idx, records.get(e))
            for f in merged or {}:  # None: no fresh record for this evaluation, it drops out of the cache
                cache_new[f][e] = merged[f]
        manifest = dict(m)
        manifest.update(
            samples=new_audio.shape[-1],
            channels=new_audio.shape[0],
            frames=known_new.shape[0],
            tokens=-(-known_new.shape[0] // p),
            edits=[
                *m.get("edits", []),
                {
                    "mode": "inpaint" if regions else "extend",
                    "regions": regions,
                    "extend_s": extend_s,
                    "prompt": prompt,
                    "seed": seed,
                    "tokens_recomputed": run.tokens,
                    "tokens": n_tokens,
                },
            ],
        )
        data = SessionData(manifest, new_audio, known_new, cache_new)
        write_session(session_dir, data)
        stats = {
            "sparse": True,
            "tokens_recomputed": run.tokens,
            "units_computed": run.work,
            "tokens": n_tokens,
            "sparse_evals": run.sparse_evals,
            "dense_evals": run.dense_evals,
            "decode_fraction": run.decode_fraction,
            "cache_update": "reuse" if reuse and guided_same else "refresh",
            "frames_encoded": frames_encoded,
            "edit_s": t_edit,
            "update_s": time.perf_counter() - t1,
            "cache_mb": data.cache_bytes / 2**20,
        }
        out.metadata["sparse_edit"] = stats
        return out
