"""Compiled kernels for model ops, applied from outside the model files (the models stay plain eager PyTorch)."""

from accelerando.kernels.frame_norm import compile_frame_norms, frame_norms_compiled, uncompile_frame_norms

__all__ = ["compile_frame_norms", "frame_norms_compiled", "uncompile_frame_norms"]
