"""Server lifecycle, admin HTTP, raw signing rules, replay and latency through the server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import pytest

from tests.sim.conftest import FAST, ccxt_options, point
from tradetree import sim
from tradetree.sim.config import DEFAULT_API_KEY, DEFAULT_PASSPHRASE, DEFAULT_SECRET, SimulatorConfig
from tradetree.sim.matching import OrderRequest
from tradetree.sim.okx_rest import sign_okx
from tradetree.sim.server import SimulatorServer, SimulatorThread, banner


def test_public_surface():
    assert set(sim.__all__) >= {"SimulatorServer", "SimulatorThread", "serve_forever", "banner", "MatchingEngine",
                                "FaultInjector", "SimulatorConfig"}
    for name in sim.__all__:
        assert getattr(sim, name) is not None


def signed_headers(method: str, path: str, body: str = "", *, secret: str = DEFAULT_SECRET, ts: str | None = None):
    ts = ts or dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "OK-ACCESS-KEY": DEFAULT_API_KEY, "OK-ACCESS-PASSPHRASE": DEFAULT_PASSPHRASE, "OK-ACCESS-TIMESTAMP": ts,
        "OK-ACCESS-SIGN": sign_okx(secret, ts + method + path + body), "Content-Type": "application/json",
    }


async def test_signature_is_over_raw_path_query_and_body(sim):
    async with aiohttp.ClientSession() as http:
        path = "/api/v5/account/balance?ccy=BTC"
        async with http.get(sim.rest_url + path, headers=signed_headers("GET", path)) as r:
            body = await r.json()
            assert r.status == 200 and [d["ccy"] for d in body["data"][0]["details"]] == ["BTC"]
        # Signed for one query, sent with another.
        async with http.get(sim.rest_url + "/api/v5/account/balance?ccy=ETH",
                            headers=signed_headers("GET", path)) as r:
            assert r.status == 401 and (await r.json())["code"] == "50113"
        order = json.dumps([{"instId": "BTC-USDT", "side": "buy", "ordType": "market", "sz": "0.01"}],
                           separators=(",", ":"))
        headers = signed_headers("POST", "/api/v5/trade/batch-orders", order)
        tampered = order.replace("0.01", "0.02")
        async with http.post(sim.rest_url + "/api/v5/trade/batch-orders", data=tampered, headers=headers) as r:
            assert r.status == 401 and (await r.json())["code"] == "50113"
        async with http.post(sim.rest_url + "/api/v5/trade/batch-orders", data=order, headers=headers) as r:
            assert (await r.json())["data"][0]["sCode"] == "0"
        async with http.get(sim.rest_url + "/api/v5/account/balance") as r:
            assert r.status == 401 and (await r.json())["code"] == "50103"
        headers = signed_headers("GET", "/api/v5/account/balance", ts="yesterday")
        async with http.get(sim.rest_url + "/api/v5/account/balance", headers=headers) as r:
            assert (await r.json())["code"] == "50112"
        # Public endpoints need no signature; x-simulated-trading is accepted and ignored.
        async with http.get(sim.rest_url + "/api/v5/public/time", headers={"x-simulated-trading": "1"}) as r:
            assert r.status == 200 and (await r.json())["code"] == "0"
        async with http.get(sim.rest_url + "/api/v5/market/ticker?instId=NOPE-USDT") as r:
            assert (await r.json())["code"] == "51001"
        async with http.get(sim.rest_url + "/api/v5/nothing/here") as r:
            assert r.status == 404


async def test_admin_http(sim):
    async with aiohttp.ClientSession() as http:
        async with http.get(sim.admin_url + "/health") as r:
            health = await r.json()
            assert health["status"] == "ok" and "BTC-USDT" in health["instruments"]
        async with http.post(sim.admin_url + "/faults", json={"drop_fill_records": True}) as r:
            assert (await r.json())["drop_fill_records"] is True
        assert sim.faults.settings.drop_fill_records
        async with http.post(sim.admin_url + "/faults", json={"rest_error_rate": 7}) as r:
            assert r.status == 400
        async with http.post(sim.admin_url + "/faults", json={"unknown_fault": 1}) as r:
            assert r.status == 400
        async with http.get(sim.admin_url + "/faults") as r:
            assert (await r.json())["drop_fill_records"] is True and (await r.json())["rest_error_rate"] == 0
        async with http.post(sim.admin_url + "/faults/clear") as r:
            assert (await r.json())["drop_fill_records"] is False
        async with http.ws_connect(sim.ws_url + "/public") as ws:
            async with http.post(sim.admin_url + "/ws/cut") as r:
                assert (await r.json())["closed"] == 1
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4000
        with sim.lock:
            sim.engine.submit(OrderRequest("BTC-USDT-SWAP", "buy", "market", Decimal("2")), sim.venue_now_ms())
        async with http.get(sim.admin_url + "/account") as r:
            truth = await r.json()
        assert truth == sim.account_truth()
        assert truth["positions"] == {"BTC-USDT-SWAP": "2"} and len(truth["trades"]) >= 1
        assert set(truth["balances"]["USDT"]) == {"cash", "equity", "available", "frozen"}


def test_thread_lifecycle_faults_from_test_thread_and_banner():
    runner = SimulatorThread(SimulatorConfig(**FAST))
    server = runner.start()
    try:
        assert server.rest_url.startswith("http://127.0.0.1:") and server.ws_url.endswith("/ws/v5")
        assert server.admin_url == server.rest_url + "/admin"
        text = banner(server)
        assert server.rest_url in text and DEFAULT_API_KEY in text and DEFAULT_SECRET in text
        ex = point(ccxt.okx(ccxt_options(server)), server)
        ex.load_markets()
        server.faults.set_reject_orders()  # from this (non-loop) thread
        with pytest.raises(ccxt.InsufficientFunds):
            ex.create_order("BTC/USDT", "market", "buy", 0.01)
        server.faults.clear_all()
        ex.create_order("BTC/USDT", "market", "buy", 0.01)
        assert len(server.account_truth()["trades"]) >= 1
        with pytest.raises(RuntimeError):
            runner.start()
        assert runner.running
    finally:
        runner.stop()
        runner.stop()  # idempotent
    with pytest.raises(ccxt.NetworkError):
        ex.fetch_time()


def test_banner_hides_non_default_secrets():
    server = SimulatorServer(SimulatorConfig(secret_key="my-real-secret", warmup_bars=0))
    assert "my-real-secret" not in banner(server)


async def test_frozen_market_data_stops_ticks_and_latency_still_matches():
    server = SimulatorServer(SimulatorConfig(**{**FAST, "latency_ms": 100}))
    await server.start()
    try:
        server.faults.set_freeze_market_data()
        await asyncio.sleep(0.15)
        px = server.engine.mark_price("BTC-USDT")
        with server.lock:
            result = server.engine.submit(OrderRequest("BTC-USDT", "buy", "market", Decimal("0.01")),
                                          server.venue_now_ms())
        assert result.order.state == "live"  # latency: not matched yet
        await asyncio.sleep(0.4)
        assert server.engine.mark_price("BTC-USDT") == px and server.source.frozen
        assert server.engine.get_order(ord_id=result.order.ord_id).state == "filled"
        server.faults.clear_all()
        await asyncio.sleep(0.2)
        assert not server.source.frozen
    finally:
        await server.stop()
        await server.stop()


async def test_replay_file_drives_the_server(tmp_path):
    csv = tmp_path / "btc.csv"
    rows = ["timestamp_ms,open,high,low,close,volume"]
    for i in range(30):
        base = 100 + i
        rows.append(f"{1_700_000_000_000 + i * 60_000},{base},{base + 2},{base - 2},{base + 1},40")
    csv.write_text("\n".join(rows) + "\n")
    cfg = SimulatorConfig(**{**FAST, "time_scale": 600.0}, data_path=csv)
    server = SimulatorServer(cfg)
    await server.start()
    ex = point(ccxt_async.okx(ccxt_options(server)), server)
    try:
        await ex.load_markets()
        await asyncio.sleep(0.5)
        bars = await ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)
        # Replayed points are re-bucketed into venue-clock minutes; prices come from the file.
        assert bars and all(98 <= b[3] <= b[2] <= 131 for b in bars)
        assert (await ex.fetch_ticker("BTC/USDT:USDT"))["last"] >= 100  # the file drives every instrument
    finally:
        await ex.close()
        await server.stop()


def test_bind_failure_is_reported():
    with SimulatorThread(SimulatorConfig(**FAST)) as first:
        with pytest.raises(OSError):
            SimulatorThread(SimulatorConfig(**FAST, port=first.port)).start()


async def test_serve_forever_prints_banner_and_stops_on_cancel(capsys):
    from tradetree.sim.server import serve_forever

    task = asyncio.create_task(serve_forever(SimulatorConfig(**FAST)))
    for _ in range(100):
        await asyncio.sleep(0.05)
        out = capsys.readouterr().out
        if out:
            break
    assert "REST   http://127.0.0.1:" in out and DEFAULT_API_KEY in out
    url = out.split("REST   ")[1].split()[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/api/v5/public/time") as r:
            assert r.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url + "/api/v5/public/time")


def test_slow_timeout_fault_hits_client_timeout_and_does_not_block_stop():
    runner = SimulatorThread(SimulatorConfig(**FAST))
    server = runner.start()
    try:
        ex = point(ccxt.okx(ccxt_options(server)), server)
        ex.load_markets()
        ex.timeout = 300  # ms
        server.faults.update(rest_error_rate=1.0, rest_error_kind="timeout", rest_timeout_secs=30)
        with pytest.raises(ccxt.RequestTimeout):
            ex.fetch_ticker("BTC/USDT")
    finally:
        runner.stop()  # the parked request is abandoned after aiohttp's 1 s shutdown timeout
    assert not runner.running


async def test_stepped_clock_replays_one_point_per_step_from_an_aligned_start(tmp_path):
    """With ``stepped_clock`` every market step advances venue time by exactly tick_interval * time_scale,
    however late the step runs, and the replay's first candle opens on a multiple of the candle interval
    (so epoch-aligned paper bars hold whole candles); requests are stamped before the next step's point."""
    csv = tmp_path / "btc.csv"
    rows = ["timestamp_ms,open,high,low,close,volume"]
    for i in range(6):  # 8 s candles whose file times are off the 8 s grid
        base = 100 + i
        rows.append(f"{1_700_000_001_234 + i * 8_000},{base},{base + 2},{base - 2},{base + 1},40")
    csv.write_text("\n".join(rows) + "\n")
    cfg = SimulatorConfig(**{**FAST, "tick_interval_ms": 20, "time_scale": 100.0}, data_path=csv,
                          stepped_clock=True)
    server = SimulatorServer(cfg)
    start = server.source.now_ms
    shift = server.source.shift_ms
    assert start == 1_700_000_001_234 + shift and start % 8_000 == 0 and start <= server.wall_now_ms()
    assert server.step_ms() == 2_000  # a quarter candle: one point per step
    await server.start()
    try:
        seen = []
        for _ in range(200):
            await asyncio.sleep(0.005)
            with server.lock:
                now = server.source.now_ms
                stamped = server.venue_now_ms()
            seen.append(now)
            assert now <= stamped < now + 2_000
            if server.source.exhausted:
                break
        assert server.source.exhausted
        assert all((t - start) % 2_000 == 0 for t in seen)
        assert server.engine.mark_price("BTC-USDT") == Decimal("106")  # the last candle's close
    finally:
        await server.stop()
