"""Unmodified ccxt (sync and async) against the simulator's REST API."""

from __future__ import annotations

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from tests.sim.conftest import ccxt_options, point


def test_load_markets_time_balance_and_market_data(okx, sim_thread):
    assert {"BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(okx.markets)
    swap = okx.market("BTC/USDT:USDT")
    assert swap["linear"] and swap["contractSize"] == 0.01 and swap["settle"] == "USDT"
    assert okx.market("BTC/USDT")["precision"]["price"] == 0.1
    assert abs(okx.fetch_time() - okx.milliseconds()) < 5_000
    bal = okx.fetch_balance()
    assert bal["total"]["USDT"] == 1_000_000 and bal["free"]["BTC"] == 10
    t = okx.fetch_ticker("BTC/USDT")
    assert t["bid"] < t["ask"] and t["last"] > 0
    ob = okx.fetch_order_book("BTC/USDT:USDT", 5)
    assert len(ob["bids"]) == 5 and ob["bids"][0][0] < ob["asks"][0][0]
    bars = okx.fetch_ohlcv("BTC/USDT", "1m", limit=3)
    assert len(bars) == 3 and bars[0][0] < bars[1][0] < bars[2][0]
    assert all(b[3] <= min(b[1], b[4]) and b[2] >= max(b[1], b[4]) for b in bars)
    assert len(okx.fetch_ohlcv("BTC/USDT:USDT", "5m", limit=2)) == 2
    trades = okx.fetch_trades("ETH/USDT", limit=5)
    assert len(trades) == 5 and all(tr["price"] > 0 for tr in trades)


def test_spot_market_and_limit_orders_with_client_ids(okx, sim_thread):
    o = okx.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "spotmkt1"})
    assert o["id"] == "1" and o["clientOrderId"] == "spotmkt1"
    got = okx.fetch_order(o["id"], "BTC/USDT")
    assert got["status"] == "closed" and got["filled"] == 0.01 and got["fee"]["cost"] > 0
    assert okx.fetch_order(None, "BTC/USDT", {"clOrdId": "spotmkt1"})["id"] == o["id"]
    bid = okx.fetch_ticker("BTC/USDT")["bid"]
    lim = okx.create_order("BTC/USDT", "limit", "buy", 0.02, round(bid * 0.9, 1), {"clientOrderId": "spotlim1"})
    open_ = okx.fetch_open_orders("BTC/USDT")
    assert [x["id"] for x in open_] == [lim["id"]] and open_[0]["status"] == "open"
    assert open_[0]["price"] == round(bid * 0.9, 1) and open_[0]["amount"] == 0.02
    okx.cancel_order(lim["id"], "BTC/USDT")
    assert okx.fetch_order(lim["id"], "BTC/USDT")["status"] == "canceled"
    assert okx.fetch_open_orders() == []
    assert [x["id"] for x in okx.fetch_closed_orders("BTC/USDT")] == [o["id"]]  # ccxt asks state=filled
    assert [x["id"] for x in okx.fetch_canceled_orders("BTC/USDT")] == [lim["id"]]
    mine = okx.fetch_my_trades("BTC/USDT")
    assert mine and all(t["order"] == o["id"] for t in mine)
    assert sum(t["amount"] for t in mine) == pytest.approx(0.01)
    truth = sim_thread.account_truth()
    assert {t["trade_id"] for t in truth["trades"]} == {t["id"] for t in mine}
    assert okx.fetch_balance()["total"]["BTC"] == pytest.approx(10.01)


def test_swap_orders_positions_and_trades(okx, sim_thread):
    okx.create_order("BTC/USDT:USDT", "market", "buy", 3, params={"clientOrderId": "swapopen1"})
    pos = okx.fetch_positions(["BTC/USDT:USDT"])
    assert len(pos) == 1 and pos[0]["contracts"] == 3 and pos[0]["side"] == "long"
    okx.create_order("BTC/USDT:USDT", "market", "sell", 1, params={"reduceOnly": True})
    assert okx.fetch_positions()[0]["contracts"] == 2
    ask = okx.fetch_ticker("BTC/USDT:USDT")["ask"]
    lim = okx.create_order("BTC/USDT:USDT", "limit", "sell", 1, round(ask * 1.1, 1), {"postOnly": True})
    assert okx.fetch_order(lim["id"], "BTC/USDT:USDT")["status"] == "open"
    okx.cancel_order(None, "BTC/USDT:USDT", {"clOrdId": okx.fetch_order(lim["id"], "BTC/USDT:USDT")["clientOrderId"]})
    assert okx.fetch_order(lim["id"], "BTC/USDT:USDT")["status"] == "canceled"
    trades = okx.fetch_my_trades("BTC/USDT:USDT")
    assert sum(t["amount"] for t in trades) == 4
    since = min(t["timestamp"] for t in trades)
    assert len(okx.fetch_my_trades("BTC/USDT:USDT", since=since)) == len(trades)
    assert okx.fetch_my_trades("BTC/USDT:USDT", since=max(t["timestamp"] for t in trades) + 1) == []
    assert sim_thread.account_truth()["positions"] == {"BTC-USDT-SWAP": "2"}


def test_order_errors_map_to_ccxt_exceptions(okx, sim_thread):
    with pytest.raises(ccxt.InsufficientFunds):
        okx.create_order("BTC/USDT", "market", "buy", 100)
    with pytest.raises(ccxt.OrderNotFound):
        okx.fetch_order("424242", "BTC/USDT")
    filled = okx.create_order("ETH/USDT", "market", "buy", 0.1)
    with pytest.raises(ccxt.OrderNotFound):
        okx.cancel_order(filled["id"], "ETH/USDT")
    okx.create_order("ETH/USDT", "limit", "buy", 0.1, 100, {"clientOrderId": "same1"})
    with pytest.raises(ccxt.InvalidOrder):
        okx.create_order("ETH/USDT", "limit", "buy", 0.1, 100, {"clientOrderId": "same1"})
    with pytest.raises(ccxt.InvalidOrder):  # reduceOnly without a position
        okx.create_order("ETH/USDT:USDT", "market", "sell", 1, params={"reduceOnly": True})


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"secret": "wrong-secret"}, ccxt.AuthenticationError),
        ({"password": "wrong-pass"}, ccxt.AuthenticationError),
        ({"api_key": "wrong-key"}, ccxt.AuthenticationError),
    ],
)
def test_bad_credentials_raise_authentication_error(sim_thread, kwargs, exc):
    ex = point(ccxt.okx(ccxt_options(sim_thread, **kwargs)), sim_thread)
    with pytest.raises(exc):
        ex.load_markets()  # asset/currencies is private


def test_stale_timestamp_is_refused(okx, sim_thread):
    # The timestamp is part of what is checked: 60 s of skew is refused (50102).
    okx.nonce = lambda: okx.milliseconds() - 60_000
    with pytest.raises(ccxt.InvalidNonce):
        okx.fetch_balance()


def test_rest_faults_map_to_ccxt_exceptions(okx, sim_thread):
    faults = sim_thread.faults
    faults.set_rest_errors(1.0, "5xx")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        okx.fetch_balance()
    faults.set_rest_errors(1.0, "429")
    with pytest.raises(ccxt.RateLimitExceeded):
        okx.fetch_ticker("BTC/USDT")
    faults.update(rest_error_rate=1.0, rest_error_kind="timeout", rest_timeout_secs=0.05)
    with pytest.raises(ccxt.RequestTimeout):
        okx.fetch_open_orders()
    faults.clear_all()
    faults.set_reject_orders()
    with pytest.raises(ccxt.InsufficientFunds):
        okx.create_order("BTC/USDT", "market", "buy", 0.01)
    faults.clear("reject_orders")
    faults.set_rest_errors(1.0, "5xx", paths=("/api/v5/trade/",))
    assert okx.fetch_ticker("BTC/USDT")["last"] > 0  # not in scope
    with pytest.raises(ccxt.ExchangeNotAvailable):
        okx.fetch_open_orders()
    faults.clear_all()
    assert okx.fetch_open_orders() == []
    assert sim_thread.account_truth()["trades"] == []


def test_timeout_after_processing_places_the_order(okx, sim_thread):
    sim_thread.faults.update(rest_error_rate=1.0, rest_error_kind="timeout", rest_timeout_secs=0.05,
                             rest_timeout_after_processing=True, rest_error_paths=("/api/v5/trade/batch-orders",))
    with pytest.raises(ccxt.RequestTimeout):
        okx.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "unknown1"})
    sim_thread.faults.clear_all()
    found = okx.fetch_order(None, "BTC/USDT", {"clOrdId": "unknown1"})
    assert found["status"] == "closed" and found["filled"] == 0.01


def test_single_order_endpoint_and_batch_partial_success(okx, sim_thread):
    okx.options["createOrder"] = "privatePostTradeOrder"
    o = okx.create_order("ETH/USDT", "market", "sell", 0.5)
    assert okx.fetch_order(o["id"], "ETH/USDT")["status"] == "closed"
    reply = okx.private_post_trade_batch_orders([
        {"instId": "ETH-USDT", "side": "buy", "ordType": "limit", "sz": "0.1", "px": "100", "tdMode": "cash"},
        {"instId": "ETH-USDT", "side": "buy", "ordType": "limit", "sz": "0.1", "tdMode": "cash"},
    ])
    assert reply["code"] == "2" and [r["sCode"] for r in reply["data"]] == ["0", "51204"]


async def test_async_ccxt_round_trip(aokx, sim):
    assert abs(await aokx.fetch_time() - aokx.milliseconds()) < 5_000
    assert (await aokx.fetch_balance())["total"]["USDT"] == 1_000_000
    o = await aokx.create_order("BTC/USDT:USDT", "market", "sell", 2, params={"clientOrderId": "async1"})
    assert (await aokx.fetch_order(o["id"], "BTC/USDT:USDT"))["status"] == "closed"
    pos = await aokx.fetch_positions(["BTC/USDT:USDT"])
    assert pos[0]["side"] == "short" and pos[0]["contracts"] == 2
    bid = (await aokx.fetch_ticker("BTC/USDT"))["bid"]
    lim = await aokx.create_order("BTC/USDT", "limit", "buy", 0.01, round(bid * 0.95, 1))
    assert [x["id"] for x in await aokx.fetch_open_orders("BTC/USDT")] == [lim["id"]]
    await aokx.cancel_order(lim["id"], "BTC/USDT")
    assert await aokx.fetch_open_orders() == []
    assert len(await aokx.fetch_my_trades("BTC/USDT:USDT")) >= 1
    assert len(await aokx.fetch_ohlcv("ETH/USDT:USDT", "1m", limit=2)) == 2
    assert (await aokx.fetch_order_book("ETH/USDT"))["asks"]


async def test_async_bad_secret(sim):
    ex = point(ccxt_async.okx(ccxt_options(sim, secret="nope")), sim)
    try:
        with pytest.raises(ccxt.AuthenticationError):
            await ex.fetch_balance()
    finally:
        await ex.close()
