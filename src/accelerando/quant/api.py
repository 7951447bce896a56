"""``quantize_``: swap a model's layers for quantized ones in place, dispatching on the config type.

Handlers register with :func:`register_handler`; each maps ``(module, config) -> new module``. Per-layer recipes go
in ``overrides`` (module name -> config, or ``None`` to keep that layer in float), as torchao's ``FqnToConfig``.
"""

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

from torch import nn

from accelerando.quant.configs import Int8DynamicConfig, QuantConfig, RTNConfig
from accelerando.quant.linear import QuantLinear

__all__ = ["quantize_", "quant_plan", "register_handler", "default_filter", "quantized_layers", "building_skeleton"]

Handler = Callable[[nn.Module, QuantConfig], nn.Module]
_HANDLERS: dict[type, Handler] = {}


def register_handler(config_type: type) -> Callable[[Handler], Handler]:
    """Decorator: ``@register_handler(MyConfig)`` makes ``quantize_`` call the function for ``MyConfig`` layers."""

    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn

    return deco


def default_filter(module: nn.Module, name: str) -> bool:
    """Every float ``nn.Linear`` with at least 16 input and 16 output features."""
    return type(module) is nn.Linear and module.in_features >= 16 and module.out_features >= 16


def _handler(config: QuantConfig) -> Handler:
    fn = _HANDLERS.get(type(config))
    if fn is None:
        known = sorted(t.__name__ for t in _HANDLERS)
        raise TypeError(f"no quantize_ handler for config type {type(config).__name__}; registered: {known}")
    return fn


_SKELETON: ContextVar[bool] = ContextVar("accelerando_quant_skeleton", default=False)


@contextmanager
def building_skeleton():
    """Inside: handlers build correctly shaped, empty quantized layers (no calibration), to load weights into."""
    token = _SKELETON.set(True)
    try:
        yield
    finally:
        _SKELETON.reset(token)


def is_building_skeleton() -> bool:
    return _SKELETON.get()


def quant_plan(
    model: nn.Module,
    config: QuantConfig | None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    overrides: dict[str, QuantConfig | None] | None = None,
) -> dict[str, QuantConfig]:
    """Module name -> config ``quantize_`` would apply (same arguments); ValueError on unknown override names."""
    filter_fn = filter_fn or default_filter
    overrides = dict(overrides or {})
    modules = dict(model.named_modules())
    unknown = sorted(set(overrides) - set(modules))
    if unknown:
        raise ValueError(f"overrides name modules that do not exist in the model: {unknown}")
    plan: dict[str, QuantConfig] = {}
    for name, module in modules.items():
        if name in overrides:
            if overrides[name] is not None:
                plan[name] = overrides[name]
        elif config is not None and name and filter_fn(module, name):
            plan[name] = config
    return plan


def quantize_(
    model: nn.Module,
    config: QuantConfig | None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    overrides: dict[str, QuantConfig | None] | None = None,
) -> nn.Module:
    """Quantize ``model`` in place and return it.

    Args:
        model: any module; submodules are replaced on their parents.
        config: applied to every module ``filter_fn(module, name)`` accepts (``None``: only ``overrides`` apply).
        filter_fn: ``(module, fully-qualified name) -> bool``; defaults to :func:`default_filter`.
        overrides: module name -> config for that module (``None`` keeps it in float), taking precedence over
            ``config`` and ``filter_fn``. Unknown names raise ``ValueError``.

    Configs with ``needs_calibration`` (SmoothQuant, SVDQuant) need activation statistics: call
    :func:`accelerando.quant.calibrate_` instead, which records them and then calls this function.
    """
    modules = dict(model.named_modules())
    plan = quant_plan(model, config, filter_fn, overrides)
    for name, cfg in plan.items():
        try:
            new = _handler(cfg)(modules[name], cfg)
        except ValueError as err:  # e.g. a group size that does not divide this layer's in_features
            raise ValueError(f"cannot quantize layer {name!r}: {err}; exclude it with filter_fn or overrides") from None
        if getattr(new, "quant_config", None) is None:  # a handler may record its per-layer choices in a copy
            new.quant_config = cfg  # read by accelerando.quant.io to rebuild the layer on load
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantConfig]:
    """Module name -> config of every layer ``quantize_`` replaced."""
    return {n: m.quant_config for n, m in model.named_modules() if hasattr(m, "quant_config")}


def has_per_tensor_layers(model: nn.Module) -> bool:
    """Whether any quantized layer of ``model`` takes one activation scale per call (``act_scale="tensor"``)."""
    return any(getattr(m, "act_scale", None) == "tensor" for m in model.modules())


def require_linear(module: nn.Module, config: QuantConfig) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{type(config).__name__} quantizes nn.Linear only, got {type(module).__name__}")
    return module


@register_handler(RTNConfig)
def _rtn(module: nn.Module, config: RTNConfig) -> nn.Module:
    linear = require_linear(module, config)
    return QuantLinear.from_float(
        linear,
        config.w_bits,
        config.a_bits,
        config.group_size,
        act_scale=config.act_scale,
        reduce_range=config.reduce_range,
    )


@register_handler(Int8DynamicConfig)
def _int8_dynamic(module: nn.Module, config: Int8DynamicConfig) -> nn.Module:
    linear = require_linear(module, config)
    return QuantLinear.from_float(linear, 8, 8, None, full_range=True)
