"""OKX v5 REST client: unmodified ``ccxt.async_support.okx`` for transport, signing and error codes.

ccxt does the HTTP, the request signatures and the mapping of OKX error codes
onto its exception classes; this module translates those into
``core.errors`` at the boundary and parses OKX rows with ``parsing`` (it
calls ccxt's implicit endpoint methods, e.g. ``private_get_trade_order``, so
no OKX field is lost in ccxt's unified structures and WS and REST rows go
through the same parsers).

Each ``OkxRestClient`` owns its own ccxt instance (and HTTP session): the
gateway and the fill reconciler hold one each, so neither can starve or break
the other. Secrets never appear in exception messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
from ccxt.base import errors as ccxt_errors

from tradetree.adapters.okx.parsing import (
    parse_balances,
    parse_instrument,
    parse_net_positions,
    parse_order_ack,
    parse_order_report,
    parse_trade_fill,
)
from tradetree.adapters.okx.reports import VenueOrderReport
from tradetree.core import (
    Clock,
    Fill,
    FillLayer,
    Instrument,
    InstrumentKind,
    InsufficientFunds,
    Order,
    OrderNotFound,
    OrderRejected,
    OrderType,
    TradetreeError,
    VenueAuthError,
    VenueConfig,
    VenueCredentials,
    VenueError,
    VenueProtocolError,
    VenueRateLimited,
    VenueUnavailable,
    WallClock,
)

__all__ = ["OkxRestClient", "translate_ccxt_error", "build_order_request", "PAGE_LIMIT", "MAX_PAGES"]

log = logging.getLogger(__name__)

PAGE_LIMIT = 100  # OKX's maximum page size for orders-pending and fills-history
MAX_PAGES = 200  # a venue that keeps paginating past this is broken: fail, do not truncate silently
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_ORD_TYPES = {OrderType.MARKET: "market", OrderType.LIMIT: "limit", OrderType.POST_ONLY: "post_only"}


def _okx_code(message: str) -> str:
    """The most specific OKX code in a ccxt message (``okx {"code":..,"data":[{"sCode":..}]}``)."""
    start = message.find("{")
    if start < 0:
        return ""
    try:
        body = json.loads(message[start:])
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    data = body.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("sCode") not in (None, "", "0"):
        return str(data[0]["sCode"])
    return str(body.get("code") or "")


def _scrub(message: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def translate_ccxt_error(exc: BaseException, *, venue: str, op: str, secrets: tuple[str, ...] = ()) -> VenueError:
    """Map a ccxt (or unexpected) exception to the ``core.errors`` class it means.

    AuthenticationError -> VenueAuthError; RateLimitExceeded/DDoSProtection ->
    VenueRateLimited; other NetworkError (ExchangeNotAvailable, RequestTimeout,
    InvalidNonce) -> VenueUnavailable; InsufficientFunds -> InsufficientFunds;
    OrderNotFound -> OrderNotFound; InvalidOrder/BadSymbol -> OrderRejected;
    BadResponse -> VenueProtocolError; anything else -> VenueError. The
    message names the operation and the ccxt class, with ``secrets`` masked.
    """
    message = _scrub(f"{venue} {op}: {type(exc).__name__}: {exc}", secrets)
    code = _okx_code(str(exc))
    if isinstance(exc, ccxt_errors.AuthenticationError):
        cls: type[VenueError] = VenueAuthError
    elif isinstance(exc, (ccxt_errors.RateLimitExceeded, ccxt_errors.DDoSProtection)):
        cls = VenueRateLimited
    elif isinstance(exc, ccxt_errors.NetworkError):
        cls = VenueUnavailable
    elif isinstance(exc, ccxt_errors.InsufficientFunds):
        cls = InsufficientFunds
    elif isinstance(exc, ccxt_errors.OrderNotFound):
        cls = OrderNotFound
    elif isinstance(exc, (ccxt_errors.InvalidOrder, ccxt_errors.BadSymbol)):
        cls = OrderRejected
    elif isinstance(exc, ccxt_errors.BadResponse):
        cls = VenueProtocolError
    else:
        cls = VenueError
    return cls(message, venue=venue, code=code)


def _decimal_text(value: Decimal) -> str:
    """A Decimal as OKX wants it: plain notation, no exponent."""
    text = format(value, "f")
    return text


def build_order_request(order: Order, kind: InstrumentKind) -> dict[str, Any]:
    """The OKX ``trade/order`` body for ``order`` (sizes in venue units, sent as they are).

    Spot orders trade in cash mode with ``tgtCcy=base_ccy`` (so a market
    order's ``sz`` is a base amount, never a quote cost); swaps in cross
    margin, net position mode. ``reduceOnly`` is sent as ``order.venue_reduce_only``
    when the gateway decided it (see ``execution.venue_reduce_only``), else as
    ``order.reduce_only``. Raises OrderRejected for a priced order type
    without a price (nothing is sent).
    """
    request: dict[str, Any] = {
        "instId": order.inst_id,
        "side": order.side.value,
        "ordType": _ORD_TYPES[order.type],
        "sz": _decimal_text(order.size),
        "clOrdId": order.client_order_id,
        "tdMode": "cash" if kind is InstrumentKind.SPOT else "cross",
    }
    if kind is InstrumentKind.SPOT:
        request["tgtCcy"] = "base_ccy"
    if order.type is not OrderType.MARKET:
        if order.price is None:
            raise OrderRejected(
                f"order {order.client_order_id}: a {order.type.value} order needs a price", venue=order.venue
            )
        request["px"] = _decimal_text(order.price)
    if order.reduce_only if order.venue_reduce_only is None else order.venue_reduce_only:
        request["reduceOnly"] = True
    return request


class OkxRestClient:
    """Async OKX v5 REST client. Use one instance per owner; ``close()`` it when done.

    ``last_ok_ms``, ``last_failure`` and ``consecutive_failures`` describe the
    most recent calls, for health probes.
    """

    def __init__(
        self,
        venue: VenueConfig,
        credentials: VenueCredentials,
        *,
        rest_url: str,
        clock: Clock | None = None,
    ) -> None:
        self._venue = venue.name
        self._clock = clock or WallClock()
        self._secrets = (
            credentials.api_key.get_secret_value(),
            credentials.secret_key.get_secret_value(),
            credentials.passphrase.get_secret_value(),
        )
        loopback = (urlsplit(rest_url).hostname or "") in _LOOPBACK_HOSTS
        exchange = ccxt_async.okx(
            {
                "apiKey": self._secrets[0],
                "secret": self._secrets[1],
                "password": self._secrets[2],
                "enableRateLimit": not loopback,
                "timeout": int(venue.http_timeout_secs * 1000),
                "options": {"fetchMarkets": {"types": ["spot", "swap"]}},
            }
        )
        if venue.sandbox:
            # set_sandbox_mode replaces urls['api'], so it must come before our override.
            exchange.set_sandbox_mode(True)
        exchange.urls["api"] = {"rest": rest_url.rstrip("/")}
        self._exchange = exchange
        self._instruments: dict[str, Instrument] = {}
        self._closed = False
        self.last_ok_ms: int | None = None
        self.last_failure: str = ""
        self.consecutive_failures = 0

    @property
    def venue(self) -> str:
        return self._venue

    async def _call(self, op: str, call: Callable[..., Awaitable[Any]], params: Any = None) -> Any:
        """Run one ccxt call, translating its errors and recording the outcome."""
        try:
            result = await (call() if params is None else call(params))
        except TradetreeError as exc:
            self._record_failure(str(exc))
            raise
        except Exception as exc:  # every library error is translated here, at the boundary
            error = translate_ccxt_error(exc, venue=self._venue, op=op, secrets=self._secrets)
            self._record_failure(str(error))
            raise error from None
        self.last_ok_ms = self._clock.now_ms()
        self.consecutive_failures = 0
        return result

    def _record_failure(self, message: str) -> None:
        self.last_failure = message
        self.consecutive_failures += 1

    def _data(self, op: str, response: Any) -> list[Any]:
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, list):
            raise VenueProtocolError(f"{self._venue} {op}: reply has no data list", venue=self._venue)
        return data

    def _parse(self, op: str, parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except VenueProtocolError as exc:
            self._record_failure(str(exc))
            raise VenueProtocolError(f"{self._venue} {op}: {exc}", venue=self._venue) from None

    def _kind(self, inst_id: str) -> InstrumentKind:
        known = self._instruments.get(inst_id)
        if known is not None:
            return known.kind
        return InstrumentKind.SWAP if inst_id.endswith("-SWAP") else InstrumentKind.SPOT

    async def load_instruments(self) -> list[Instrument]:
        """Every live spot and linear-swap instrument the venue lists.

        Also verifies the credentials when not in sandbox mode (ccxt's
        ``asset/currencies`` call is private). Raises VenueAuthError,
        VenueUnavailable, VenueProtocolError.
        """
        markets = await self._call("load_instruments", lambda: self._exchange.load_markets(reload=True))
        rows = [market.get("info") for market in markets.values()]
        parsed = self._parse(
            "load_instruments", lambda: [parse_instrument(row, venue=self._venue) for row in rows]
        )
        instruments = sorted((i for i in parsed if i is not None), key=lambda i: i.inst_id)
        self._instruments = {i.inst_id: i for i in instruments}
        return instruments

    async def fetch_time(self) -> int:
        """The venue's clock in ms (a cheap liveness probe)."""
        response = await self._call("fetch_time", self._exchange.public_get_public_time)
        data = self._data("fetch_time", response)
        try:
            return int(data[0]["ts"])
        except (IndexError, KeyError, TypeError, ValueError):
            raise VenueProtocolError(f"{self._venue} fetch_time: bad reply {data!r:.80}", venue=self._venue) from None

    async def create_order(self, order: Order) -> str:
        """Send ``order`` (``clOrdId`` = its client order id); return the venue order id.

        Raises:
            OrderRejected / InsufficientFunds: refused (nothing to retry as is).
            VenueUnavailable: outcome unknown; look the order up by clOrdId.
            VenueAuthError: credentials rejected (the order was not placed).
            VenueProtocolError: the ack could not be understood (outcome unknown).
        """
        request = build_order_request(order, self._kind(order.inst_id))
        response = await self._call("create_order", self._exchange.private_post_trade_batch_orders, [request])
        data = self._data("create_order", response)
        if len(data) != 1:
            raise VenueProtocolError(
                f"{self._venue} create_order: expected one ack row, got {len(data)}", venue=self._venue
            )
        try:
            return parse_order_ack(data[0], client_order_id=order.client_order_id)
        except OrderRejected as exc:
            raise type(exc)(str(exc), venue=self._venue, code=exc.code) from None

    async def cancel_order(self, order: Order) -> None:
        """Ask the venue to cancel ``order`` (by clOrdId). The final state arrives as an order update.

        Raises OrderNotFound when the venue no longer has it open (already
        filled or canceled, or never placed), VenueUnavailable, VenueAuthError.
        """
        request = {"instId": order.inst_id, "clOrdId": order.client_order_id}
        response = await self._call("cancel_order", self._exchange.private_post_trade_cancel_order, request)
        data = self._data("cancel_order", response)
        if data and isinstance(data[0], dict) and data[0].get("sCode") not in (None, "", "0"):
            raise OrderNotFound(
                f"{self._venue} cancel_order {order.client_order_id}: {data[0].get('sCode')} {data[0].get('sMsg', '')}",
                venue=self._venue,
                code=str(data[0].get("sCode")),
            )

    async def fetch_order(self, order: Order) -> VenueOrderReport:
        """The venue's view of ``order``, looked up by clOrdId, terminal orders included.

        Raises OrderNotFound when the venue does not know it.
        """
        request = {"instId": order.inst_id, "clOrdId": order.client_order_id}
        response = await self._call("fetch_order", self._exchange.private_get_trade_order, request)
        data = self._data("fetch_order", response)
        if not data:
            raise OrderNotFound(f"{self._venue} fetch_order: unknown order {order.client_order_id}", venue=self._venue)
        return self._parse("fetch_order", lambda: parse_order_report(data[0], venue=self._venue))

    async def _paginate(
        self, op: str, call: Callable[..., Awaitable[Any]], params: dict[str, str], *, key: Callable[[dict], str],
        cursor: Callable[[dict], dict[str, str] | None],
    ) -> list[dict]:
        """All rows of a newest-first endpoint, following ``cursor(last_row)`` until a short page."""
        rows: list[dict] = []
        seen: set[str] = set()
        query = dict(params, limit=str(PAGE_LIMIT))
        for _ in range(MAX_PAGES):
            page = self._data(op, await self._call(op, call, query))
            if not all(isinstance(row, dict) for row in page):
                raise VenueProtocolError(f"{self._venue} {op}: a row is not an object", venue=self._venue)
            fresh = [row for row in page if key(row) not in seen]
            seen.update(key(row) for row in fresh)
            rows.extend(fresh)
            if len(page) < PAGE_LIMIT or not fresh:
                return rows
            next_cursor = cursor(page[-1])
            if next_cursor is None:
                raise VenueProtocolError(f"{self._venue} {op}: full page without a pagination cursor", venue=self._venue)
            query = {**params, "limit": str(PAGE_LIMIT), **next_cursor}
        raise VenueProtocolError(f"{self._venue} {op}: more than {MAX_PAGES} pages", venue=self._venue)

    async def fetch_open_orders(self, inst_ids: list[str] | None = None) -> list[VenueOrderReport]:
        """Every order the venue holds open (``live``/``partially_filled``), optionally for some instruments."""
        rows = await self._paginate(
            "fetch_open_orders", self._exchange.private_get_trade_orders_pending, {},
            key=lambda row: str(row.get("ordId")),
            cursor=lambda row: {"after": row["ordId"]} if row.get("ordId") else None,
        )
        reports = self._parse(
            "fetch_open_orders", lambda: [parse_order_report(row, venue=self._venue) for row in rows]
        )
        wanted = set(inst_ids) if inst_ids is not None else None
        return [r for r in reports if wanted is None or r.inst_id in wanted]

    async def fetch_fills(self, inst_id: str, since_ms: int | None = None, layer: FillLayer = FillLayer.POLL) -> list[Fill]:
        """Our fills on ``inst_id`` (OKX ``fills-history``) at or after ``since_ms``, oldest first.

        Follows pages by ``billId`` (or, lacking it, by timestamp); fills are
        de-duplicated by trade id. Raises VenueProtocolError if any row is
        garbled: a partial list would look complete to the caller.
        """
        params = {"instType": self._kind(inst_id).name, "instId": inst_id}
        if since_ms is not None:
            params["begin"] = str(since_ms)

        def cursor(row: dict) -> dict[str, str] | None:
            if row.get("billId"):
                return {"after": str(row["billId"])}
            return {"end": str(row["ts"])} if row.get("ts") else None

        rows = await self._paginate(
            "fetch_fills", self._exchange.private_get_trade_fills_history, params,
            key=lambda row: f"{row.get('instId')}:{row.get('tradeId')}", cursor=cursor,
        )
        fills = self._parse(
            "fetch_fills", lambda: [parse_trade_fill(row, venue=self._venue, layer=layer) for row in rows]
        )
        if since_ms is not None:
            fills = [f for f in fills if f.ts_ms >= since_ms]
        return sorted(fills, key=lambda f: (f.ts_ms, f.trade_id))

    async def fetch_positions(self) -> dict[str, Decimal]:
        """Net open positions in contracts, ``{inst_id: signed size}``; flat instruments left out."""
        response = await self._call("fetch_positions", self._exchange.private_get_account_positions)
        data = self._data("fetch_positions", response)
        return self._parse("fetch_positions", lambda: parse_net_positions(data))

    async def fetch_balances(self) -> dict[str, Decimal]:
        """Equity per currency, ``{ccy: amount}`` (a private call: also proves the credentials)."""
        response = await self._call("fetch_balances", self._exchange.private_get_account_balance)
        data = self._data("fetch_balances", response)
        return self._parse("fetch_balances", lambda: parse_balances(data))

    async def cancel_all_after(self, timeout_secs: int) -> int:
        """Arm (or with 0 disarm) the venue's dead-man switch; return its trigger time in ms (0 = off).

        Every call re-arms the timer: if no call comes within ``timeout_secs``
        the venue cancels all our open orders. Raises ValueError unless
        ``timeout_secs`` is 0 or within 10..120 (OKX's bounds).
        """
        if timeout_secs != 0 and not 10 <= timeout_secs <= 120:
            raise ValueError(f"cancel_all_after: timeout_secs must be 0 or 10..120, got {timeout_secs}")
        response = await self._call(
            "cancel_all_after", self._exchange.private_post_trade_cancel_all_after, {"timeOut": str(timeout_secs)}
        )
        data = self._data("cancel_all_after", response)
        try:
            return int(data[0].get("triggerTime") or 0)
        except (IndexError, AttributeError, TypeError, ValueError):
            raise VenueProtocolError(f"{self._venue} cancel_all_after: bad reply {data!r:.80}", venue=self._venue) from None

    async def close(self) -> None:
        """Close the HTTP session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._exchange.close()
        except Exception as exc:  # closing must not fail the caller's shutdown
            log.warning("%s rest: error while closing: %s", self._venue, _scrub(str(exc), self._secrets))
