"""The tradetree CLI: failing starts are clear and send nothing; positions are read-only."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal

import pytest

from tradetree.cli import main
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Instrument, InstrumentKind, Side


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_malformed_config_stops_with_file_and_field(tmp_path, capsys):
    bad = tmp_path / "engine.yaml"
    bad.write_text("venues: [{name: okx, rest_url: 'http://127.0.0.1:1'}]\nbogus_key: 1\n")
    assert main(["run", "--config", str(bad), "--no-dashboard", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "bogus_key" in err and "venues.0" in err


def test_bad_strategy_params_stop_the_start(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(
        "class: MeanReversion\nversion: v1\nvenue: okx\nsymbols: [BTC-USDT-SWAP]\nparams: {size: '-1'}\n")
    cfg = tmp_path / "engine.yaml"
    cfg.write_text("venues: [{name: okx}]\nstrategy_files: [s.yaml]\n")
    assert main(["run", "--config", str(cfg), "--no-dashboard", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "MeanReversion_v1_BTC" in err and "size" in err


def test_unreachable_redis_stops_the_start_before_anything_runs(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr("tradetree.sim.server.SimulatorThread.start", lambda self: started.append("sim"))
    cfg = tmp_path / "engine.yaml"
    cfg.write_text(f"redis: {{url: 'redis://127.0.0.1:{_closed_port()}/0'}}\nvenues: [{{name: okx}}]\n")
    assert main(["run", "--config", str(cfg), "--no-dashboard", "--duration", "1"]) == 3
    err = capsys.readouterr().err
    assert "Redis unavailable" in err and "No order was sent" in err
    assert started == []  # no simulator, hence no venue connection and no order


def test_missing_live_credentials_stop_the_start(tmp_path, capsys, monkeypatch):
    for var in ("OKX_API_KEY", "OKX_SECRET_KEY", "OKX_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "engine.yaml"
    cfg.write_text("venues: [{name: okx, rest_url: 'http://127.0.0.1:1', ws_url: 'ws://127.0.0.1:1/ws/v5'}]\n")
    assert main(["run", "--config", str(cfg), "--no-dashboard", "--duration", "1"]) == 2
    assert "OKX_API_KEY" in capsys.readouterr().err


@pytest.mark.integration
def test_positions_reads_redis(redis_url, namespace, capsys):
    inst = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                      settle="USDT", contract_value=Decimal("0.01"), tick_size=Decimal("0.1"),
                      lot_size=Decimal("0.01"), min_size=Decimal("0.01"))

    async def seed():
        store = await RedisStore.connect(redis_url, namespace)
        try:
            await store.apply_fill(Fill(venue="okx", inst_id="BTC-USDT-SWAP", trade_id="1", side=Side.SELL,
                                        price=Decimal("60000"), size=Decimal("3"), ts_ms=1,
                                        layer=FillLayer.WS), inst)
        finally:
            await store.close()

    asyncio.run(seed())
    try:
        assert main(["positions", "--json", "--redis-url", redis_url, "--namespace", namespace]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["strategy_id"], r["inst_id"], r["qty"]) for r in rows] == [("_unattributed", "BTC-USDT-SWAP", "-3")]
        assert main(["positions", "--redis-url", redis_url, "--namespace", namespace]) == 0
        assert "BTC-USDT-SWAP" in capsys.readouterr().out
    finally:
        async def cleanup():
            store = await RedisStore.connect(redis_url, namespace)
            await store.reset_namespace()
            await store.close()
        asyncio.run(cleanup())


def test_export_writes_one_strategys_fills_as_a_run_folder(redis_url, namespace, tmp_path, capsys):
    from tradetree.core.types import Order, OrderType
    from tradetree.sim.backtest.compare import load_run

    inst = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                      settle="USDT", contract_value=Decimal("0.01"), tick_size=Decimal("0.1"),
                      lot_size=Decimal("0.01"), min_size=Decimal("0.01"))
    sid = "MeanReversion_v1_BTC"

    async def seed():
        store = await RedisStore.connect(redis_url, namespace)
        try:
            for coid, strategy in (("c1", sid), ("c2", "Other_v1_BTC")):
                await store.record_order(Order(client_order_id=coid, strategy_id=strategy, venue="okx",
                                               inst_id=inst.inst_id, side=Side.BUY, type=OrderType.MARKET,
                                               size=Decimal("2"), created_ms=1, updated_ms=1))
            for trade_id, coid, ts in (("1", "c1", 1_000), ("2", "c1", 1_700_000_000_000), ("3", "c2", 5_000)):
                await store.apply_fill(Fill(venue="okx", inst_id=inst.inst_id, trade_id=trade_id,
                                            client_order_id=coid, side=Side.BUY, price=Decimal("60000"),
                                            size=Decimal("1"), ts_ms=ts, layer=FillLayer.WS), inst)
        finally:
            await store.close()

    asyncio.run(seed())
    try:
        common = ["--redis-url", redis_url, "--namespace", namespace]
        assert main(["export", sid, *common, "--out", str(tmp_path / "all")]) == 0
        run = load_run(tmp_path / "all")
        assert [t.trade_id for t in run.trades] == ["1", "2"]  # not the other strategy's
        assert run.meta["strategy_id"] == sid and run.meta["kind"] == "paper"
        assert str(tmp_path / "all") in capsys.readouterr().out
        assert main(["export", sid, *common, "--since", "2023-11-14T22:00:00", "--out", str(tmp_path / "late")]) == 0
        assert [t.trade_id for t in load_run(tmp_path / "late").trades] == ["2"]
        assert main(["export", sid, *common, "--since", "yesterday"]) == 2
        assert "--since" in capsys.readouterr().err
    finally:
        async def cleanup():
            store = await RedisStore.connect(redis_url, namespace)
            await store.reset_namespace()
            await store.close()
        asyncio.run(cleanup())
