"""FaultInjector: settings, validation, decisions and listeners."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from tradetree.sim.faults import FaultInjector, FaultSettings


def test_defaults_are_healthy_and_updates_are_partial():
    f = FaultInjector()
    assert f.settings == FaultSettings()
    f.update(drop_fill_records=True)
    f.update(reject_orders=True)
    assert f.settings.drop_fill_records and f.settings.reject_orders
    f.clear("drop_fill_records")
    assert not f.settings.drop_fill_records and f.settings.reject_orders
    f.clear_all()
    assert f.settings == FaultSettings()


@pytest.mark.parametrize("changes", [{"nope": True}, {"rest_error_rate": 1.5}, {"rest_error_kind": "418"}])
def test_invalid_updates_change_nothing(changes):
    f = FaultInjector()
    f.update(drop_order_updates=True)
    with pytest.raises(ValidationError):
        f.update(**changes)
    assert f.settings == FaultSettings(drop_order_updates=True)
    with pytest.raises(KeyError):
        f.clear("nope")


def test_rest_fault_decisions_respect_rate_and_paths():
    f = FaultInjector(seed=5)
    assert f.rest_fault_for("/api/v5/trade/order") is None
    f.set_rest_errors(1.0, "429", paths=("/api/v5/trade/",))
    assert f.rest_fault_for("/api/v5/trade/order") == "429"
    assert f.rest_fault_for("/api/v5/market/ticker") is None
    f.set_rest_errors(0.3, "5xx")
    hits = sum(f.rest_fault_for("/api/v5/x") == "5xx" for _ in range(2000))
    assert 450 < hits < 750
    g = FaultInjector(seed=5)
    g.set_rest_errors(0.3, "5xx")
    h = FaultInjector(seed=5)
    h.set_rest_errors(0.3, "5xx")
    assert [g.rest_fault_for("/a") for _ in range(50)] == [h.rest_fault_for("/a") for _ in range(50)]


def test_cut_listeners_and_change_listeners():
    f = FaultInjector()
    cuts, changes = [], []
    listener = lambda: cuts.append(threading.get_ident())  # noqa: E731
    f.add_cut_listener(listener)
    f.add_change_listener(changes.append)
    f.cut_ws()
    f.set_freeze_market_data()
    f.remove_cut_listener(listener)
    f.cut_ws()
    assert len(cuts) == 1 and changes[-1].freeze_market_data


def test_concurrent_updates_from_threads_do_not_lose_settings():
    f = FaultInjector()
    names = ["drop_fill_records", "drop_order_updates", "reject_orders", "freeze_market_data"]

    def flip(name):
        for _ in range(200):
            f.update(**{name: True})

    threads = [threading.Thread(target=flip, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(getattr(f.settings, n) for n in names)
