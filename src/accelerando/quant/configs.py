"""Quantization configs: one dataclass per method, validated on construction, serialised as versioned JSON.

A serialised config is ``{"_type": <class name>, "_version": QUANT_CONFIG_VERSION, "_data": {field: value}}``;
:func:`config_from_dict` reads it back through a registry of config classes (no import paths are stored).
"""

from dataclasses import asdict, dataclass, fields

__all__ = [
    "QUANT_CONFIG_VERSION",
    "QuantConfig",
    "RTNConfig",
    "Int8DynamicConfig",
    "Float8DynamicConfig",
    "SmoothQuantConfig",
    "SVDQuantConfig",
    "config_from_dict",
]

QUANT_CONFIG_VERSION = 1
ACT_SCALES = ("token", "tensor")  # activation scale granularity of the A8 layers

_CONFIG_TYPES: dict[str, type["QuantConfig"]] = {}


class QuantConfig:
    """Base of every quantization config; subclasses are dataclasses and register themselves by class name.

    ``needs_calibration``: the handler needs per-layer activation statistics (see ``accelerando.quant.calibrate_``).
    """

    needs_calibration = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _CONFIG_TYPES[cls.__name__] = cls

    def to_dict(self) -> dict:
        return {"_type": type(self).__name__, "_version": QUANT_CONFIG_VERSION, "_data": asdict(self)}


def config_from_dict(d: dict) -> QuantConfig:
    """Rebuild a config written by ``to_dict()``. ValueError on an unknown type, version or field."""
    if not isinstance(d, dict) or not {"_type", "_version", "_data"} <= d.keys():
        raise ValueError(f"not a serialised quant config (needs _type, _version, _data): {d!r}")
    cls = _CONFIG_TYPES.get(d["_type"])
    if cls is None:
        raise ValueError(f"unknown quant config _type={d['_type']!r}; known: {sorted(_CONFIG_TYPES)}")
    if d["_version"] != QUANT_CONFIG_VERSION:
        raise ValueError(
            f"quant config _version={d['_version']!r} is not supported (expected {QUANT_CONFIG_VERSION}); "
            "re-quantize the float model with this version of accelerando"
        )
    known = {f.name for f in fields(cls)}
    unknown = set(d["_data"]) - known
    if unknown:
        raise ValueError(f"{d['_type']} has no field(s) {sorted(unknown)}; fields are {sorted(known)}")
    return cls(**d["_data"])


@dataclass
class RTNConfig(QuantConfig):
    """Round-to-nearest, symmetric, no calibration: the baseline every other method must beat.

    Weights: per output channel (``group_size=None``) or per group of ``group_size`` input features, integer range
    ``[-(2^(b-1)-1), 2^(b-1)-1]`` (int4 packed two per byte). Activations: per-token dynamic int8 (``a_bits=8``)
    or left in floating point (``a_bits=16``: weight-only, the weights are dequantized before the matmul).

    ``act_scale``: ``"token"`` (one symmetric int8 scale per row, the default) or ``"tensor"`` (one asymmetric
    uint8 scale and zero point per call for the whole input, ``a_bits=8`` only). Per-tensor scales let a
    quantized convolution sum its taps in int32, so it runs as oneDNN's int8 convolution on the CPU
    (:mod:`accelerando.quant.int8_conv`).

    ``reduce_range=True``: weight codes within ``[-64, 64]`` (8-bit weights rounded to 7 bits, 4-bit group scales
    folded in eighths of a step; :class:`~accelerando.quant.linear.QuantLinear`), so that a CPU without VNNI, whose
    int8 kernels sum pairs of products in saturating int16, runs those convolutions through oneDNN exactly too.
    """

    w_bits: int = 8  # 8 or 4
    a_bits: int = 8  # 8 (dynamic per-token int8) or 16 (weight-only)
    group_size: int | None = None  # None: one scale per output channel; else input features per scale
    act_scale: str = "token"  # "token" or "tensor" (a_bits=8)
    reduce_range: bool = False  # weight codes within [-64, 64]: exact oneDNN int8 convs on a CPU without VNNI

    def __post_init__(self):
        if self.w_bits not in (4, 8):
            raise ValueError(f"RTNConfig.w_bits={self.w_bits!r}; use 4 or 8")
        if self.a_bits not in (8, 16):
            raise ValueError(f"RTNConfig.a_bits={self.a_bits!r}; use 8 or 16")
        if self.group_size is not None:
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 2:
                raise ValueError(f"RTNConfig.group_size={self.group_size!r}; use None or an int >= 2")
            if self.w_bits == 4 and self.group_size % 2:
                raise ValueError(f"RTNConfig.group_size={self.group_size!r} must be even for 4-bit packing")
        _check_act_scale("RTNConfig", self.act_scale, self.a_bits)
        _check_reduce_range("RTNConfig", self.reduce_range)


@dataclass
class Int8DynamicConfig(QuantConfig):
    """torchao's ``Int8DynamicActivationInt8WeightConfig`` equivalent: the int8 reference baseline.

    Per-channel symmetric int8 weights and per-token symmetric dynamic int8 activations, both with torchao's
    mapping: ``scale = amax / 127.5``, values clamped to the full ``[-128, 127]``. No fields.
    """

    def __post_init__(self):
        pass


@dataclass
class Float8DynamicConfig(QuantConfig):
    """torchao's ``Float8DynamicActivationFloat8WeightConfig`` with row-wise scales: the FP8 path for Hopper.

    Weights float8 e4m3 with one scale per output channel (``absmax / 448``), activations dynamic float8 e4m3 with
    one scale per token; one ``torch._scaled_mm`` per layer (FP8 tensor cores on sm_89+, a reference kernel on CPU).
    No fields.
    """

    def __post_init__(self):
        pass


def _check_group_size(name: str, group_size, w_bits: int) -> None:
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
            raise ValueError(f"{name}.group_size={group_size!r}; use None or an int >= 2")
        if w_bits == 4 and group_size % 2:
            raise ValueError(f"{name}.group_size={group_size!r} must be even for 4-bit packing")


def _check_act_scale(name: str, act_scale, a_bits: int) -> None:
    if act_scale not in ACT_SCALES:
        raise ValueError(f"{name}.act_scale={act_scale!r}; use 'token' or 'tensor'")
    if act_scale == "tensor" and a_bits != 8:
        raise ValueError(f"{name}.act_scale='tensor' needs a_bits=8, got a_bits={a_bits!r}")


def _check_reduce_range(name: str, reduce_range) -> None:
    if not isinstance(reduce_range, bool):
        raise ValueError(f"{name}.reduce_range={reduce_range!r}; use True or False")


def _check_alpha(name: str, field: str, alpha) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name}.{field}={alpha!r}; use a float in [0, 1]")


@dataclass
class SmoothQuantConfig(QuantConfig):
    """SmoothQuant: migrate activation outliers into the weights, then RTN both sides.

    Per input channel ``j``: ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` from calibration activations ``X``
    (``calibrate_``); the layer computes ``Q_a(x / s) @ Q_w(W * s)^T + b``. Weights per output channel or per group
    of ``group_size`` inputs; activations per-token dynamic (``a_bits`` 4 or 8) or float (``a_bits=16``).
    """

    needs_calibration = True

    w_bits: int = 4  # 8 or 4
    a_bits: int = 8  # 4 or 8 (dynamic per-token) or 16 (weight-only)
    alpha: float = 0.5  # migration strength: 0 keeps the activations, 1 moves all of their range into the weights
    group_size: int | None = None
    act_scale: str = "token"  # "token" or "tensor" (a_bits=8), as in RTNConfig
    reduce_range: bool = False  # as in RTNConfig

    def __post_init__(self):
        if self.w_bits not in (4, 8):
            raise ValueError(f"SmoothQuantConfig.w_bits={self.w_bits!r}; use 4 or 8")
        if self.a_bits not in (4, 8, 16):
            raise ValueError(f"SmoothQuantConfig.a_bits={self.a_bits!r}; use 4, 8 or 16")
        _check_alpha("SmoothQuantConfig", "alpha", self.alpha)
        _check_group_size("SmoothQuantConfig", self.group_size, self.w_bits)
        _check_act_scale("SmoothQuantConfig", self.act_scale, self.a_bits)
        _check_reduce_range("SmoothQuantConfig", self.reduce_range)


SVD_CALIBRATIONS = ("mse", "stft", None)
MSE_ALPHA_GRID = (0.3, 0.5, 0.7)
STFT_ALPHA_GRID = (0.3, 0.5, 0.7)  # alphas the "stft" search tries per unit (layer or block)
STFT_CLIP_GRID = (1.0, 0.9, 0.8)  # residual weight clipping ratios it tries


@dataclass
class SVDQuantConfig(QuantConfig):
    """SVDQuant: smoothing, then a 16-bit low-rank branch absorbs the outliers and the residual is quantized.

    With ``s`` as in :class:`SmoothQuantConfig` and ``W' = W * s``: ``L1 [N, r] @ L2 [r, K]`` is the top-``rank``
    SVD of ``W'`` (stored bf16), ``R = W' - L1 L2`` is quantized round-to-nearest, and
    ``y = Q_a(x/s) @ Q_w(R)^T + (x/s) @ L2^T @ L1^T + b``.

    ``calibration``: ``"mse"`` picks each layer's smoothing alpha from :data:`MSE_ALPHA_GRID` minimising the layer
    output MSE on the calibration activations (``smooth_alpha`` is then unused); ``None`` uses ``smooth_alpha``;
    ``"stft"`` starts from the ``"mse"`` choice and then refines each layer's (or block's) alpha, residual clipping
    and rank greedily to minimise an end-to-end objective, the complex-STFT error of the decoded audio against the
    float model's (``calibrate_(..., objective=...)``; :mod:`accelerando.quant.stft_search`).

    ``act_scale="tensor"``: the residual's activations get one uint8 scale per call (see :class:`RTNConfig`); on
    an unfolded convolution the smoothing factors are then shared by the taps of each input channel, so the
    smoothed input is still a signal a native int8 convolution can take.

    ``w_clip``: the residual's weight scale is ``w_clip * absmax / qmax`` (values beyond are clamped); ``1.0`` is
    plain round-to-nearest. ``"stft"`` calibration searches it per layer and records the choice here.

    ``clip_search=True`` (``"mse"`` and ``"stft"`` only): the MSE stage picks each layer's ``w_clip`` from
    :data:`STFT_CLIP_GRID` together with its alpha (9 candidates instead of 3, the same output MSE), and records both
    choices in the layer's own config (``smooth_alpha``, ``w_clip``).
    """

    needs_calibration = True

    w_bits: int = 4  # 4 or 8
    a_bits: int = 8  # 4, 8 or 16
    rank: int = 32  # capped at min(in_features, out_features) per layer; 0 is plain SmoothQuant
    group_size: int | None = None
    smooth_alpha: float = 0.5
    calibration: str | None = "mse"
    w_clip: float = 1.0
    act_scale: str = "token"  # "token" or "tensor" (a_bits=8), as in RTNConfig
    reduce_range: bool = False  # as in RTNConfig
    clip_search: bool = False  # the MSE stage also picks w_clip from STFT_CLIP_GRID

    def __post_init__(self):
        if self.w_bits not in (4, 8):
            raise ValueError(f"SVDQuantConfig.w_bits={self.w_bits!r}; use 4 or 8")
        if self.a_bits not in (4, 8, 16):
            raise ValueError(f"SVDQuantConfig.a_bits={self.a_bits!r}; use 4, 8 or 16")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise ValueError(f"SVDQuantConfig.rank={self.rank!r}; use an int >= 0")
        _check_group_size("SVDQuantConfig", self.group_size, self.w_bits)
        _check_alpha("SVDQuantConfig", "smooth_alpha", self.smooth_alpha)
        if self.calibration not in SVD_CALIBRATIONS:
            raise ValueError(f"SVDQuantConfig.calibration={self.calibration!r}; use 'mse', 'stft' or None")
        if isinstance(self.w_clip, bool) or not isinstance(self.w_clip, int | float) or not 0.5 <= self.w_clip <= 1:
            raise ValueError(f"SVDQuantConfig.w_clip={self.w_clip!r}; use a float in [0.5, 1]")
        _check_act_scale("SVDQuantConfig", self.act_scale, self.a_bits)
        _check_reduce_range("SVDQuantConfig", self.reduce_range)
        if not isinstance(self.clip_search, bool):
            raise ValueError(f"SVDQuantConfig.clip_search={self.clip_search!r}; use True or False")
        if self.clip_search and self.calibration not in ("mse", "stft"):
            raise ValueError(
                f"SVDQuantConfig.clip_search=True needs calibration 'mse' or 'stft', not {self.calibration!r}"
            )
