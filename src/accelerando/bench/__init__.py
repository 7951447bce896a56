"""The benchmark runner behind ``accelerando bench``: prompt suites, variants (model + techniques), the runner, the
report and the comparison of two runs. See ``docs/bench.md``.

Techniques plug in without touching the runner::

    from accelerando.bench import register_technique

    def my_technique(pipeline, options):  # options: the KEY=VALUE items of the variant spec
        ...
        return pipeline

    register_technique("mytech", my_technique)   # then: --variants builtin,fast=builtin+mytech:level=2
"""

from accelerando.bench.prompts import BenchPrompt, PromptSet, available_suites, load_suite
from accelerando.bench.variants import (
    TechniqueSpec,
    Variant,
    known_techniques,
    parse_variant,
    parse_variants,
    register_technique,
    unregister_technique,
)

__all__ = [
    "BenchConfig",
    "BenchPrompt",
    "PromptSet",
    "TechniqueSpec",
    "Variant",
    "available_suites",
    "known_techniques",
    "load_suite",
    "parse_variant",
    "parse_variants",
    "register_technique",
    "run_bench",
    "unregister_technique",
]


def __getattr__(name: str):
    if name in ("run_bench", "BenchConfig"):  # imports torch: keep `import accelerando.bench` cheap
        from accelerando.bench import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'accelerando.bench' has no attribute {name!r}")
