"""The gateway's decisions: WS probes (a client reconnecting by itself is not ready, but not a reason
to restart), market data staleness, ticker args, the ack."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest

from tradetree.adapters.okx import WsState
from tradetree.core.errors import VenueAuthError, VenueUnavailable
from tradetree.core.types import Order, OrderIntent, OrderState, Side
from tradetree.execution.gateway_rules import (
    acknowledged,
    cancel_all_error,
    market_data_probe,
    ticker_args,
    ws_probe,
)


def _ws(state: WsState, *, connected: bool = False, logged_in: bool = False):
    return SimpleNamespace(state=state, connected=connected, logged_in=logged_in, reconnects=3, last_error="cut")


def test_connected_passes():
    assert ws_probe("ws_public", _ws(WsState.CONNECTED, connected=True)).ok
    assert ws_probe("ws_private", _ws(WsState.CONNECTED, connected=True, logged_in=True)).ok


@pytest.mark.parametrize("state", [WsState.BACKOFF, WsState.CONNECTING])
def test_reconnecting_fails_readiness_only(state):
    probe = ws_probe("ws_private", _ws(state))
    assert not probe.ok and not probe.liveness and "reconnects 3" in probe.detail


@pytest.mark.parametrize("state", [WsState.FAILED, WsState.CLOSED, WsState.IDLE])
def test_a_client_whose_loop_ended_fails_liveness(state):
    probe = ws_probe("ws_private", _ws(state))
    assert not probe.ok and probe.liveness


def test_private_session_without_login_is_not_ready():
    assert not ws_probe("ws_private", _ws(WsState.CONNECTED, connected=True, logged_in=False)).ok
    assert not ws_probe("ws_private", None).ok


def test_market_data_probe_names_each_stale_or_silent_instrument_and_is_readiness_only():
    probe = market_data_probe(["B", "A", "C", "A"], {"A": 1_000, "B": 9_000}, now_ms=11_000, stale_after_ms=2_000)
    assert not probe.ok and not probe.liveness
    assert probe.detail == "A: last ticker 10000 ms ago; C: no ticker yet"
    fresh = market_data_probe(["B"], {"B": 9_000}, now_ms=11_000, stale_after_ms=2_000)
    assert fresh.ok and fresh.detail == ""


def test_ticker_args():
    assert ticker_args(["A", "B"]) == [{"channel": "tickers", "instId": "A"}, {"channel": "tickers", "instId": "B"}]


def _order() -> Order:
    intent = OrderIntent(strategy_id="s", venue="okx", inst_id="A", side=Side.BUY, size=Decimal(1))
    return Order.from_intent(intent, now_ms=100, client_order_id="c")


def test_ack_moves_pending_new_to_live_with_the_id_never_back_in_time():
    acked = acknowledged(_order(), "v1", now_ms=50)
    assert acked is not None and acked.state is OrderState.LIVE and acked.venue_order_id == "v1"
    assert acked.updated_ms == 100


def test_ack_adds_the_id_to_an_order_the_ws_moved_on_and_leaves_one_that_has_it():
    moved = _order().model_copy(update={"state": OrderState.FILLED, "filled_size": Decimal(1), "updated_ms": 200})
    acked = acknowledged(moved, "v1", now_ms=300)
    assert acked is not None and acked.state is OrderState.FILLED and acked.venue_order_id == "v1"
    assert acked.updated_ms == 300
    assert acknowledged(acked, "v1", now_ms=400) is None


def test_cancel_all_error_counts_every_failure_and_keeps_the_first_ones_kind():
    assert cancel_all_error("gateway:okx", "okx", [], attempted=3, accepted=3) is None
    failures = [VenueAuthError("bad key", code="50113"), VenueUnavailable("503")]
    err = cancel_all_error("gateway:okx", "okx", failures, attempted=4, accepted=1)
    assert type(err) is VenueAuthError and err.venue == "okx" and err.code == "50113"
    assert str(err) == "gateway:okx: cancel_all: 2 of 4 cancels failed (1 accepted); first: bad key"
