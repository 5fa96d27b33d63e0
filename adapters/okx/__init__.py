"""The OKX v5 venue adapter: REST through ccxt, streams through websockets, row parsing.

Public surface (``__all__``); implementation details stay in the submodules.
"""

from tradetree.adapters.okx.parsing import (
    parse_candle,
    parse_instrument,
    parse_order_fill,
    parse_order_report,
    parse_ticker,
    parse_trade_fill,
)
from tradetree.adapters.okx.reports import VenueOrderReport, apply_report
from tradetree.adapters.okx.rest import OkxRestClient, translate_ccxt_error
from tradetree.adapters.okx.signing import ws_login_request, ws_login_signature
from tradetree.adapters.okx.ws import OkxWsClient, WsState

__all__ = [
    "OkxRestClient",
    "OkxWsClient",
    "WsState",
    "VenueOrderReport",
    "apply_report",
    "translate_ccxt_error",
    "ws_login_request",
    "ws_login_signature",
    "parse_candle",
    "parse_instrument",
    "parse_order_fill",
    "parse_order_report",
    "parse_ticker",
    "parse_trade_fill",
]
