"""Post-training quantization: configs, ``quantize_`` and the quantized layers it installs.

>>> from accelerando.quant import RTNConfig, quantize_
>>> quantize_(model, RTNConfig(w_bits=4, a_bits=8, group_size=32))  # doctest: +SKIP
>>> use_fused_kernels(True)  # compiled A8 kernels on CPU (see accelerando.quant.fused)  # doctest: +SKIP
>>> calibrate_(model, SVDQuantConfig(w_bits=4, a_bits=8, rank=32), [x1, x2])  # doctest: +SKIP
"""

from accelerando.quant.api import default_filter, quantize_, quantized_layers, register_handler
from accelerando.quant.calibrate import calibrate_
from accelerando.quant.configs import (
    QUANT_CONFIG_VERSION,
    Float8DynamicConfig,
    Int8DynamicConfig,
    QuantConfig,
    RTNConfig,
    SmoothQuantConfig,
    SVDQuantConfig,
    config_from_dict,
)
from accelerando.quant.fp8 import Float8Linear  # also registers the Float8DynamicConfig handler
from accelerando.quant.fused import fused_kernels_enabled, use_fused_kernels
from accelerando.quant.io import load_quantized, save_quantized
from accelerando.quant.linear import QuantLinear, group_folding_enabled, use_group_folding
from accelerando.quant.svd import SVDQuantLinear  # also registers the SmoothQuant / SVDQuant handlers

__all__ = [
    "QUANT_CONFIG_VERSION",
    "Float8DynamicConfig",
    "Float8Linear",
    "Int8DynamicConfig",
    "QuantConfig",
    "QuantLinear",
    "RTNConfig",
    "SVDQuantConfig",
    "SVDQuantLinear",
    "SmoothQuantConfig",
    "calibrate_",
    "config_from_dict",
    "default_filter",
    "fused_kernels_enabled",
    "group_folding_enabled",
    "load_quantized",
    "quantize_",
    "quantized_layers",
    "register_handler",
    "save_quantized",
    "use_fused_kernels",
    "use_group_folding",
]
