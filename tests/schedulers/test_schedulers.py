import math

import pytest
import torch

from accelerando.schedulers import (
    SCHEDULES,
    FlowMatchConfig,
    FlowMatchEulerScheduler,
    FlowMatchHeunScheduler,
    SchedulerOutput,
    make_timesteps,
    randn_tensor,
    sample,
    shift_time,
)

SCHEDULERS = [FlowMatchEulerScheduler, FlowMatchHeunScheduler]
MU, SIGMA = 1.5, 0.5


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact rectified-flow velocity for data ~ N(MU, SIGMA^2) per element; the flow maps x1 to MU + SIGMA * x1."""
    t = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    a = 1 - t
    gain = (t - a * SIGMA**2) / (a**2 * SIGMA**2 + t**2)
    return -MU + gain * (x - a * MU)


def point_velocity(x0: torch.Tensor):
    """Exact velocity when the data is the single point x0: v = (x - x0) / t."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x - x0) / t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))

    return fn


def gaussian_error(scheduler_cls, n_steps: int, schedule: str = "shifted") -> float:
    noise = randn_tensor((4, 8, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(gaussian_velocity, noise, scheduler_cls(FlowMatchConfig(schedule=schedule)), n_steps)
    return (out - (MU + SIGMA * noise)).abs().max().item()


# (1) timesteps


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t_max", [1.0, 0.6])
def test_timesteps_monotonic_with_exact_endpoints(schedule, t_max):
    t = make_timesteps(10, schedule=schedule, t_max=t_max)
    assert t.shape == (11,) and t.dtype == torch.float32
    assert t[0] == torch.tensor(t_max, dtype=torch.float32) and t[-1] == 0
    assert (t[1:] < t[:-1]).all()


def test_shifted_schedule_matches_sd3_formula():
    s = 2.5
    u = torch.linspace(1, 0, 9, dtype=torch.float64)
    t = make_timesteps(8, schedule="shifted", shift=s, dtype=torch.float64)
    torch.testing.assert_close(t, s * u / (1 + (s - 1) * u))
    assert shift_time(0.5, 3.0) == pytest.approx(0.75)
    torch.testing.assert_close(make_timesteps(8, "shifted", shift=1.0), make_timesteps(8, "linear"))


def test_remix_grid_is_the_full_curve_cut_at_t_max():
    full = make_timesteps(8, "shifted", dtype=torch.float64)
    cut = make_timesteps(4, "shifted", t_max=full[4].item(), dtype=torch.float64)
    torch.testing.assert_close(cut, full[4:])
    assert (make_timesteps(3, t_max=0.0) == 0).all()


def test_cosine_is_symmetric_about_half():
    t = make_timesteps(4, "cosine", dtype=torch.float64)
    torch.testing.assert_close(t + t.flip(0), torch.ones(5, dtype=torch.float64))


def test_scheduler_timesteps_are_the_model_evaluation_times():
    euler, heun = FlowMatchEulerScheduler(), FlowMatchHeunScheduler()
    euler.set_timesteps(4)
    heun.set_timesteps(4)
    grid = euler.t_grid.float()
    torch.testing.assert_close(euler.timesteps, grid[:-1])
    torch.testing.assert_close(heun.timesteps, grid[[0, 1, 1, 2, 2, 3, 3]])
    assert (euler.timesteps > 0).all() and (heun.timesteps > 0).all()  # never evaluated at t = 0


# (2) integration accuracy against exact velocity fields


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
@pytest.mark.parametrize("n_steps", [1, 4])
def test_point_data_is_reached_exactly(scheduler_cls, n_steps):
    x0 = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))
    noise = randn_tensor(x0.shape, torch.Generator().manual_seed(2))
    out = sample(point_velocity(x0), noise, scheduler_cls(), n_steps)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_gaussian_error_decreases_with_steps(schedule):
    for cls, order in [(FlowMatchEulerScheduler, 1), (FlowMatchHeunScheduler, 2)]:
        errs = [gaussian_error(cls, n, schedule) for n in (4, 8, 16, 32)]
        assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), (cls.__name__, errs)
        # roughly first / second order: doubling the steps divides the error by ~2 / ~4
        assert errs[-2] / errs[-1] > 2 ** (order - 0.5), (cls.__name__, errs)
    assert gaussian_error(FlowMatchHeunScheduler, 64, schedule) < 1e-2


@pytest.mark.parametrize("schedule, n_steps, factor", [("linear", 17, 5), ("linear", 33, 10), ("cosine", 33, 4)])
def test_heun_beats_euler_at_equal_model_evaluations(schedule, n_steps, factor):
    evals = FlowMatchHeunScheduler().n_model_evals(n_steps)  # 2n - 1
    assert FlowMatchEulerScheduler().n_model_evals(evals) == evals
    heun = gaussian_error(FlowMatchHeunScheduler, n_steps, schedule)
    euler = gaussian_error(FlowMatchEulerScheduler, evals, schedule)
    assert heun * factor < euler, (heun, euler)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_heun_beats_euler_with_many_steps_on_every_schedule(schedule):
    assert gaussian_error(FlowMatchHeunScheduler, 33, schedule) < gaussian_error(FlowMatchEulerScheduler, 65, schedule)


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_model_call_count(scheduler_cls, n_steps):
    calls = []

    def model_fn(x, t):
        calls.append(t)
        assert t.shape == (x.shape[0],)
        return gaussian_velocity(x, t)

    sched = scheduler_cls()
    sample(model_fn, torch.randn(3, 4), sched, n_steps)
    assert len(calls) == sched.n_model_evals(n_steps) == len(sched.timesteps)
    assert len(calls) == (n_steps if scheduler_cls is FlowMatchEulerScheduler else 2 * n_steps - 1)


def test_few_step_euler_shifted():
    sched = FlowMatchEulerScheduler(FlowMatchConfig(schedule="shifted", shift=3.0))
    assert sched.n_model_evals(4) == 4
    x0 = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(5))
    noise = randn_tensor(x0.shape, torch.Generator().manual_seed(6))
    torch.testing.assert_close(sample(point_velocity(x0), noise, sched, 4), x0, atol=1e-5, rtol=0)  # straight flow
    assert gaussian_error(FlowMatchEulerScheduler, 4) < gaussian_error(FlowMatchEulerScheduler, 1)


def test_step_accepts_index_or_time_and_returns_output():
    sched = FlowMatchHeunScheduler()
    sched.set_timesteps(3)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    by_index = x
    for i, t in enumerate(sched.timesteps):
        out = sched.step(gaussian_velocity(by_index, t.expand(2)), i, by_index)
        assert isinstance(out, SchedulerOutput)
        by_index = out.prev_sample
    sched.set_timesteps(3)
    by_time = x
    for t in sched.timesteps:  # repeated times resolve to the next expected index
        by_time = sched.step(gaussian_velocity(by_time, t.expand(2)), t, by_time).prev_sample
    torch.testing.assert_close(by_time, by_index, atol=0, rtol=0)


def test_heun_corrector_without_predictor_raises():
    sched = FlowMatchHeunScheduler()
    sched.set_timesteps(3)
    x = torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="predictor"):
        sched.step(x, 1, x)


def test_step_before_set_timesteps_raises():
    with pytest.raises(RuntimeError, match="set_timesteps"):
        FlowMatchEulerScheduler().step(torch.zeros(1), 0, torch.zeros(1))


# (3) determinism


def test_randn_tensor_seeded():
    shape = (3, 4, 5)
    a = randn_tensor(shape, torch.Generator().manual_seed(7))
    b = randn_tensor(shape, torch.Generator().manual_seed(7))
    c = randn_tensor(shape, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    half = randn_tensor(shape, torch.Generator().manual_seed(7), device="cpu", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half, a.to(torch.bfloat16))


def test_randn_tensor_generator_list_is_per_item():
    gens = [torch.Generator().manual_seed(s) for s in (10, 11, 12)]
    batch = randn_tensor((3, 4, 5), gens)
    for i, s in enumerate((10, 11, 12)):
        alone = randn_tensor((1, 4, 5), torch.Generator().manual_seed(s))
        assert torch.equal(batch[i : i + 1], alone)
    with pytest.raises(ValueError, match="one generator per batch item"):
        randn_tensor((2, 4), [torch.Generator()])


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
def test_sampling_is_deterministic_under_a_seed(scheduler_cls):
    def run(seed: int) -> torch.Tensor:
        noise = randn_tensor((2, 6, 4), torch.Generator().manual_seed(seed))
        return sample(gaussian_velocity, noise, scheduler_cls(), 4)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


# (4) upcasting in step


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
def test_step_upcasts_bf16(scheduler_cls):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 4, generator=gen).to(torch.bfloat16)
    v = torch.randn(2, 8, 4, generator=gen).to(torch.bfloat16)
    sched = scheduler_cls()
    sched.set_timesteps(4)
    out = sched.step(v, 0, x).prev_sample
    assert out.dtype == torch.bfloat16
    dt = sched.t_grid[1].item() - sched.t_grid[0].item()
    ref = x.float() + dt * v.float()
    assert torch.equal(out, ref.to(torch.bfloat16))  # fp32 arithmetic, one rounding at the end
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)


def test_heun_bf16_sampling_matches_fp32():
    noise = randn_tensor((2, 8, 4), torch.Generator().manual_seed(4))
    ref = sample(gaussian_velocity, noise, FlowMatchHeunScheduler(), 6)
    out = sample(gaussian_velocity, noise.to(torch.bfloat16), FlowMatchHeunScheduler(), 6)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=2e-2)


# (5) remix


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
def test_remix_t_max_zero_returns_x_init(scheduler_cls):
    x_init = torch.randn(2, 5, 3)
    noise = torch.randn(2, 5, 3)

    def model_fn(x, t):
        raise AssertionError("the model must not be called at t_max = 0")

    out = sample(model_fn, noise, scheduler_cls(), 4, t_max=0.0, x_init=x_init)
    assert torch.equal(out, x_init) and out is not x_init


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
def test_remix_starts_from_add_noise_at_t_max(scheduler_cls):
    x_init, noise, target = torch.randn(3, 2, 5, 3).unbind(0)
    first = []

    def model_fn(x, t):
        if not first:
            first.append((x.clone(), t.clone()))
        return point_velocity(target)(x, t)

    sched = scheduler_cls()
    out = sample(model_fn, noise, sched, 3, t_max=0.4, x_init=x_init)
    x_start, t_start = first[0]
    torch.testing.assert_close(t_start, torch.full((2,), 0.4))
    torch.testing.assert_close(x_start, 0.6 * x_init + 0.4 * noise)
    torch.testing.assert_close(out, target, atol=1e-5, rtol=0)


def test_add_noise_formula_and_per_item_t():
    sched = FlowMatchEulerScheduler()
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.equal(sched.add_noise(x0, noise, 0.0), x0)
    torch.testing.assert_close(sched.add_noise(x0, noise, 1.0), noise)
    t = torch.tensor([0.25, 0.75])
    expected = torch.stack([0.75 * x0[0] + 0.25 * noise[0], 0.25 * x0[1] + 0.75 * noise[1]])
    torch.testing.assert_close(sched.add_noise(x0, noise, t), expected)
    x16 = x0.to(torch.bfloat16)
    assert torch.equal(sched.add_noise(x16, noise.to(torch.bfloat16), 0.0), x16)


def test_remix_without_x_init_raises():
    with pytest.raises(ValueError, match="x_init"):
        sample(gaussian_velocity, torch.randn(1, 2), FlowMatchEulerScheduler(), 2, t_max=0.5)


# (6) validation


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"schedule": "quadratic"}, "quadratic"),
        ({"shift": 0.0}, "shift=0.0"),
        ({"shift": -2.0}, "shift=-2.0"),
        ({"shift": math.inf}, "shift=inf"),
        ({"shift": math.nan}, "shift=nan"),
        ({"version": 99}, "version=99"),
    ],
)
def test_bad_config_raises(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        FlowMatchConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"n_steps": 0}, "n_steps=0"),
        ({"n_steps": 2.5}, "n_steps=2.5"),
        ({"n_steps": 4, "t_max": 1.5}, "t_max=1.5"),
        ({"n_steps": 4, "t_max": -0.1}, "t_max=-0.1"),
        ({"n_steps": 4, "schedule": "exp"}, "exp"),
        ({"n_steps": 4, "shift": -1.0}, "shift=-1.0"),
    ],
)
def test_bad_timestep_args_raise(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        make_timesteps(**kwargs)
    if "schedule" not in kwargs and "shift" not in kwargs:
        with pytest.raises(ValueError, match=needle.split("=")[0]):
            FlowMatchHeunScheduler().set_timesteps(kwargs["n_steps"], t_max=kwargs.get("t_max", 1.0))


def test_config_round_trips():
    cfg = FlowMatchConfig(schedule="cosine", shift=2.0)
    assert FlowMatchConfig(**cfg.to_dict()) == cfg
