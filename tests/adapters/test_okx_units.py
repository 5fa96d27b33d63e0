"""Pure pieces of the OKX adapter: signatures, backoff, ccxt error translation, order bodies, public API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from decimal import Decimal

import ccxt
import pytest
from pydantic import SecretStr

from tradetree import adapters
from tradetree.adapters import okx as adapters_okx
from tradetree.adapters.okx import OkxWsClient, translate_ccxt_error, ws_login_request, ws_login_signature
from tradetree.adapters.okx.rest import build_order_request
from tradetree.core import BackoffPolicy, VenueConfig
from tradetree.core.config import VenueCredentials
from tradetree.core.errors import (
    InsufficientFunds,
    OrderNotFound,
    OrderRejected,
    VenueAuthError,
    VenueError,
    VenueProtocolError,
    VenueRateLimited,
    VenueUnavailable,
)
from tradetree.core.types import InstrumentKind, Order, OrderType, Side


def test_ws_login_signature_matches_okx_formula():
    expected = base64.b64encode(
        hmac.new(b"s3cret", b"1700000000GET/users/self/verify", hashlib.sha256).digest()
    ).decode()
    assert ws_login_signature("s3cret", 1_700_000_000) == expected


def test_ws_login_request_shape():
    creds = VenueCredentials(api_key=SecretStr("k"), secret_key=SecretStr("s"), passphrase=SecretStr("p"))
    message = ws_login_request(creds, 1_700_000_000)
    assert message["op"] == "login"
    (arg,) = message["args"]
    assert arg == {"apiKey": "k", "passphrase": "p", "timestamp": "1700000000",
                   "sign": ws_login_signature("s", 1_700_000_000)}


def _ws_backoff(min_secs: float, max_secs: float) -> BackoffPolicy:
    """The reconnect policy a WS client of a venue with these bounds uses."""
    venue = VenueConfig(name="okx", ws_reconnect_min_secs=min_secs, ws_reconnect_max_secs=max_secs)

    async def on_message(message: dict) -> None:
        return None

    return OkxWsClient("ws://127.0.0.1:1/ws/v5/public", venue=venue, on_message=on_message).backoff


def test_backoff_grows_exponentially_within_bounds_with_jitter():
    backoff = _ws_backoff(0.5, 30.0)
    assert backoff == BackoffPolicy(base_secs=0.5, cap_secs=30.0, jitter="equal")
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff.delay(10_000, rng) <= 30.0


def test_backoff_is_deterministic_for_a_seed():
    backoff = _ws_backoff(1, 8)
    a = [backoff.delay(i, random.Random(3)) for i in range(5)]
    b = [backoff.delay(i, random.Random(3)) for i in range(5)]
    assert a == b
    with pytest.raises(ValueError):
        backoff.delay(-1, random.Random())


@pytest.mark.parametrize(
    "exc,cls",
    [
        (ccxt.AuthenticationError("okx {\"code\":\"50113\",\"msg\":\"Invalid Sign\"}"), VenueAuthError),
        (ccxt.PermissionDenied("nope"), VenueAuthError),
        (ccxt.RateLimitExceeded("okx {\"code\":\"50011\"}"), VenueRateLimited),
        (ccxt.DDoSProtection("slow down"), VenueRateLimited),
        (ccxt.ExchangeNotAvailable("503"), VenueUnavailable),
        (ccxt.OnMaintenance("503"), VenueUnavailable),
        (ccxt.RequestTimeout("504"), VenueUnavailable),
        (ccxt.NetworkError("refused"), VenueUnavailable),
        (ccxt.InvalidNonce("50102"), VenueUnavailable),
        (ccxt.InsufficientFunds("51008"), InsufficientFunds),
        (ccxt.InvalidOrder("51121"), OrderRejected),
        (ccxt.BadSymbol("51001"), OrderRejected),
        (ccxt.OrderNotFound("51603"), OrderNotFound),
        (ccxt.BadResponse("not json"), VenueProtocolError),
        (ccxt.ExchangeError("weird"), VenueError),
        (RuntimeError("bug inside ccxt"), VenueError),
    ],
)
def test_ccxt_errors_translate(exc, cls):
    error = translate_ccxt_error(exc, venue="okx", op="create_order")
    assert type(error) is cls
    assert error.venue == "okx"
    assert "create_order" in str(error)


def test_rate_limit_is_still_unavailable_and_insufficient_funds_is_a_rejection():
    assert isinstance(translate_ccxt_error(ccxt.RateLimitExceeded("x"), venue="okx", op="o"), VenueUnavailable)
    assert isinstance(translate_ccxt_error(ccxt.InsufficientFunds("x"), venue="okx", op="o"), OrderRejected)


def test_okx_code_is_extracted_and_secrets_are_masked():
    message = ('okx {"code":"1","data":[{"clOrdId":"c","ordId":"","sCode":"51008","sMsg":"no money"}],'
               '"msg":"key=my-api-key pass=my-pass"}')
    error = translate_ccxt_error(
        ccxt.InsufficientFunds(message), venue="okx", op="create_order", secrets=("my-api-key", "sec", "my-pass")
    )
    assert error.code == "51008"
    assert "my-api-key" not in str(error) and "my-pass" not in str(error)
    assert "***" in str(error)
    top = translate_ccxt_error(ccxt.AuthenticationError('okx {"code":"50113","msg":"x"}'), venue="okx", op="o")
    assert top.code == "50113"


def _order(**changes) -> Order:
    order = Order(client_order_id="tt1", strategy_id="s", venue="okx", inst_id="BTC-USDT", side=Side.BUY,
                  type=OrderType.MARKET, size=Decimal("0.0100"), created_ms=1, updated_ms=1)
    return order.model_copy(update=changes)


def test_spot_market_order_body_sizes_in_base():
    assert build_order_request(_order(), InstrumentKind.SPOT) == {
        "instId": "BTC-USDT", "side": "buy", "ordType": "market", "sz": "0.0100", "clOrdId": "tt1",
        "tdMode": "cash", "tgtCcy": "base_ccy",
    }


def test_swap_limit_reduce_only_and_post_only_bodies():
    body = build_order_request(
        _order(inst_id="BTC-USDT-SWAP", side=Side.SELL, type=OrderType.LIMIT, size=Decimal(2),
               price=Decimal("61000.5"), reduce_only=True),
        InstrumentKind.SWAP,
    )
    assert body == {"instId": "BTC-USDT-SWAP", "side": "sell", "ordType": "limit", "sz": "2", "clOrdId": "tt1",
                    "tdMode": "cross", "px": "61000.5", "reduceOnly": True}
    post = build_order_request(_order(type=OrderType.POST_ONLY, price=Decimal("1E+4")), InstrumentKind.SPOT)
    assert post["ordType"] == "post_only" and post["px"] == "10000"
    assert build_order_request(_order(size=Decimal("1E-5")), InstrumentKind.SPOT)["sz"] == "0.00001"


def test_reduce_only_is_sent_as_the_gateway_decided_else_as_the_order_says():
    swap = {"inst_id": "BTC-USDT-SWAP", "side": Side.SELL}
    for reduce_only, venue_reduce_only, sent in [(True, None, True), (False, None, False), (True, False, False),
                                                 (True, True, True), (False, True, True)]:
        body = build_order_request(_order(**swap, reduce_only=reduce_only, venue_reduce_only=venue_reduce_only),
                                   InstrumentKind.SWAP)
        assert body.get("reduceOnly", False) is sent, (reduce_only, venue_reduce_only)


def test_limit_without_price_is_rejected_before_sending():
    with pytest.raises(OrderRejected):
        build_order_request(_order(type=OrderType.LIMIT), InstrumentKind.SPOT)


def test_public_surface_is_what_it_claims():
    for module in (adapters, adapters_okx):
        assert sorted(set(module.__all__)) == sorted(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None
    assert adapters.VenueOrderReport is adapters_okx.VenueOrderReport
