"""The training loop shared by the codec and generator trainers: learning-rate schedule, optimiser step, CSV loss
log, periodic evaluation, checkpoints, time budget and the final checkpoint on any exit (also Ctrl-C, and SIGTERM,
which background jobs get from ``kill``: a shell's background jobs ignore SIGINT).

A trainer supplies a ``step_fn(step) -> (loss, extras)`` that draws its batch and returns the scalar loss (with a
graph) and a dict of extra scalar tensors to log; the loop does the backward pass, gradient clipping and the
optimiser step, so both models are trained by the same code.
"""

import csv
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

__all__ = ["LoopConfig", "cosine_lr", "run_loop"]


@dataclass
class LoopConfig:
    steps: int
    lr: float
    warmup: int
    log_every: int
    ckpt_every: int
    max_minutes: float | None = None  # stop (with a checkpoint) before this wall-clock budget runs out
    eval_every: int | None = None  # None: no periodic evaluation
    clip_norm: float = 1.0

    @classmethod
    def of(cls, train_cfg) -> "LoopConfig":
        """The loop settings of a trainer's config: every field of this class that ``train_cfg`` also has."""
        names = [f.name for f in fields(cls)]
        return cls(**{n: getattr(train_cfg, n) for n in names if hasattr(train_cfg, n)})


def cosine_lr(step: int, lr: float, warmup: int, steps: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``lr`` down to ``lr / 10`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def run_loop(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    cfg: LoopConfig,
    step: int,
    step_fn: Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    save_checkpoint: Callable[[int], None],
    log_path: Path,
    log_columns: list[str],
    evaluate: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
    after_step: Callable[[int], None] | None = None,
) -> int:
    """Train from ``step`` to ``cfg.steps`` (or the time budget); returns the last step reached.

    ``log_path`` is a CSV with columns ``step, lr, loss, *log_columns, seconds`` (the header is written when the
    file is new); ``step_fn``'s extras must hold ``log_columns``. ``save_checkpoint(step)`` runs every
    ``cfg.ckpt_every`` steps and once more on the way out, whatever the reason. ``after_step(step)`` runs right after
    each optimiser step (e.g. to update an EMA of the weights).
    """
    from tqdm import tqdm

    new = not log_path.exists() or log_path.stat().st_size == 0
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new:
        writer.writerow(["step", "lr", "loss", *log_columns, "seconds"])
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress, mininterval=5)
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops like Ctrl-C: checkpoint, then exit

        def _terminate(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while step < cfg.steps:
            lr = cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, extras = step_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            step += 1
            if after_step is not None:
                after_step(step)
            bar.update(1)
            if step % cfg.log_every == 0:
                row = [step, f"{lr:.3g}", f"{loss.item():.4f}"]
                row += [f"{extras[c].item():.4f}" for c in log_columns]
                writer.writerow([*row, f"{time.time() - t0:.0f}"])
                log.flush()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if evaluate is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                evaluate(step)
            if step % cfg.ckpt_every == 0:
                save_checkpoint(step)
            if cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes:
                break
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        bar.close()
        log.close()
        save_checkpoint(step)
    return step
