"""Property: the final state depends only on the set of fills, never on delivery.

Any interleaving of the fills, with duplicates, delivered by several
concurrent writers (each its own connection, each a different layer), one by
one (``apply_fill``) or in pages of any size and order (``apply_fills``, as the
poller does), must leave the same positions, order applied sizes and audit
trail as applying each fill once in canonical order -- on real Redis and on
fakeredis. An exact
(Fraction) model of the accounting rules checks that this common answer is
also the right one.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction

import fakeredis
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradetree.core.store import UNATTRIBUTED_STRATEGY, RedisStore
from tradetree.core.types import (
    Fill,
    FillLayer,
    Instrument,
    InstrumentKind,
    Order,
    OrderState,
    OrderType,
    Side,
)

D = Decimal

SPOT = Instrument(
    venue="okx",
    inst_id="ETH-USDT",
    kind=InstrumentKind.SPOT,
    base="ETH",
    quote="USDT",
    tick_size=D("0.01"),
    lot_size=D("0.00000001"),
    min_size=D("0.0001"),
)
SWAP = Instrument(
    venue="okx",
    inst_id="ETH-USDT-SWAP",
    kind=InstrumentKind.SWAP,
    base="ETH",
    quote="USDT",
    settle="USDT",
    contract_value=D("0.1"),
    tick_size=D("0.01"),
    lot_size=D("0.01"),
    min_size=D("0.01"),
)
INSTRUMENTS = {i.inst_id: i for i in (SPOT, SWAP)}
STRATEGIES = ("alpha", "beta")
WRITER_LAYERS = (FillLayer.WS, FillLayer.POLL, FillLayer.HEALTH)


@dataclass(frozen=True)
class Case:
    orders: tuple[Order, ...]
    fills: tuple[Fill, ...]
    deliveries: tuple[tuple[int, int], ...]  # (fill index, writer index), in send order
    # Each writer sends its deliveries in pages of these sizes, cycled; a page of one goes
    # through apply_fill, a larger one through apply_fills.
    page_sizes: tuple[int, ...] = (1,)


@st.composite
def cases(draw) -> Case:
    orders = []
    for i in range(draw(st.integers(1, 4))):
        inst = draw(st.sampled_from((SPOT, SWAP)))
        orders.append(
            Order(
                client_order_id=f"o{i}",
                strategy_id=draw(st.sampled_from(STRATEGIES)),
                venue=inst.venue,
                inst_id=inst.inst_id,
                side=draw(st.sampled_from(Side)),
                type=OrderType.MARKET,
                size=D(100),
                state=OrderState.LIVE,
                venue_order_id=f"V{i}",
                created_ms=1,
                updated_ms=1,
            )
        )
    fills = []
    for t in range(draw(st.integers(1, 12))):
        which = draw(st.integers(0, len(orders)))  # len(orders): an order nobody recorded
        if which < len(orders):
            order = orders[which]
            inst, side = INSTRUMENTS[order.inst_id], order.side
            coid, void = order.client_order_id, order.venue_order_id
            if draw(st.booleans()):
                coid = None  # only the venue order id: attribution through the index
        else:
            inst = draw(st.sampled_from((SPOT, SWAP)))
            side = draw(st.sampled_from(Side))
            coid, void = "ghost", None
        size = D(draw(st.integers(1, 3000))) * (D("0.01") if inst is SWAP else D("0.001"))
        price = D(draw(st.integers(180_000, 220_000))) / 100
        fee, fee_ccy = D(0), ""
        fee_kind = draw(st.sampled_from(("none", "quote", "base")))
        if fee_kind == "quote":
            fee, fee_ccy = (size * price * D("0.0005")).quantize(D("0.00000001")), "USDT"
        elif fee_kind == "base" and inst is SPOT and side is Side.BUY:
            fee = (size * D("0.001")).quantize(D("0.00000001"), rounding=ROUND_DOWN)
            fee_ccy = "ETH"
        fills.append(
            Fill(
                venue=inst.venue,
                inst_id=inst.inst_id,
                trade_id=f"t{t}",
                client_order_id=coid,
                venue_order_id=void,
                side=side,
                price=price,
                size=size,
                fee=fee,
                fee_ccy=fee_ccy,
                ts_ms=draw(st.integers(0, 4)),  # few timestamps: ties are common
                layer=FillLayer.WS,
            )
        )
    copies = draw(st.lists(st.integers(1, 3), min_size=len(fills), max_size=len(fills)))
    sends = [i for i, n in enumerate(copies) for _ in range(n)]
    order_of_sends = draw(st.permutations(sends))
    writers = draw(
        st.lists(st.integers(0, 2), min_size=len(sends), max_size=len(sends))
    )
    page_sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    return Case(
        tuple(orders),
        tuple(fills),
        tuple(zip(order_of_sends, writers, strict=True)),
        tuple(page_sizes),
    )


# -- the exact model ----------------------------------------------------------------


def _fold(state, fill: Fill, inst: Instrument):
    """The accounting rules of apply_fill.lua, in exact arithmetic."""
    qty, avg, rpnl, fees, count = state
    size, price, cv = Fraction(fill.size), Fraction(fill.price), Fraction(inst.contract_value)
    delta = size * fill.side.sign
    new_qty = qty + delta
    if qty == 0:
        avg = price
    elif (qty > 0) == (delta > 0):
        avg = (abs(qty) * avg + size * price) / abs(new_qty)
    else:
        rpnl += min(abs(qty), size) * cv * (price - avg) * (1 if qty > 0 else -1)
        if new_qty == 0:
            avg = Fraction(0)
        elif (new_qty > 0) != (qty > 0):
            avg = price
    if fill.fee_ccy == inst.base and fill.fee:
        after_fee = new_qty - Fraction(fill.fee)
        if new_qty != 0 and after_fee != 0 and (new_qty > 0) == (after_fee > 0):
            avg = avg * new_qty / after_fee
        else:
            rpnl -= new_qty * cv * avg
            avg = Fraction(0) if after_fee == 0 else price
        new_qty = after_fee
    elif fill.fee:
        fees += Fraction(fill.fee)
    return new_qty, avg, rpnl, fees, count + 1


def _close(a: Decimal, b: Fraction) -> bool:
    return abs(Fraction(a) - b) <= Fraction(1, 10**6) * max(1, abs(b))


def check_against_model(case: Case, positions, strategy_of: dict[str, str]) -> None:
    canonical = sorted(case.fills, key=lambda f: (f.ts_ms, f.key))
    model: dict[tuple[str, str], tuple] = {}
    last_ts: dict[tuple[str, str], int] = {}
    for fill in canonical:
        owner = strategy_of.get(fill.client_order_id or "") or strategy_of.get(
            "V:" + (fill.venue_order_id or ""), UNATTRIBUTED_STRATEGY
        )
        key = (owner, fill.inst_id)
        state = model.get(key, (Fraction(0), Fraction(0), Fraction(0), Fraction(0), 0))
        model[key] = _fold(state, fill, INSTRUMENTS[fill.inst_id])
        last_ts[key] = fill.ts_ms
    assert {(p.strategy_id, p.inst_id) for p in positions} == set(model)
    for p in positions:
        qty, avg, rpnl, fees, count = model[(p.strategy_id, p.inst_id)]
        assert Fraction(p.qty) == qty  # exact
        assert (p.fill_count, p.updated_ms) == (count, last_ts[(p.strategy_id, p.inst_id)])
        assert _close(p.avg_price, avg) and _close(p.realized_pnl, rpnl) and _close(p.fees, fees)


# -- running one example ------------------------------------------------------------------


async def _setup_orders(store: RedisStore, orders: tuple[Order, ...]) -> None:
    for order in orders:
        pending = order.model_copy(update={"state": OrderState.PENDING_NEW, "venue_order_id": None})
        assert await store.record_order(pending)
        await store.update_order(order)


def _pages(fills: list[Fill], sizes: tuple[int, ...]) -> list[list[Fill]]:
    pages, start, i = [], 0, 0
    while start < len(fills):
        size = sizes[i % len(sizes)]
        pages.append(fills[start:start + size])
        start, i = start + size, i + 1
    return pages


def test_pages_cut_every_delivery_once_in_order():
    fills = [Fill(venue="okx", inst_id="ETH-USDT", trade_id=str(i), side=Side.BUY, price=D(1),
                  size=D(1), ts_ms=i, layer=FillLayer.WS) for i in range(7)]
    pages = _pages(fills, (2, 1))
    assert [len(p) for p in pages] == [2, 1, 2, 1, 1]
    assert [f for p in pages for f in p] == fills
    assert _pages([], (3,)) == []


async def _deliver(
    store: RedisStore, layer: FillLayer, fills: list[Fill], page_sizes: tuple[int, ...]
) -> list[tuple[str, bool]]:
    """Send ``fills`` as ``layer``; return (trade id, applied) of every delivery."""
    outcomes = []
    for page in _pages([f.model_copy(update={"layer": layer}) for f in fills], page_sizes):
        if len(page) == 1:
            results = [await store.apply_fill(page[0], INSTRUMENTS[page[0].inst_id])]
        else:
            results = await store.apply_fills([(f, INSTRUMENTS[f.inst_id]) for f in page])
        for fill, result in zip(page, results, strict=True):
            assert not isinstance(result, Exception), result
            outcomes.append((fill.trade_id, result.applied))
    return outcomes


async def run_case(case: Case, new_client) -> None:
    namespace = f"tt-prop-{uuid.uuid4().hex[:12]}"
    setup_client = new_client()
    writer_clients = [new_client() for _ in WRITER_LAYERS]
    store = RedisStore(setup_client, namespace)
    reference = RedisStore(setup_client, namespace + "-ref")
    try:
        await _setup_orders(store, case.orders)
        await _setup_orders(reference, case.orders)

        per_writer: list[list[Fill]] = [[] for _ in WRITER_LAYERS]
        for fill_index, writer in case.deliveries:
            per_writer[writer].append(case.fills[fill_index])
        outcomes = await asyncio.gather(
            *(
                _deliver(RedisStore(c, namespace), layer, fills, case.page_sizes)
                for c, layer, fills in zip(writer_clients, WRITER_LAYERS, per_writer, strict=True)
            )
        )
        # Every delivery answered, and exactly one per fill reported that it applied it.
        applied_trades = sorted(t for o in outcomes for t, applied in o if applied)
        assert applied_trades == sorted(f.trade_id for f in case.fills)
        assert sum(len(o) for o in outcomes) == len(case.deliveries)
        for fill in sorted(case.fills, key=lambda f: (f.ts_ms, f.key)):
            await reference.apply_fill(fill, INSTRUMENTS[fill.inst_id])

        positions = await store.positions()
        assert positions == await reference.positions()
        for coid in [o.client_order_id for o in case.orders] + ["ghost"]:
            assert await store.applied_size(coid) == await reference.applied_size(coid)

        audit = await store.audit_entries()
        trade_ids = [e.fill.trade_id for e in audit]
        assert sorted(trade_ids) == sorted(f.trade_id for f in case.fills)  # each exactly once
        assert {e.fill.trade_id for e in await reference.audit_entries()} == set(trade_ids)
        layers_of_trade: dict[str, set[FillLayer]] = {}
        for fill_index, writer in case.deliveries:
            layers_of_trade.setdefault(case.fills[fill_index].trade_id, set()).add(
                WRITER_LAYERS[writer]
            )
        for entry in audit:
            assert entry.fill.layer in layers_of_trade[entry.fill.trade_id]

        counts = await store.fill_layer_counts()
        for writer, layer in enumerate(WRITER_LAYERS):
            assert counts[layer.value]["delivered"] == len(per_writer[writer])
            assert counts[layer.value]["applied"] == sum(e.fill.layer is layer for e in audit)

        strategy_of = {o.client_order_id: o.strategy_id for o in case.orders}
        strategy_of.update({f"V:{o.venue_order_id}": o.strategy_id for o in case.orders})
        check_against_model(case, positions, strategy_of)
    finally:
        await store.reset_namespace()
        await reference.reset_namespace()
        for c in [setup_client, *writer_clients]:
            await c.aclose()


_SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.integration
@settings(max_examples=30, **_SETTINGS)
@given(case=cases())
def test_any_concurrent_delivery_matches_canonical_application_on_real_redis(redis_url, case):
    asyncio.run(run_case(case, lambda: aioredis.Redis.from_url(redis_url)))


@settings(max_examples=40, **_SETTINGS)
@given(case=cases())
def test_any_concurrent_delivery_matches_canonical_application_on_fakeredis(case):
    server = fakeredis.FakeServer()
    asyncio.run(run_case(case, lambda: fakeredis.FakeAsyncRedis(server=server)))
