"""WebSocket: ccxt.pro watch_* calls and a plain websockets client."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import ccxt
import ccxt.pro as ccxtpro
import pytest
import websockets

from tests.sim.conftest import FAST, ccxt_options, point
from tradetree.sim.config import DEFAULT_API_KEY, DEFAULT_PASSPHRASE, DEFAULT_SECRET, SimulatorConfig
from tradetree.sim.matching import OrderRequest
from tradetree.sim.okx_rest import sign_okx
from tradetree.sim.server import SimulatorServer


@pytest.fixture
async def pro(sim):
    ex = point(ccxtpro.okx(ccxt_options(sim)), sim)
    await ex.load_markets()
    yield ex
    await ex.close()


def login_msg(secret: str = DEFAULT_SECRET, ts: str | None = None) -> str:
    ts = ts or str(int(time.time()))
    return json.dumps({"op": "login", "args": [{
        "apiKey": DEFAULT_API_KEY, "passphrase": DEFAULT_PASSPHRASE, "timestamp": ts,
        "sign": sign_okx(secret, ts + "GET/users/self/verify")}]})


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, pred, timeout: float = 5.0) -> dict:
    async def loop():
        while True:
            msg = json.loads(await ws.recv())
            if pred(msg):
                return msg
    return await asyncio.wait_for(loop(), timeout)


async def wait_for_cache(read, timeout: float = 5.0):
    """Poll a ccxt cache until ``read()`` returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := read()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("ccxt cache never got the expected rows")
        await asyncio.sleep(0.02)
    return value


async def test_watch_orders_and_my_trades_when_healthy(pro, sim):
    orders = asyncio.ensure_future(pro.watch_orders())
    trades = asyncio.ensure_future(pro.watch_my_trades())
    await asyncio.sleep(0.3)  # both subscriptions (one shared `orders` channel) are live
    await pro.create_order("BTC/USDT:USDT", "market", "buy", 2, params={"clientOrderId": "wsok1"})
    got = await asyncio.wait_for(orders, 5)
    mine = await asyncio.wait_for(trades, 5)
    assert got[-1]["clientOrderId"] == "wsok1" and got[-1]["id"] == "1"
    rest_ids = {t["trade_id"] for t in sim.account_truth()["trades"]}
    assert mine and {t["id"] for t in mine} <= rest_ids and mine[0]["order"] == "1"


async def test_drop_fill_records_order_status_arrives_fill_does_not(pro, sim):
    sim.faults.set_drop_fill_records()
    orders = asyncio.ensure_future(pro.watch_orders())
    trades = asyncio.ensure_future(pro.watch_my_trades())
    await asyncio.sleep(0.3)
    await pro.create_order("BTC/USDT:USDT", "market", "buy", 1)
    await asyncio.wait_for(orders, 5)
    # Later rows land in ccxt's order cache even when no watch is pending.
    closed = await wait_for_cache(lambda: [o for o in pro.orders if o["status"] == "closed"])
    assert closed[0]["filled"] == 1
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(trades, 0.7)
    # REST still has the fill: that is what the reconciler must find.
    assert len(await pro.fetch_my_trades("BTC/USDT:USDT")) == 1


async def test_watch_public_channels(pro, sim):
    ticker = await asyncio.wait_for(pro.watch_ticker("BTC/USDT"), 5)
    assert ticker["bid"] < ticker["ask"]
    book = await asyncio.wait_for(pro.watch_order_book("ETH/USDT"), 5)
    first_nonce = book["nonce"]
    for _ in range(3):
        book = await asyncio.wait_for(pro.watch_order_book("ETH/USDT"), 5)
    assert book["nonce"] > first_nonce and book["bids"][0][0] < book["asks"][0][0]
    book5 = await asyncio.wait_for(pro.watch_order_book("BTC/USDT:USDT", 5), 5)
    assert len(book5["bids"]) == 5
    trades = await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 5)
    assert trades and trades[-1]["price"] > 0
    bars = await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1m"), 5)
    assert bars[-1][4] > 0


async def test_watch_balance_and_positions(pro, sim):
    balance = await asyncio.wait_for(pro.watch_balance(), 5)  # snapshot on subscribe
    assert balance["USDT"]["total"] == 1_000_000
    assert await asyncio.wait_for(pro.watch_positions(), 5) == []  # snapshot on subscribe: flat
    positions = asyncio.ensure_future(pro.watch_positions())
    await pro.create_order("ETH/USDT:USDT", "market", "sell", 3)
    got = await asyncio.wait_for(positions, 5)
    assert [(p["symbol"], p["contracts"], p["side"]) for p in got if p["contracts"]] == [("ETH/USDT:USDT", 3, "short")]


async def test_ccxt_pro_bad_secret_fails_login(sim):
    ex = point(ccxtpro.okx(ccxt_options(sim)), sim)
    try:
        await ex.load_markets()
        ex.secret = "bad"  # markets loaded over REST; now only the WS login is wrong
        with pytest.raises(ccxt.AuthenticationError):
            await asyncio.wait_for(ex.watch_balance(), 5)
    finally:
        await ex.close()


async def test_plain_client_login_subscribe_ping(sim):
    async with websockets.connect(sim.ws_url + "/private") as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "orders", "instType": "ANY"}]}))
        assert (await recv_json(ws))["code"] == "60011"
        await ws.send(login_msg(secret="wrong"))
        assert (await recv_json(ws))["code"] == "60009"
        await ws.send(login_msg(ts=str(int(time.time()) - 120)))
        assert (await recv_json(ws))["code"] == "60006"
        await ws.send(login_msg())
        reply = await recv_json(ws)
        assert reply["event"] == "login" and reply["code"] == "0"
        arg = {"channel": "orders", "instType": "ANY"}
        await ws.send(json.dumps({"id": "sub42", "op": "subscribe", "args": [arg]}))
        assert await recv_json(ws) == {"event": "subscribe", "arg": arg, "connId": reply["connId"], "id": "sub42"}
        # The same subscription again: acked, but data is not duplicated.
        await ws.send(json.dumps({"op": "subscribe", "args": [arg]}))
        assert (await recv_json(ws))["event"] == "subscribe"
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "fills"}]}))
        await recv_json(ws)
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}))
        assert (await recv_json(ws))["code"] == "60018"  # public channel on the private socket

        with sim.lock:
            result = sim.engine.submit(OrderRequest("BTC-USDT", "buy", "market", Decimal("0.01")), sim.venue_now_ms())
        sim.publish(result.events)
        rows = []
        fills = []
        while len(rows) < 2 or not fills:
            msg = await recv_json(ws)
            if msg["arg"]["channel"] == "orders":
                rows += msg["data"]
            else:
                fills += msg["data"]
        assert [r["state"] for r in rows] == ["live", "filled"]
        assert rows[1]["tradeId"] == fills[0]["tradeId"] == "1" and rows[1]["fillSz"] == "0.01"
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"  # nothing duplicated queued before it


async def test_plain_client_public_books_chain_and_candle_confirm():
    server = SimulatorServer(SimulatorConfig(**{**FAST, "time_scale": 1200.0}))
    await server.start()
    try:
        async with websockets.connect(server.ws_url + "/public") as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]}))
            assert (await recv_json(ws))["event"] == "subscribe"
            snap = await recv_json(ws)
            assert snap["action"] == "snapshot" and snap["data"][0]["prevSeqId"] == -1
            seq = snap["data"][0]["seqId"]
            for _ in range(3):
                upd = await recv_json(ws)
                assert upd["action"] == "update" and upd["data"][0]["prevSeqId"] == seq
                seq = upd["data"][0]["seqId"]
            await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "candle1m", "instId": "BTC-USDT"}]}))
            assert (await recv_until(ws, lambda m: "event" in m))["code"] == "60018"  # candles live on /business
            await ws.send(json.dumps({"id": "u1", "op": "unsubscribe",
                                      "args": [{"channel": "books", "instId": "BTC-USDT"}]}))
            ack = await recv_until(ws, lambda m: m.get("event") == "unsubscribe")
            assert ack["id"] == "u1"
            await asyncio.sleep(0.2)  # several market steps: nothing more may arrive
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"
        async with websockets.connect(server.ws_url + "/business") as ws:
            arg = {"channel": "candle1m", "instId": "BTC-USDT"}
            await ws.send(json.dumps({"op": "subscribe", "args": [arg]}))
            await recv_json(ws)
            confirmed = await recv_until(ws, lambda m: m.get("data") and m["data"][0][8] == "1", timeout=10)
            assert len(confirmed["data"][0]) == 9 and confirmed["arg"] == arg
    finally:
        await server.stop()


async def test_cut_ws_closes_with_code_4000_and_ccxt_sees_network_error(pro, sim):
    async with websockets.connect(sim.ws_url + "/public") as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}))
        await recv_json(ws)
        orders = asyncio.ensure_future(pro.watch_orders())
        await asyncio.sleep(0.3)
        sim.faults.cut_ws()
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd.code == 4000
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(orders, 5)
    # The next watch reconnects and logs in again.
    again = asyncio.ensure_future(pro.watch_orders())
    await asyncio.sleep(0.3)
    await pro.create_order("BTC/USDT", "market", "buy", 0.01)
    assert (await asyncio.wait_for(again, 5))[-1]["symbol"] == "BTC/USDT"


async def test_drop_order_updates_silences_orders_channel(sim):
    async with websockets.connect(sim.ws_url + "/private") as ws:
        await ws.send(login_msg())
        await recv_json(ws)
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "orders", "instType": "SPOT"}]}))
        await recv_json(ws)
        sim.faults.set_drop_order_updates()
        with sim.lock:
            result = sim.engine.submit(OrderRequest("ETH-USDT", "buy", "market", Decimal("0.1")), sim.venue_now_ms())
        sim.publish(result.events)
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "pong"  # nothing was queued before the pong


async def test_cancel_all_after_fires_and_pushes_canceled_rows(pro, sim):
    bid = (await pro.fetch_ticker("BTC/USDT"))["bid"]
    order = await pro.create_order("BTC/USDT", "limit", "buy", 0.01, round(bid * 0.9, 1))
    async with websockets.connect(sim.ws_url + "/private") as ws:
        await ws.send(login_msg())
        await recv_json(ws)
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "orders", "instType": "ANY"}]}))
        await recv_json(ws)
        armed = await pro.cancel_all_orders_after(1000)
        assert int(armed["data"][0]["triggerTime"]) > 0
        await asyncio.sleep(0.5)
        await pro.cancel_all_orders_after(1000)  # re-armed: the countdown restarts
        assert (await pro.fetch_order(order["id"], "BTC/USDT"))["status"] == "open"
        row = (await recv_json(ws, timeout=5))["data"][0]
        assert row["ordId"] == order["id"] and row["state"] == "canceled"
        assert row["cancelSource"] == "cancel_all_after"
    assert (await pro.fetch_order(order["id"], "BTC/USDT"))["status"] == "canceled"


async def test_cancel_all_after_zero_disarms(pro, sim):
    bid = (await pro.fetch_ticker("BTC/USDT"))["bid"]
    order = await pro.create_order("BTC/USDT", "limit", "buy", 0.01, round(bid * 0.9, 1))
    await pro.cancel_all_orders_after(1000)
    reply = await pro.cancel_all_orders_after(0)
    assert reply["data"][0]["triggerTime"] == "0"
    await asyncio.sleep(1.3)
    assert (await pro.fetch_order(order["id"], "BTC/USDT"))["status"] == "open"
    with pytest.raises(ccxt.BadRequest):
        await pro.cancel_all_orders_after(500_000)  # outside 0 or [min, 120] s
