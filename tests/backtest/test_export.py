"""Export a run from the Redis audit stream: a round trip through the store gives back the same trades."""

from __future__ import annotations

import json
from decimal import Decimal

from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Instrument, InstrumentKind, Liquidity, Order, OrderType, Side
from tradetree.sim.backtest.compare import compare_runs, load_run
from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.engine import run_backtest
from tradetree.sim.backtest.export import export_run_from_redis
from tradetree.sim.backtest.report import write_run
from tradetree.sim.backtest.runfolder import trades_csv_text

SWAP = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                  settle="USDT", contract_value=Decimal("0.01"), tick_size=Decimal("0.1"),
                  lot_size=Decimal("0.01"), min_size=Decimal("0.01"))


def _fill(t, layer: FillLayer) -> Fill:
    return Fill(venue=t.venue, inst_id=t.inst_id, trade_id=t.trade_id, client_order_id=t.client_order_id,
                side=Side(t.side), price=t.price, size=t.size, fee=t.fee, fee_ccy=t.fee_ccy,
                liquidity=Liquidity(t.liquidity), ts_ms=t.ts_ms, layer=layer)


async def test_round_trip_through_redis_gives_the_same_trades(tmp_path, fake_redis, namespace, candles, mr_config):
    result = run_backtest(mr_config, candles, BacktestConfig())
    assert len(result.trades) >= 10
    store = RedisStore(fake_redis, namespace)
    for o in result.orders:
        await store.record_order(Order(
            client_order_id=o.client_order_id, strategy_id=mr_config.id, venue="okx", inst_id=o.inst_id,
            side=Side(o.side), type=OrderType(o.type), size=o.size, price=o.price, reduce_only=o.reduce_only,
            created_ms=o.submitted_ms, updated_ms=o.submitted_ms))
    for k, t in enumerate(result.trades):
        await store.apply_fill(_fill(t, FillLayer.WS), SWAP)
        if k % 3 == 0:  # the poller delivers some fills again: they must count once
            await store.apply_fill(_fill(t, FillLayer.POLL), SWAP)
    other = result.trades[0]
    await store.apply_fill(Fill(venue="okx", inst_id=SWAP.inst_id, trade_id="other-1", client_order_id="x1",
                                side=Side.BUY, price=other.price, size=Decimal(1), ts_ms=other.ts_ms,
                                layer=FillLayer.WS), SWAP)  # unattributed: not this strategy's

    out = await export_run_from_redis(store, mr_config.id, tmp_path / "paper")
    assert (out / "trades.csv").read_text() == trades_csv_text(result.trades)
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "paper" and meta["strategy_id"] == mr_config.id
    assert meta["contract_values"] == {"BTC-USDT-SWAP": "0.01"} and meta["fills_by_layer"] == {"ws": len(result.trades)}

    backtest = write_run(result, tmp_path / "backtest", plots=False)
    div = compare_runs(load_run(backtest), load_run(out))
    assert div.difference == 0 and len(div.pairs) == len(result.orders)


async def test_time_window_and_empty_export(tmp_path, fake_redis, namespace):
    store = RedisStore(fake_redis, namespace)
    out = await export_run_from_redis(store, "nobody", tmp_path / "empty", since_ms=5, until_ms=10)
    assert (out / "trades.csv").read_text().strip() == (
        "ts_ms,inst_id,side,price,size,fee,fee_ccy,liquidity,client_order_id,strategy_id,venue,trade_id")
    assert json.loads((out / "run.json").read_text())["start_ms"] == 5
