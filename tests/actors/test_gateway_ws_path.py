"""The gateway's WS order/fill layer on fakeredis: what each kind of ``orders`` row does to the store.

These drive ``VenueGateway._on_private`` directly with OKX messages (no venue
needed), so every row shape, including the garbled and the incident ones, is
covered deterministically.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.actors.offline_gateway import SWAP, offline_gateway
from tradetree.actors.gateway import VenueGateway
from tradetree.actors.gateway_fanout import LocalTarget
from tradetree.core.errors import StoreUnavailable
from tradetree.core.marks import Mark, MarkBook
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.types import FillLayer, Order, OrderState, OrderType, Side


class Recorder:
    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.fills = []
        self.tickers = []

    def on_order_update(self, order):
        self.orders.append(order)

    def on_fill(self, fill):
        self.fills.append(fill)

    def on_ticker(self, ticker):
        self.tickers.append(ticker)


@pytest.fixture
async def gateway(fake_redis, namespace):
    gw, clock = offline_gateway(fake_redis, namespace)
    recorder = Recorder()
    gw._fanout.add(LocalTarget(recorder), [SWAP.inst_id], "s1")  # sync methods: delivered inline
    gw.recorder = recorder
    gw.clock = clock
    yield gw
    await gw._fanout.close()


async def record(gw: VenueGateway, coid: str = "c1", size: str = "3") -> Order:
    order = Order(client_order_id=coid, strategy_id="s1", venue="okx", inst_id=SWAP.inst_id, side=Side.BUY,
                  type=OrderType.MARKET, size=Decimal(size), created_ms=gw.clock.now_ms(),
                  updated_ms=gw.clock.now_ms())
    assert await gw._store.record_order(order)
    return order


def row(**fields):
    base = {"instType": "SWAP", "instId": SWAP.inst_id, "ordId": "501", "clOrdId": "c1", "side": "buy",
            "ordType": "market", "sz": "3", "state": "live", "accFillSz": "0", "avgPx": "",
            "cTime": "1700000000000", "uTime": "1700000000001", "tradeId": "", "fillPx": "", "fillSz": "0",
            "fillFee": "", "fillFeeCcy": "", "fillTime": ""}
    base.update(fields)
    return base


def fill_row(trade_id: str, fill_sz: str, acc: str, state: str, **fields):
    return row(state=state, accFillSz=acc, avgPx="60000", tradeId=trade_id, fillPx="60000", fillSz=fill_sz,
               fillFee="-0.3", fillFeeCcy="USDT", fillTime="1700000000100", **fields)


def push(*rows):
    return {"arg": {"channel": "orders", "instType": "ANY"}, "data": list(rows)}


async def test_fills_and_status_flow_into_the_store(gateway):
    await record(gateway)
    await gateway._on_private(push(row()))
    gateway.clock.advance(1)
    await gateway._on_private(push(fill_row("t1", "1", "1", "partially_filled")))
    gateway.clock.advance(1)
    await gateway._on_private(push(fill_row("t2", "2", "3", "filled")))
    store = gateway._store
    order = await store.get_order("c1")
    assert order.state is OrderState.FILLED
    assert order.venue_order_id == "501"
    assert order.filled_size == Decimal(3)
    position = await store.position("s1", "okx", SWAP.inst_id)
    assert position.qty == Decimal(3)
    assert await store.applied_size("c1") == Decimal(3)
    counts = await store.fill_layer_counts()
    assert counts["ws"]["applied"] == 2
    assert [e.fill.layer for e in await store.audit_entries()] == [FillLayer.WS, FillLayer.WS]
    assert [f.trade_id for f in gateway.recorder.fills] == ["t1", "t2"]
    assert [o.state for o in gateway.recorder.orders] == [
        OrderState.LIVE, OrderState.PARTIALLY_FILLED, OrderState.FILLED]
    # the WS path never untracks
    assert [o.client_order_id for o in await store.open_orders(venue="okx")] == ["c1"]


async def test_duplicate_push_counts_once(gateway):
    await record(gateway)
    message = push(fill_row("t1", "3", "3", "filled"))
    await gateway._on_private(message)
    await gateway._on_private(message)
    assert (await gateway._store.position("s1", "okx", SWAP.inst_id)).qty == Decimal(3)
    assert gateway.counters["ws_fills_applied"] == 1
    assert gateway.counters["ws_fills_duplicate"] == 1
    assert len(gateway.recorder.fills) == 1


async def test_incident_row_updates_status_but_applies_no_fill(gateway):
    await record(gateway)
    await gateway._on_private(push(row(state="filled", accFillSz="3", avgPx="60000", tradeId="", fillSz="0")))
    order = await gateway._store.get_order("c1")
    assert order.state is OrderState.FILLED and order.filled_size == Decimal(3)
    assert await gateway._store.applied_size("c1") == 0
    assert (await gateway._store.position("s1", "okx", SWAP.inst_id)).qty == 0
    assert gateway.recorder.fills == []


async def test_stale_update_after_terminal_is_skipped(gateway):
    await record(gateway)
    await gateway._on_private(push(fill_row("t1", "3", "3", "filled")))
    await gateway._on_private(push(row(state="live")))
    assert (await gateway._store.get_order("c1")).state is OrderState.FILLED
    assert gateway.counters["stale_updates"] == 1


async def test_unknown_order_fill_is_still_applied_unattributed(gateway):
    await gateway._on_private(push(fill_row("t9", "2", "2", "filled", clOrdId="", ordId="999")))
    position = await gateway._store.position("_unattributed", "okx", SWAP.inst_id)
    assert position.qty == Decimal(2)
    assert gateway.counters["unknown_orders"] == 1


async def test_order_found_by_venue_id_when_client_id_missing(gateway):
    await record(gateway)
    await gateway._on_private(push(row()))
    await gateway._on_private(push(fill_row("t1", "3", "3", "filled", clOrdId="")))
    assert (await gateway._store.get_order("c1")).state is OrderState.FILLED
    assert (await gateway._store.position("s1", "okx", SWAP.inst_id)).qty == Decimal(3)


async def test_garbled_rows_are_counted_and_do_not_stop_the_rest(gateway):
    await record(gateway)
    good_fill_bad_status = fill_row("t1", "1", "1", "exploded")
    bad_fill_good_status = fill_row("t2", "zzz", "2", "partially_filled")
    await gateway._on_private(push("not an object", good_fill_bad_status, bad_fill_good_status))
    store = gateway._store
    assert await store.applied_size("c1") == Decimal(1)  # the good fill of the row with a bad status
    order = await store.get_order("c1")
    assert order.state is OrderState.PARTIALLY_FILLED and order.filled_size == Decimal(2)
    assert gateway.counters["ws_garbled_rows"] == 4  # the non-object row counts for fill and status


async def test_fill_for_unlisted_instrument_is_an_apply_error_not_a_crash(gateway):
    await gateway._on_private(push(fill_row("t1", "1", "1", "filled", instId="DOGE-USDT-SWAP", clOrdId="")))
    assert gateway.counters["ws_apply_errors"] == 1


async def test_other_channels_are_ignored(gateway):
    await gateway._on_private({"arg": {"channel": "account"}, "data": [{"x": 1}]})
    assert gateway.counters["ws_garbled_rows"] == 0


async def test_tickers_fan_out_and_count_freshness(gateway):
    message = {"arg": {"channel": "tickers", "instId": SWAP.inst_id},
               "data": [{"instId": SWAP.inst_id, "last": "60000", "bidPx": "59999", "askPx": "60001", "ts": "1"},
                        {"instId": SWAP.inst_id, "last": "oops", "ts": "1"}]}
    await gateway._on_public(message)
    assert [t.last for t in gateway.recorder.tickers] == [Decimal(60000)]
    assert gateway.counters["ws_garbled_rows"] == 1
    assert gateway._probe_market_data(gateway.clock.now_ms()).ok
    gateway.clock.advance(60)
    assert not gateway._probe_market_data(gateway.clock.now_ms()).ok


def tickers(*rows):
    return {"arg": {"channel": "tickers", "instId": SWAP.inst_id},
            "data": [{"instId": SWAP.inst_id, "last": last, "ts": str(ts)} for last, ts in rows]}


async def test_marks_are_written_once_per_beat_with_the_latest_ticker(gateway, fake_redis, namespace):
    book = MarkBook(fake_redis, namespace)
    key = ("okx", SWAP.inst_id)
    await gateway._on_public(tickers(("60000", 1), ("60010", 2)))
    await gateway._on_public(tickers(("60020", 3)))
    assert await book.read([key]) == {}  # nothing written per ticker
    await gateway.flush_marks()
    now = gateway.clock.now_ms()
    assert await book.read([key]) == {key: Mark(price=Decimal(60020), ts_ms=3, recv_ms=now)}
    await fake_redis.delete(RedisKeys(namespace).marks("okx"))
    await gateway.flush_marks()  # no new ticker since: no write
    assert await book.read([key]) == {}


async def test_a_failed_mark_write_is_retried_unless_a_newer_ticker_replaced_it(gateway, fake_redis, namespace,
                                                                                monkeypatch):
    book = MarkBook(fake_redis, namespace)
    write = MarkBook.write

    async def down(self, venue, marks):
        raise StoreUnavailable("Redis unavailable: refused")

    await gateway._on_public(tickers(("60000", 1)))
    monkeypatch.setattr(MarkBook, "write", down)
    await gateway.flush_marks()
    assert gateway.counters["mark_errors"] == 1 and "marks" in gateway.last_error
    monkeypatch.setattr(MarkBook, "write", write)
    await gateway.flush_marks()
    assert (await book.read([("okx", SWAP.inst_id)]))[("okx", SWAP.inst_id)].price == Decimal(60000)

