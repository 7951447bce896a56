import pytest
import torch

from accelerando.training.loop import LoopConfig, cosine_lr, run_loop


def test_cosine_lr_warms_up_then_decays_to_a_tenth():
    assert cosine_lr(0, 1.0, 4, 100) == pytest.approx(0.25)
    assert cosine_lr(3, 1.0, 4, 100) == pytest.approx(1.0)
    assert cosine_lr(4, 1.0, 4, 100) == pytest.approx(1.0)
    assert cosine_lr(100, 1.0, 4, 100) == pytest.approx(0.1)
    assert cosine_lr(500, 1.0, 4, 100) == pytest.approx(0.1)
    lrs = [cosine_lr(s, 1.0, 4, 100) for s in range(4, 101)]
    assert all(a >= b for a, b in zip(lrs[:-1], lrs[1:], strict=True))


def _setup(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def step_fn(step):
        loss = (model(x) - y).pow(2).mean()
        return loss, {"double": 2 * loss.detach()}

    return model, opt, step_fn


def test_loop_trains_logs_and_checkpoints(tmp_path):
    model, opt, step_fn = _setup(tmp_path)
    saved = []
    cfg = LoopConfig(steps=20, lr=0.1, warmup=1, log_every=5, ckpt_every=10)
    log = tmp_path / "log.csv"
    assert run_loop(model, opt, cfg, 0, step_fn, saved.append, log, ["double"], progress=False) == 20
    rows = [r.split(",") for r in log.read_text().splitlines()]
    assert rows[0] == ["step", "lr", "loss", "double", "seconds"]
    assert [int(r[0]) for r in rows[1:]] == [5, 10, 15, 20]
    assert float(rows[-1][2]) < float(rows[1][2]) and float(rows[1][3]) == pytest.approx(2 * float(rows[1][2]), 1e-3)
    assert saved == [10, 20, 20]
    # resuming appends to the same log without a second header
    cfg.steps = 25
    run_loop(model, opt, cfg, 20, step_fn, saved.append, log, ["double"], progress=False)
    assert log.read_text().count("step,") == 1 and log.read_text().splitlines()[-1].startswith("25,")


def test_an_interrupted_loop_still_checkpoints_its_last_step(tmp_path):
    model, opt, step_fn = _setup(tmp_path)

    def interrupted(step):
        if step == 7:
            raise KeyboardInterrupt
        return step_fn(step)

    saved = []
    cfg = LoopConfig(steps=20, lr=0.1, warmup=1, log_every=5, ckpt_every=100)
    with pytest.raises(KeyboardInterrupt):
        run_loop(model, opt, cfg, 0, interrupted, saved.append, tmp_path / "log.csv", ["double"], progress=False)
    assert saved == [7]


def test_sigterm_stops_the_loop_with_a_checkpoint_and_restores_the_handler(tmp_path):
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    model, opt, step_fn = _setup(tmp_path)
    before = signal.getsignal(signal.SIGTERM)

    def terminated(step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return step_fn(step)

    saved = []
    cfg = LoopConfig(steps=50, lr=0.1, warmup=1, log_every=5, ckpt_every=100)
    with pytest.raises(KeyboardInterrupt):
        run_loop(model, opt, cfg, 0, terminated, saved.append, tmp_path / "log.csv", ["double"], progress=False)
    assert saved and saved[0] <= 6
    assert signal.getsignal(signal.SIGTERM) == before
