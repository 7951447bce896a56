"""Helpers shared by the bench tests (imported by conftest.py and the test modules)."""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from accelerando.bench.prompts import PROMPTS_SCHEMA
from accelerando.errors import UserError
from accelerando.testing.models import tiny_pipeline


def write_suite(path: Path, n: int = 2, duration: float = 1.5) -> Path:
    """A small suite file: ``n`` prompts of ``duration`` seconds."""
    keys = ["D major", "A minor", "F major"]
    prompts = [
        {
            "id": f"p{i}",
            "prompt": f"test prompt {i}",
            "bpm": 90.0 + 20 * i,
            "key": keys[i % 3],
            "meter": "4/4",
            "instruments": ["piano", "string_quartet", "choir"][i % 3],
            "duration": duration,
            "seed": 7 + i,
            "collection": ["bach", "essenFolksong", "bach"][i % 3],
            "family": ["keyboard", "strings", "voice"][i % 3],
            "clip_id": f"clip{i}",
            "score_id": f"score{i}",
        }
        for i in range(n)
    ]
    data = {
        "schema": PROMPTS_SCHEMA,
        "name": "tiny",
        "version": 1,
        "generation": {"steps": 2, "cfg": 1.0, "sampler": "euler"},  # no CFG: half the compute
        "prompts": prompts,
    }
    path.write_text(json.dumps(data))
    return path


class Loader:
    """Stands in for accelerando.load_pipeline: a tiny pipeline per call, counting the calls."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, model):
        if str(model) == "builtin":
            raise UserError("no built-in generator is shipped in this version yet")
        self.calls.append(str(model))
        return tiny_pipeline()


def _noop(pipe, options):
    return pipe


def _perturb(pipe, options):
    g = torch.Generator().manual_seed(int(options.get("seed", 0)))
    with torch.no_grad():
        for p in pipe.model.dit.parameters():
            p.add_(float(options["scale"]) * torch.randn(p.shape, generator=g))
    return pipe


class ToyEmbedder:
    """A 2-d embedding every 0.1 s (RMS and zero-crossing rate), so FAD is defined on a few seconds of audio."""

    name = "toy"
    sample_rate = 24000
    dim = 2
    version = "emb-toy-test"

    def embed(self, y):
        w = self.sample_rate // 10
        frames = y[: len(y) // w * w].reshape(-1, w)
        rms = np.sqrt(np.mean(frames**2, axis=1))
        zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
        return np.stack([np.log(rms + 1e-6), zcr], axis=1).astype(np.float64)


def cli(argv: list[str]) -> int:
    """``accelerando ARGV`` with only the bench command registered (as cli.main does for every command)."""
    from accelerando.cli import bench
    from accelerando.cli.main import _Parser

    parser = _Parser(prog="accelerando")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    bench.register(sub)
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
