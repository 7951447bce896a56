from accelerando.listen.config import load_config
from accelerando.listen.design import abx_x, mushra_slots, steps


def test_orders_are_per_listener_and_reproducible(config_path):
    cfg = load_config(config_path)
    names = sorted(cfg.all_condition_names)
    orders = {lid: mushra_slots(cfg, lid, 0) for lid in (f"l{k}" for k in range(20))}
    assert all(sorted(o) == names for o in orders.values())
    assert orders["l0"] == mushra_slots(load_config(config_path), "l0", 0)  # same after a reload/restart
    assert len({tuple(o) for o in orders.values()}) > 10  # 5! orders: independent listeners rarely share one
    xs = [abx_x(cfg, f"l{k}", 0, 0) for k in range(40)]
    assert 5 < xs.count("A") < 35


def test_steps_cover_every_page_once(config_path):
    cfg = load_config(config_path)
    order = steps(cfg, "someone")
    assert sorted((s.kind, s.index, s.repeat) for s in order) == [
        ("abx", 0, 0),
        ("abx", 0, 1),
        ("mushra", 0, 0),
        ("mushra", 1, 0),
    ]
    assert [s.kind for s in order] == ["mushra", "mushra", "abx", "abx"]
    assert order == steps(cfg, "someone")
