"""The pure parts of the kill switch: config, backoff, and the wind-down planner."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tradetree.core.backoff import BackoffPolicy
from tradetree.core.types import Order, OrderState, OrderType, Position, Side
from tradetree.risk.kill_switch import (
    AwaitOrders,
    CancelOrders,
    KillSwitchConfig,
    SubmitClip,
    backoff_delay,
    kill_scope,
    order_is_settled,
    plan_wind_down,
)

D = Decimal
CFG = KillSwitchConfig(max_clip_size=D(1))
INST = "BTC-USDT-SWAP"


def pos(strategy: str, qty: str, *, venue: str = "okx", inst: str = INST) -> Position:
    return Position(strategy_id=strategy, venue=venue, inst_id=inst, qty=D(qty))


def order(coid: str, strategy: str, *, state: OrderState = OrderState.LIVE, type_: OrderType = OrderType.LIMIT,
          filled: str = "0", venue: str = "okx", inst: str = INST, side: Side = Side.SELL) -> Order:
    return Order(client_order_id=coid, strategy_id=strategy, venue=venue, inst_id=inst, side=side, type=type_,
                 size=D(1), price=D(100) if type_ is OrderType.LIMIT else None, state=state,
                 filled_size=D(filled), created_ms=1, updated_ms=1)


def plan(positions, orders=(), applied=None, *, strategy_id=None, venues=(), swept=frozenset({"okx"}), config=CFG):
    return plan_wind_down(strategy_id=strategy_id, positions=list(positions), orders=list(orders),
                          applied=applied or {}, venues=venues, swept=set(swept), config=config)


def clips(p) -> list[tuple[str, str, Decimal, bool]]:
    return [(a.intent.strategy_id, a.intent.side.value, a.intent.size, a.intent.reduce_only)
            for a in p.actions if isinstance(a, SubmitClip)]


# -- config and backoff --------------------------------------------------------------------------


def test_config_rejects_bad_bounds_and_unknown_fields():
    with pytest.raises(ValidationError):
        KillSwitchConfig()  # max_clip_size has no default on purpose
    with pytest.raises(ValidationError):
        KillSwitchConfig(max_clip_size=D(1), backoff_min_secs=5, backoff_max_secs=1)
    with pytest.raises(ValidationError):
        KillSwitchConfig(max_clip_size=D(1), lease_secs=10, call_timeout_secs=5, backoff_max_secs=30)
    with pytest.raises(ValidationError):
        KillSwitchConfig(max_clip_size=D(1), max_clip_size_by_inst={"okx:X": D(0)})
    with pytest.raises(ValidationError):
        KillSwitchConfig(max_clip_size=D(1), retries=3)
    cfg = KillSwitchConfig(max_clip_size=D(2), max_clip_size_by_inst={"okx:ETH-USDT-SWAP": D(5)})
    assert cfg.clip_size("okx", "ETH-USDT-SWAP") == D(5) and cfg.clip_size("okx", INST) == D(2)
    with pytest.raises(ValidationError):
        cfg.step_max_attempts = 2  # frozen


def test_backoff_grows_within_bounds_and_is_capped():
    cfg = KillSwitchConfig(max_clip_size=D(1), backoff_min_secs=1, backoff_max_secs=8)
    rng = random.Random(7)
    for attempt, (lo, hi) in enumerate([(1, 2), (2, 4), (4, 8), (4, 8), (4, 8)], start=1):
        for _ in range(50):
            assert lo <= backoff_delay(attempt, cfg, rng) <= hi
    assert backoff_delay(10_000, cfg, rng) <= 8  # no overflow for absurd attempt numbers
    with pytest.raises(ValueError):
        backoff_delay(0, cfg, rng)


def _backoff_before_the_shared_policy(attempt: int, cfg: KillSwitchConfig, rng: random.Random) -> float:
    # The kill switch's own formula before it moved onto core.backoff, kept to pin the delays.
    ceiling = min(cfg.backoff_max_secs, cfg.backoff_min_secs * 2.0 ** min(attempt, 60))
    floor = max(cfg.backoff_min_secs, ceiling / 2)
    return rng.uniform(floor, ceiling)


@pytest.mark.parametrize("low, high", [(0.5, 30.0), (1, 8), (1, 1.5), (0.3, 0.3), (0.7, 500.0)])
def test_backoff_delays_are_exactly_the_ones_before_the_shared_policy(low, high):
    cfg = KillSwitchConfig(max_clip_size=D(1), backoff_min_secs=low, backoff_max_secs=high, lease_secs=high + 100)
    ours, before = random.Random(11), random.Random(11)
    attempts = [*range(1, 40), 200, 10_000]
    assert [backoff_delay(n, cfg, ours) for n in attempts] == [
        _backoff_before_the_shared_policy(n, cfg, before) for n in attempts]
    assert cfg.backoff_policy() == BackoffPolicy(base_secs=2 * low, cap_secs=high, jitter="equal", floor_secs=low)


def test_scope_names_escape_strategy_ids():
    assert kill_scope(None) == "global"
    assert kill_scope("MR_v10_BTC") == "strategy:MR_v10_BTC"
    assert kill_scope("a:b") == "strategy:a%3Ab"


# -- settledness ---------------------------------------------------------------------------------


def test_an_order_settles_only_when_terminal_and_its_fills_are_applied():
    assert not order_is_settled(order("1", "A", state=OrderState.LIVE), D(0))
    assert not order_is_settled(order("1", "A", state=OrderState.PENDING_NEW), D(0))
    # the incident: the venue says filled, the fills never reached the store
    assert not order_is_settled(order("1", "A", state=OrderState.FILLED, filled="1"), D(0))
    assert order_is_settled(order("1", "A", state=OrderState.FILLED, filled="1"), D(1))
    assert order_is_settled(order("1", "A", state=OrderState.CANCELED, filled="0"), D(0))
    assert order_is_settled(order("1", "A", state=OrderState.REJECTED), D(0))


# -- the planner ---------------------------------------------------------------------------------


def test_sweeps_every_venue_before_any_clip():
    p = plan([pos("A", "2"), pos("B", "-1", venue="binance")], venues=["okx", "binance", "bybit"], swept=set())
    assert [a.venue for a in p.actions] == ["binance", "bybit", "okx"]
    assert all(isinstance(a, CancelOrders) and a.strategy_id is None for a in p.actions)
    assert not p.flat and len(p.remaining) == 2


def test_clips_are_reduce_only_market_orders_of_at_most_the_clip_size():
    p = plan([pos("A", "2.5"), pos("B", "-0.4", inst="ETH-USDT-SWAP")], swept={"okx"})
    assert clips(p) == [("A", "sell", D(1), True), ("B", "buy", D("0.4"), True)]
    intent = p.actions[0].intent
    assert intent.type is OrderType.MARKET and intent.price is None and intent.venue == "okx"
    per_inst = KillSwitchConfig(max_clip_size=D(1), max_clip_size_by_inst={f"okx:{INST}": D("0.2")})
    assert clips(plan([pos("A", "2.5")], config=per_inst)) == [("A", "sell", D("0.2"), True)]


def test_strategy_scope_leaves_other_strategies_alone():
    positions = [pos("A", "1"), pos("B", "3", inst="ETH-USDT-SWAP")]
    orders = [order("oa", "A", state=OrderState.LIVE), order("ob", "B")]
    p = plan(positions, orders, strategy_id="B", swept=set())
    assert [(a.venue, a.strategy_id) for a in p.actions] == [("okx", "B")]
    assert [r.strategy_id for r in p.remaining] == ["B"]
    assert [w.client_order_ids for w in p.waiting] == [("ob",)]


def test_a_position_with_an_unsettled_order_waits_instead_of_closing_twice():
    positions = [pos("A", "2"), pos("B", "1", inst="ETH-USDT-SWAP")]
    in_flight = order("m1", "A", state=OrderState.FILLED, type_=OrderType.MARKET, filled="1")
    p = plan(positions, [in_flight], applied={"m1": D(0)})
    assert p.waiting == (AwaitOrders(strategy_id="A", venue="okx", inst_id=INST, client_order_ids=("m1",)),)
    assert clips(p) == [("B", "sell", D(1), True)]  # the other position is not held up
    assert not any(isinstance(a, CancelOrders) for a in p.actions)  # a market order is not re-cancelled
    settled = plan(positions, [in_flight], applied={"m1": D(1)})
    assert clips(settled) == [("A", "sell", D(1), True), ("B", "sell", D(1), True)]


def test_orders_still_working_after_the_sweep_are_cancelled_again():
    p = plan([pos("A", "1")], [order("l1", "A", state=OrderState.LIVE)], swept={"okx"})
    assert [(type(a).__name__, getattr(a, "venue", None)) for a in p.actions] == [("CancelOrders", "okx")]
    assert "l1" in p.actions[0].why and clips(p) == []


def test_flat_only_when_positions_are_zero_orders_settled_and_venues_swept():
    assert plan([pos("A", "0")], swept={"okx"}).flat
    assert plan([], swept=set()).flat
    assert not plan([], venues=["okx"], swept=set()).flat
    assert not plan([pos("A", "0")], [order("l1", "A")], swept={"okx"}).flat
    done = order("f1", "A", state=OrderState.FILLED, type_=OrderType.MARKET, filled="1")
    assert plan([pos("A", "0")], [done], applied={"f1": D(1)}).flat


def test_reduce_only_clips_never_exceed_the_venue_net():
    # A +3 and B -1 on one instrument: the venue holds +2, so only 2 can be sold reduce-only.
    p = plan([pos("A", "3"), pos("B", "-1")], config=KillSwitchConfig(max_clip_size=D(10)))
    assert clips(p) == [("A", "sell", D(2), True)]
    assert [(b.strategy_id, b.venue_net) for b in p.blocked] == [("B", D(0))]


def test_offsetting_positions_are_blocked_unless_allowed():
    positions = [pos("A", "1"), pos("B", "-1")]
    p = plan(positions)
    assert clips(p) == [] and {b.strategy_id for b in p.blocked} == {"A", "B"} and not p.flat
    allowed = plan(positions, config=KillSwitchConfig(max_clip_size=D(5), allow_offsetting_orders=True))
    assert clips(allowed) == [("A", "sell", D(1), False), ("B", "buy", D(1), True)]


def test_strategy_scope_uses_other_strategies_for_the_venue_net():
    # B alone is killed; A (not in scope) is short as much as B is long: the venue is flat.
    p = plan([pos("A", "-2"), pos("B", "2")], strategy_id="B")
    assert clips(p) == [] and p.blocked[0].strategy_id == "B"


positions_st = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C"]), st.sampled_from(["okx", "bnc"]), st.sampled_from(["X", "Y"]),
              st.integers(-40, 40)),
    max_size=8, unique_by=lambda t: t[:3],
)


@settings(max_examples=150, deadline=None)
@given(raw=positions_st, clip=st.integers(1, 7), allow=st.booleans(), scope=st.sampled_from([None, "A"]))
def test_clips_only_reduce_and_reduce_only_never_flips_a_venue(raw, clip, allow, scope):
    positions = [Position(strategy_id=s, venue=v, inst_id=i, qty=D(q) / 4) for s, v, i, q in raw]
    cfg = KillSwitchConfig(max_clip_size=D(clip) / 4, allow_offsetting_orders=allow)
    p = plan(positions, strategy_id=scope, swept={"okx", "bnc"}, config=cfg)
    qty = {(x.strategy_id, x.venue, x.inst_id): x.qty for x in positions}
    net: dict[tuple[str, str], Decimal] = {}
    for x in positions:
        net[(x.venue, x.inst_id)] = net.get((x.venue, x.inst_id), D(0)) + x.qty
    seen = set()
    for a in p.actions:
        assert isinstance(a, SubmitClip)
        i = a.intent
        key = (i.strategy_id, i.venue, i.inst_id)
        assert key not in seen, "one clip per position per plan"
        seen.add(key)
        assert scope is None or i.strategy_id == scope
        q = qty[key]
        assert q != 0 and 0 < i.size <= min(abs(q), cfg.max_clip_size)
        assert (i.side is Side.SELL) == (q > 0), "a clip always reduces its position"
        before = net[(i.venue, i.inst_id)]
        after = before + i.side.sign * i.size
        if i.reduce_only:
            assert abs(after) < abs(before) and (after == 0 or (after > 0) == (before > 0))
        else:
            assert allow
        net[(i.venue, i.inst_id)] = after
    in_scope = [x for x in positions if x.qty != 0 and (scope is None or x.strategy_id == scope)]
    assert len(p.remaining) == len(in_scope)
    assert {(b.strategy_id, b.venue, b.inst_id) for b in p.blocked}.isdisjoint(seen)
    assert len(seen) + len(p.blocked) == len(in_scope)
    assert not (allow and p.blocked), "with offsetting orders allowed every position gets a clip"


def test_public_surface_is_what_all_claims():
    import tradetree.risk.kill_switch as module

    assert all(hasattr(module, name) for name in module.__all__)
    public = {n for n, v in vars(module).items()
              if not n.startswith("_") and getattr(v, "__module__", "") == module.__name__}
    assert public <= set(module.__all__)
