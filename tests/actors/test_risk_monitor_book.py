"""The control API's reads through the RiskMonitor actor carry the valued book (Ray + real Redis)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal as D

import pytest

from tradetree.actors.risk_monitor import RiskMonitorActor
from tradetree.core import (
    Fill,
    FillLayer,
    Instrument,
    InstrumentKind,
    Mark,
    MarkBook,
    Order,
    OrderType,
    RedisStore,
    Side,
)
from tradetree.risk import RiskConfig

pytestmark = pytest.mark.integration

SWAP = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                  settle="USDT", contract_value=D("0.01"), tick_size=D("0.1"), lot_size=D("0.01"), min_size=D("0.01"))
# The monitor's own configuration decides the mark age bound (here 60 s) and the contract values.
CFG = RiskConfig(loop_interval_secs=3600, max_mark_age_secs=60, contract_values={"okx:BTC-USDT-SWAP": D("0.01")})


async def test_positions_and_snapshot_are_valued_with_the_monitors_rules(ray_session, redis_url, real_redis,
                                                                         namespace):
    store = RedisStore(real_redis, namespace)
    sid = f"S-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    await store.record_order(Order(client_order_id="o1", strategy_id=sid, venue="okx", inst_id=SWAP.inst_id,
                                   side=Side.SELL, type=OrderType.MARKET, size=D(5), created_ms=now, updated_ms=now))
    await store.apply_fill(Fill(venue="okx", inst_id=SWAP.inst_id, trade_id="t1", client_order_id="o1",
                                side=Side.SELL, price=D("60000"), size=D(5), fee=D("1.5"), fee_ccy="USDT",
                                ts_ms=now, layer=FillLayer.WS), SWAP)
    # 45 s old: stale under RiskConfig's default 30 s bound, fresh under this monitor's 60 s
    await MarkBook(real_redis, namespace).write("okx", {SWAP.inst_id: Mark(price=D("59500"), ts_ms=now - 45_000,
                                                                            recv_ms=now - 45_000)})
    monitor = RiskMonitorActor.options(name=f"risk-{sid}").remote(CFG, redis_url=redis_url, namespace=namespace,
                                                                 alerter_name=f"alerter-{sid}")
    try:
        await monitor.start.remote()
        (row,) = await monitor.positions.remote()
        # short 5 at 60000, mark 59500: (59500 - 60000) * -5 * 0.01 = 25; total 25 - 1.5; 5 * 59500 * 0.01
        assert (row["strategy_id"], row["qty"], row["fill_count"]) == (sid, "-5", 1)
        assert (D(row["unrealized_pnl"]), D(row["total_pnl"]), D(row["notional"])) == (D(25), D("23.5"), D(2975))
        assert D(row["mark_price"]) == D(59500) and row["mark_age_ms"] >= 45_000
        snap = await monitor.snapshot.remote()
        (again,) = snap["positions"]
        assert {k: v for k, v in again.items() if k != "mark_age_ms"} == {
            k: v for k, v in row.items() if k != "mark_age_ms"}
        assert D(snap["strategy_pnl"][sid]["total_pnl"]) == D("23.5") and snap["strategy_pnl"][sid]["unvalued"] == []
        assert snap["marks"]["okx"][SWAP.inst_id]["price"] == "59500"
        assert {"strategies", "kill_flag", "venues", "fills_by_layer"} <= set(snap)
    finally:
        await monitor.stop.remote()
        ray_session.kill(monitor)
