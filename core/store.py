"""Redis store: the single source of position truth, on ``redis.asyncio``.

Fills are applied by one Lua script (``core/lua/apply_fill.lua``), atomically
and at most once per venue trade ``(venue, inst_id, trade_id)``, whichever
layer (ws, poll, health) delivers it and however often; one script call per
fill or per page of fills (``apply_fills``), attribution and duplicates
answered inside it. The same set of fills
gives the same positions whatever the order of delivery: the script folds each
position's fills in canonical order (ts_ms, then fill id), re-folding the later
fills when one arrives out of order.

Quantities are exact: sizes are kept as integer atoms (1e-8 of the venue unit),
so a size or base-currency fee that is not a whole number of atoms, or a
position beyond ``MAX_EXACT_ATOMS`` (about 90 million units), is refused rather
than rounded. Money (prices, P&L, fees) are IEEE doubles stored with 17
significant digits; they come back as ``Decimal`` of the shortest string that
round-trips the double.

Orders are written before they are sent (``record_order``, NX on the client
order id) and stay in their venue's open set until the poller untracks them.

Every key lives under ``{namespace}:`` (see ``core.redis_keys``). Redis
connection errors and timeouts raise ``StoreUnavailable``; any other Redis
error raises ``StoreError``. Nothing secret is ever written.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Literal, overload
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tradetree.core.clock import Clock, WallClock
from tradetree.core.errors import StoreError, StoreUnavailable
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.secrets import resolve_redis_locator

# Short local names: every reader in this module decodes, and helpers adding methods use them.
from tradetree.core.text import as_opt_text as _opt_text
from tradetree.core.text import as_text as _text
from tradetree.core.types import Fill, FillLayer, Instrument, Order, Position, StrategyState, position_id

__all__ = [
    "open_redis_client",
    "ATOMS_PER_UNIT",
    "MAX_EXACT_ATOMS",
    "PNL_DAY_TTL_SECS",
    "STRATEGY_STATES",
    "UNATTRIBUTED_STRATEGY",
    "AuditEntry",
    "FillResult",
    "RedisStore",
    "from_atoms",
    "redact_url",
    "to_atoms",
]

log = logging.getLogger(__name__)

ATOMS_PER_UNIT = 10**8
# Lua numbers are doubles: integers are exact up to 2**53.
MAX_EXACT_ATOMS = 2**53 - 1
UNATTRIBUTED_STRATEGY = "_unattributed"
STRATEGY_STATES = frozenset(s.value for s in StrategyState)

# An order snapshot changed between our read and the script's check; each retry re-reads. A retry is caused only by another writer's successful
# record/update of the same order, and each concurrent updater writes at most once
# before it sees a newer snapshot, so N concurrent updaters cause < N retries.
_CAS_ATTEMPTS = 16
# Fills per apply script call: a page of the OKX fills endpoint (100) fits in one; a
# larger backlog is sliced so that one script holds Redis for a few ms at most.
_FILLS_PER_CALL = 200
# Tests only, never set in production: when not None, the apply script raises error()
# after that many fills of a page's phase 1 (apply_fill.lua, ARGV[6]), so that a test
# can prove that a script failing before its writes leaves Redis unchanged.
_FAIL_AFTER_FOR_TESTS: int | None = None
_DELETE_BATCH = 500
# Day baselines outlive their day so a host whose clock is behind still finds yesterday's.
PNL_DAY_TTL_SECS = 3 * 86_400
_KILL_LOG_MAXLEN = 10_000

# Take or renew: free, already ours, or expired. Returns '' when we hold it, else the holder.
_KILL_LEASE_LUA = """
local owner = redis.call('HGET', KEYS[1], 'owner')
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_ms') or '0')
if (not owner) or owner == ARGV[1] or expires <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_ms', ARGV[3])
  return ''
end
return owner
"""

# Check-and-set of one strategy's state: ARGV[1] strategy id, ARGV[2] the new state, ARGV[3..]
# the states it may move from ('' for none recorded). Returns 1 when it was set, else 0.
_TRANSITION_STATE_LUA = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
for i = 3, #ARGV do
  if current == ARGV[i] or (not current and ARGV[i] == '') then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    return 1
  end
end
return 0
"""

# Only the holder may release: an executor that lost its lease must not free its successor's.
_KILL_RELEASE_LUA = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def _load_lua(name: str) -> str:
    return resources.files("tradetree.core").joinpath("lua", name).read_text(encoding="utf-8")


_APPLY_FILL_LUA = _load_lua("apply_fill.lua")
_RECORD_ORDER_LUA = _load_lua("record_order.lua")
_UPDATE_ORDER_LUA = _load_lua("update_order.lua")


class FillResult(BaseModel):
    """What ``apply_fill`` did.

    ``applied`` is False for a duplicate delivery (the fill had been applied
    before by another call; a retry of the same call after a lost reply still
    reports True); ``strategy_id`` is the strategy the fill was attributed to when it
    was first applied; ``position`` is that strategy's position after the call
    and ``order_applied_size`` the sum of applied fill sizes of the fill's order
    (0 when the fill could not be tied to any client order id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    applied: bool
    strategy_id: str
    position: Position
    order_applied_size: Decimal


class AuditEntry(BaseModel):
    """One entry of the audit stream: a fill as first applied.

    ``fill.layer`` is the layer whose delivery applied it; ``attributed_order_id``
    is the client order id the fill was counted against (None when unknown).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_id: str
    fill: Fill
    strategy_id: str
    attributed_order_id: str | None
    applied_ms: int


def to_atoms(value: Decimal, what: str) -> int:
    """``value`` in atoms (1e-8 units), exactly.

    Raises:
        StoreError: ``value`` is not finite, not a whole number of atoms, or
            its magnitude exceeds ``MAX_EXACT_ATOMS``.
    """
    try:
        scaled = value.scaleb(8)
        whole = scaled.to_integral_value()
    except InvalidOperation as exc:
        raise StoreError(f"{what} {value} is not a finite number") from exc
    if not value.is_finite() or scaled != whole:
        raise StoreError(f"{what} {value} is not a whole number of atoms (1e-8)")
    atoms = int(whole)
    if abs(atoms) > MAX_EXACT_ATOMS:
        raise StoreError(f"{what} {value} exceeds the exact range ({MAX_EXACT_ATOMS} atoms)")
    return atoms


def from_atoms(atoms: int) -> Decimal:
    """Atoms back to venue units."""
    return Decimal(atoms) / ATOMS_PER_UNIT


def open_redis_client(url: str, *, socket_timeout_secs: float, **options: Any) -> aioredis.Redis:
    """A client on ``url`` (bytes in and out), not yet connected. An actor is handed a locator (no
    password in it, ``core.secrets``): its password is read here, in this process.

    Raises:
        StoreUnavailable: the locator's password cannot be found here.
        ValueError: ``url`` is not a Redis URL.
    """
    return aioredis.Redis.from_url(resolve_redis_locator(url), socket_timeout=socket_timeout_secs,
                                   socket_connect_timeout=socket_timeout_secs, decode_responses=False, **options)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable redis url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@contextlib.contextmanager
def _translate(action: str) -> Iterator[None]:
    """Turn redis-py errors into the project's store errors."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis did not answer while {action}: {exc}") from exc
    except RedisError as exc:
        raise StoreError(f"Redis failed while {action}: {exc}") from exc


def _text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _money(text: str) -> Decimal:
    # The shortest decimal that round-trips the stored double (105, not 105.0).
    value = float(text)
    return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))


def _int(text: str) -> int:
    return int(Decimal(text))


def _applied_size(raw: Any) -> Decimal:
    """An order's applied size from its stored atoms: the ``order_applied`` key as Redis or the
    apply script returns it (None or '': no fill counted against the order)."""
    text = _opt_text(raw)
    return from_atoms(_int(text)) if text else Decimal(0)


def _position_from_fields(
    fields: Mapping[str, str], strategy_id: str, venue: str, inst_id: str
) -> Position:
    if not fields:
        return Position(strategy_id=strategy_id, venue=venue, inst_id=inst_id)
    return Position(
        strategy_id=fields["strategy_id"],
        venue=fields["venue"],
        inst_id=fields["inst_id"],
        qty=from_atoms(_int(fields["qty_atoms"])),
        avg_price=_money(fields["avg_price"]),
        realized_pnl=_money(fields["realized_pnl"]),
        fees=_money(fields["fees"]),
        fill_count=_int(fields["fill_count"]),
        updated_ms=_int(fields["updated_ms"]),
    )


def _fill_from_fields(fields: Mapping[str, str]) -> Fill:
    return Fill(
        venue=fields["venue"],
        inst_id=fields["inst_id"],
        trade_id=fields["trade_id"],
        client_order_id=fields["client_order_id"] or None,
        venue_order_id=fields["venue_order_id"] or None,
        side=fields["side"],
        price=Decimal(fields["price"]),
        size=Decimal(fields["size"]),
        fee=Decimal(fields["fee"]),
        fee_ccy=fields["fee_ccy"],
        liquidity=fields["liquidity"] or None,
        ts_ms=int(fields["ts_ms"]),
        layer=fields["layer"],
    )


def _strategy_state(strategy_id: str, text: str) -> StrategyState:
    try:
        return StrategyState(text)
    except ValueError:
        raise StoreError(
            f"strategy {strategy_id}: stored state {text!r} is not one of {', '.join(sorted(STRATEGY_STATES))}"
        ) from None


class RedisStore:
    """Position truth, orders and control state of one namespace.

    Works with any ``redis.asyncio.Redis`` client (``decode_responses`` either
    way), including ``fakeredis.FakeAsyncRedis``. ``clock`` stamps the apply
    time of fills (``applied_ms`` in the audit stream).

    Raises:
        ValueError: ``namespace`` is not ``[A-Za-z0-9_.-]+``.
    """

    def __init__(
        self, client: aioredis.Redis, namespace: str, *, clock: Clock | None = None
    ) -> None:
        self._client = client
        self._keys = RedisKeys(namespace)
        self._clock: Clock = clock or WallClock()
        self._owns_client = False
        self._apply_fill = client.register_script(_APPLY_FILL_LUA)
        self._token_prefix = uuid.uuid4().hex[:16] + ":"
        self._calls = itertools.count()
        self._record_order = client.register_script(_RECORD_ORDER_LUA)
        self._update_order = client.register_script(_UPDATE_ORDER_LUA)
        self._transition_state = client.register_script(_TRANSITION_STATE_LUA)

    @property
    def namespace(self) -> str:
        return self._keys.namespace

    @property
    def client(self) -> aioredis.Redis:
        """The underlying client, for sibling modules sharing the namespace (control state)."""
        return self._client

    @property
    def keys(self) -> RedisKeys:
        return self._keys

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        namespace: str,
        *,
        socket_timeout_secs: float = 2.0,
        clock: Clock | None = None,
    ) -> RedisStore:
        """Open a client on ``url`` and check that Redis answers.

        Commands are retried at most twice on a dropped connection (every
        write is idempotent or NX-guarded, see ``record_order``).

        Raises:
            StoreUnavailable: Redis does not answer PING at ``url`` (the message
                names the url without its password), or ``url`` is a locator
                (``core.secrets``) whose password this process cannot find.
            ValueError: ``namespace`` is invalid.
        """
        keys = RedisKeys(namespace)  # validate before opening anything
        try:
            client = open_redis_client(url, socket_timeout_secs=socket_timeout_secs,
                                       retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2))
        except ValueError as exc:
            raise StoreUnavailable(f"invalid Redis url {redact_url(url)}: {exc}") from exc
        store = cls(client, keys.namespace, clock=clock)
        store._owns_client = True
        try:
            with _translate(f"connecting to {redact_url(url)}"):
                await client.ping()
        except StoreError as exc:
            await client.aclose()
            raise StoreUnavailable(
                f"Redis at {redact_url(url)} does not answer PING: {exc.__cause__}"
            ) from exc.__cause__
        return store

    async def close(self) -> None:
        """Close the client if ``connect`` opened it; a client passed in stays the caller's."""
        if self._owns_client:
            await self._client.aclose()

    async def ping(self) -> None:
        """Raises: StoreUnavailable: Redis does not answer."""
        with _translate("pinging"):
            await self._client.ping()

    # -- fills ------------------------------------------------------------------

    async def apply_fill(self, fill: Fill, instrument: Instrument) -> FillResult:
        """Apply ``fill`` once: position, order applied size, audit entry, layer counters.

        One script call (one round trip), whether the fill is new or a duplicate.
        A duplicate delivery (same venue, inst_id, trade_id) changes nothing
        but the ``delivered`` counter of ``fill.layer`` and returns
        ``applied=False`` with the current state. The fill is attributed, inside
        the same atomic step, to the strategy of its order, found by
        ``client_order_id`` or else through the venue order id index; a fill of
        an unknown order goes to strategy ``UNATTRIBUTED_STRATEGY``, still
        applied and audited.

        A fee in the instrument's base currency reduces the quantity (and raises
        the average cost of what is left); a fee in quote or settle currency, or
        with an empty ``fee_ccy``, adds to ``Position.fees``.

        Cost: a fill newer (ts_ms, fill id) than every fill of its position is
        folded in O(1). An older one (poller backfill) re-folds the k later
        fills of that position inside the script, O(k), during which Redis
        serves nobody else; the per-position ledger keeps every fill, so k is
        bounded by how far back the late fill lands, not by the history.

        Raises:
            ValueError: ``fill`` is not of ``instrument`` (venue or inst_id differ).
            StoreError: the size or a base fee is not a whole number of atoms, a
                value is not finite, the fee currency is neither base, quote nor
                settle, the position would leave the exact range (nothing is
                written in all these cases), or Redis failed.
            StoreUnavailable: Redis does not answer (the fill may or may not have
                been applied; delivering it again is safe).
        """
        (result,) = await self.apply_fills([(fill, instrument)])
        if isinstance(result, Exception):
            raise result
        return result

    async def apply_fills(
        self, fills: Sequence[tuple[Fill, Instrument]]
    ) -> list[FillResult | StoreError | ValueError]:
        """Apply a page of fills, each as ``apply_fill`` would, in one round trip.

        Entry i of the answer is what ``apply_fill(*fills[i])`` would have
        returned, or the ``ValueError`` / ``StoreError`` it would have raised (that
        fill wrote nothing; the others are applied all the same). The end state
        is the one of applying the fills one by one in any order, duplicates
        included: each fill counts once, and positions fold in canonical order.
        The page is sent sorted by (ts_ms, fill id), so a page in any order folds
        in O(1) per fill; each result's position is the state right after its
        fill in that order. Pages above ``_FILLS_PER_CALL`` fills take one call
        per slice, so one script never holds Redis for long.

        The script computes a whole slice before it writes any of it, so a slice
        the script fails (a bug, a key of the wrong type) writes nothing: no fill
        is left marked applied without its position. Such a slice is then sent
        again one fill per call, so only the fill that fails alone gets the
        ``StoreError`` and the others are applied.

        Raises:
            StoreUnavailable: Redis does not answer (any fill of the page may or
                may not have been applied; delivering them again is safe).
        """
        results: list[FillResult | StoreError | ValueError | None] = [None] * len(fills)
        pending: list[tuple[tuple[int, str], int, list[str]]] = []
        # Unique per call (store instance + counter), identical across redis-py's retries.
        call_token = f"{self._token_prefix}{next(self._calls)}"
        for i, (fill, instrument) in enumerate(fills):
            try:
                fill_id, args = self._fill_args(fill, instrument, f"{call_token}:{i}")
            except (StoreError, ValueError) as exc:
                results[i] = exc
                continue
            pending.append(((fill.ts_ms, fill_id), i, args))
        pending.sort(key=lambda p: p[0])
        head = [self._keys.prefix, str(self._clock.now_ms()), str(MAX_EXACT_ATOMS), UNATTRIBUTED_STRATEGY]
        for start in range(0, len(pending), _FILLS_PER_CALL):
            page = pending[start:start + _FILLS_PER_CALL]
            try:
                page_results = await self._apply_page(fills, page, head)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                if len(page) == 1:
                    page_results = [exc]
                else:
                    # One corrupted key (or a script bug one fill trips) must not keep every other
                    # fill of the slice out: the poller would re-fetch the same page from its stuck
                    # cursor and fail again, forever. The slice wrote nothing, so it is retried one
                    # fill per call (same call tokens), and only a fill that fails alone fails.
                    log.warning("%s; applying its %d fills one per call", exc, len(page))
                    page_results = []
                    for entry in page:
                        try:
                            page_results += await self._apply_page(fills, [entry], head)
                        except StoreUnavailable:
                            raise
                        except StoreError as alone:
                            page_results.append(alone)
            for (_, i, _), result in zip(page, page_results, strict=True):
                results[i] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(fills), "entry i of apply_fills' answer is fill i's result"
        return done

    async def _apply_page(
        self, fills: Sequence[tuple[Fill, Instrument]], page: list[tuple[tuple[int, str], int, list[str]]],
        head: list[str],
    ) -> list[FillResult | StoreError]:
        """One script call over ``page`` (entries of ``apply_fills``' sorted list); entry i of the
        answer is page entry i's result.

        Raises:
            StoreUnavailable: Redis does not answer.
            StoreError: the script failed the call (it wrote nothing), or its reply is not one
                reply per fill (sent again with the same call tokens, a fill it did write
                answers as applied).
        """
        keys = self._keys
        args = [*head, json.dumps([fill_args for _, _, fill_args in page], separators=(",", ":"))]
        if _FAIL_AFTER_FOR_TESTS is not None:
            args.append(str(_FAIL_AFTER_FOR_TESTS))
        what = f"applying fill {fills[page[0][1]][0].key}" if len(page) == 1 else f"applying {len(page)} fills"
        with _translate(what):
            raw = await self._apply_fill(keys=[keys.positions, keys.audit, keys.fill_layers], args=args)
        try:
            replies = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"apply_fill script returned {raw!r}") from exc
        if not isinstance(replies, list) or len(replies) != len(page):
            raise StoreError(f"apply_fill script returned {raw!r} for a page of {len(page)} fills")
        return [self._fill_result(fills[i][0], reply) for (_, i, _), reply in zip(page, replies, strict=True)]

    def _fill_args(self, fill: Fill, instrument: Instrument, call_token: str) -> tuple[str, list[str]]:
        """(fill id, the script's 19 strings for ``fill``); raises what ``apply_fill`` documents."""
        if fill.venue != instrument.venue or fill.inst_id != instrument.inst_id:
            raise ValueError(
                f"fill {fill.key} is not of instrument {instrument.venue}:{instrument.inst_id}"
            )
        size_atoms = to_atoms(fill.size, f"fill {fill.key} size")
        if size_atoms <= 0:
            raise StoreError(f"fill {fill.key} size {fill.size} is not positive")
        if not fill.price.is_finite() or not fill.fee.is_finite():
            raise StoreError(f"fill {fill.key} has a non-finite price or fee")
        fee_quote, fee_base_atoms = self._split_fee(fill, instrument)
        fill_id = self._keys.fill_id(fill.venue, fill.inst_id, fill.trade_id)
        return fill_id, [
            fill_id,
            fill.venue,
            fill.inst_id,
            fill.trade_id,
            fill.client_order_id or "",
            fill.venue_order_id or "",
            fill.side.value,
            str(fill.size),
            str(size_atoms),
            str(fill.price),
            str(fill.fee),
            fill.fee_ccy,
            fill.liquidity.value if fill.liquidity else "",
            str(fill.ts_ms),
            fill.layer.value,
            str(instrument.contract_value),
            str(fee_quote),
            str(fee_base_atoms),
            # Lets the script tell redis-py's retry of this call (after a lost reply)
            # from another delivery of the same fill.
            call_token,
        ]

    def _fill_result(self, fill: Fill, reply: list[str]) -> FillResult | StoreError:
        status = reply[0]
        if status == "applied":
            _, strategy, _coid, qty, avg, rpnl, fees, count, updated, applied = reply
            applied_ok = True
        elif status in ("duplicate", "retried"):
            _, strategy, _coid, side, size, price, qty, avg, rpnl, fees, count, updated, applied = reply
            if status == "duplicate":
                self._warn_if_conflicting(fill, side, size, price)
            applied_ok = status == "retried"
        elif status == "error" and len(reply) == 2:
            return StoreError(f"fill {fill.key}: {reply[1]}")
        else:
            return StoreError(f"apply_fill script returned {reply!r} for fill {fill.key}")
        fields = (
            {
                "strategy_id": strategy,
                "venue": fill.venue,
                "inst_id": fill.inst_id,
                "qty_atoms": qty,
                "avg_price": avg,
                "realized_pnl": rpnl,
                "fees": fees,
                "fill_count": count,
                "updated_ms": updated,
            }
            if qty
            else {}
        )
        return FillResult(
            applied=applied_ok,
            strategy_id=strategy,
            position=_position_from_fields(fields, strategy, fill.venue, fill.inst_id),
            order_applied_size=_applied_size(applied),
        )

    @staticmethod
    def _split_fee(fill: Fill, instrument: Instrument) -> tuple[Decimal, int]:
        """(fee counted in quote, fee in base atoms) of ``fill``."""
        ccy = fill.fee_ccy.upper()
        if fill.fee == 0:
            return Decimal(0), 0
        if ccy == instrument.base.upper():
            return Decimal(0), to_atoms(fill.fee, f"fill {fill.key} base-currency fee")
        quote_like = {instrument.quote.upper(), (instrument.settle or instrument.quote).upper(), ""}
        if ccy in quote_like:
            return fill.fee, 0
        # A third currency cannot be folded into quote fees without a rate;
        # refusing is the fail-closed choice (the fill-health layer will notice).
        raise StoreError(
            f"fill {fill.key}: fee currency {fill.fee_ccy!r} is neither base, quote nor "
            f"settle of {instrument.inst_id}"
        )

    @staticmethod
    def _warn_if_conflicting(fill: Fill, side: str, size: str, price: str) -> None:
        try:
            same = (side, Decimal(size), Decimal(price)) == (fill.side.value, fill.size, fill.price)
        except InvalidOperation:
            same = False
        if not same:
            # Same trade id, different content: a venue or adapter bug. The first
            # record stays; the log line lets someone find out which one is right.
            log.error(
                "fill %s delivered by %s differs from the applied record "
                "(side %s size %s price %s vs applied %s %s %s); kept the applied one",
                fill.key,
                fill.layer.value,
                fill.side.value,
                fill.size,
                fill.price,
                side,
                size,
                price,
            )

    async def fills_for_order(self, client_order_id: str) -> list[Fill]:
        """Applied fills counted against the order, in canonical order (ts_ms, fill id).

        A fill counts against an order when its ``client_order_id`` names it or
        the venue order id index led to it, even if it was applied before the
        order was recorded (then it is in the ``_unattributed`` position).
        ``layer`` is the layer whose delivery applied the fill.
        """
        keys = self._keys
        with _translate(f"reading fills of order {client_order_id}"):
            fill_ids = await self._client.zrange(keys.order_fills(client_order_id), 0, -1)
            if not fill_ids:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for fill_id in fill_ids:
                    pipe.hgetall(keys.fill(_text(fill_id)))
                raw = await pipe.execute()
        return [_fill_from_fields(_text_map(r)) for r in raw if r]

    async def applied_size(self, client_order_id: str) -> Decimal:
        """Sum of the sizes of applied fills counted against the order (0 if none)."""
        with _translate(f"reading applied size of order {client_order_id}"):
            raw = await self._client.get(self._keys.order_applied(client_order_id))
        return _applied_size(raw)

    async def audit_entries(self, count: int | None = None) -> list[AuditEntry]:
        """The audit stream, oldest first: all of it, or its ``count`` most recent entries."""
        raw: Any  # redis-py types stream replies loosely; the shape is [(id, {field: value})]
        with _translate("reading the audit stream"):
            if count is None:
                raw = await self._client.xrange(self._keys.audit)
            else:
                newest_first: Any = await self._client.xrevrange(self._keys.audit, count=count)
                raw = list(reversed(newest_first))
        entries = []
        for entry_id, raw_fields in raw:
            fields = _text_map(raw_fields)
            entries.append(
                AuditEntry(
                    entry_id=_text(entry_id),
                    fill=_fill_from_fields(fields),
                    strategy_id=fields["strategy_id"],
                    attributed_order_id=fields["attributed_order_id"] or None,
                    applied_ms=int(fields["applied_ms"]),
                )
            )
        return entries

    async def order_events(self, after_id: str = "0-0", count: int = 1000) -> list[tuple[str, Order]]:
        """Order writes after stream id ``after_id``, oldest first: ``(entry_id, order)``.

        Every ``record_order`` and every accepted ``update_order`` appends one
        entry in the same atomic step, so a reader that keeps its last id
        sees every order change exactly once.
        """
        raw: Any
        with _translate("reading order events"):
            raw = await self._client.xrange(self._keys.order_events, min=f"({after_id}", count=count)
        return [(_text(eid), Order.model_validate_json(_text_map(f)["order"])) for eid, f in raw]

    async def fill_layer_counts(self, venue: str | None = None) -> dict[str, dict[str, int]]:
        """Per layer: ``delivered`` (every apply_fill call that reached Redis,
        duplicates included) and ``applied`` (fills it applied first), for one
        venue or summed over all venues. Every layer is present."""
        with _translate("reading fill layer counters"):
            raw = _text_map(await self._client.hgetall(self._keys.fill_layers))
        counts = {layer.value: {"delivered": 0, "applied": 0} for layer in FillLayer}
        for field, value in raw.items():
            field_venue, layer, kind = field.rsplit(":", 2)
            if venue is not None and field_venue != venue:
                continue
            counts.setdefault(layer, {"delivered": 0, "applied": 0})[kind] += int(value)
        return counts

    # -- orders -------------------------------------------------------------------

    async def record_order(self, order: Order) -> bool:
        """Write ``order`` before it is sent and add it to its venue's open set.

        SET NX semantics on ``client_order_id``: returns False, writing
        nothing, when an order with that id already exists. A retry of this
        same call by the client after a lost reply still returns True. (After
        a ``StoreUnavailable`` the call may have landed anyway: a new call then
        returns False, so compare with ``get_order`` before treating it as a
        collision.)

        Raises:
            StoreError: ``order.venue_order_id`` already belongs to another order,
                or Redis failed.
            StoreUnavailable: Redis does not answer.
        """
        keys = self._keys
        has_void = order.venue_order_id is not None
        index_key = keys.venue_order(order.venue, order.venue_order_id) if order.venue_order_id is not None else keys.unused
        with _translate(f"recording order {order.client_order_id}"):
            created = await self._record_order(
                keys=[
                    keys.order(order.client_order_id),
                    keys.open_orders(order.venue),
                    keys.open_venues,
                    index_key,
                    keys.order_events,
                ],
                args=[
                    order.model_dump_json(),
                    order.client_order_id,
                    order.strategy_id,
                    order.venue,
                    order.state.value,
                    str(order.updated_ms),
                    "1" if has_void else "0",
                    uuid.uuid4().hex,  # a retry of this call after a lost reply still gets True
                ],
            )
        return int(created) == 1

    async def update_order(self, order: Order) -> Order:
        """Store a newer snapshot of a recorded order; return the stored snapshot.

        A snapshot older than the stored one (``updated_ms`` smaller) is
        ignored and the stored one returned: the store never moves backwards.
        A snapshot without ``venue_order_id`` keeps the known one. The venue
        order id is indexed to find the order from fills that carry only it.
        The open set is never touched (see ``untrack_order``).

        Raises:
            InvalidOrderTransition: the state machine forbids stored state ->
                ``order.state``.
            StoreError: the order was never recorded, its strategy, venue,
                instrument or side differ from the recorded ones, its venue
                order id changed or belongs to another order, or Redis failed.
            StoreUnavailable: Redis does not answer.
        """
        keys = self._keys
        coid = order.client_order_id
        order_key = keys.order(coid)
        for _ in range(_CAS_ATTEMPTS):
            with _translate(f"reading order {coid}"):
                rev, raw_json = await self._client.hmget(order_key, ["rev", "json"])
            if rev is None or raw_json is None:
                raise StoreError(f"order {coid} was never recorded; record_order() comes first")
            current = Order.model_validate_json(_text(raw_json))
            for name in ("strategy_id", "venue", "inst_id", "side"):
                if getattr(current, name) != getattr(order, name):
                    raise StoreError(
                        f"order {coid}: {name} {getattr(order, name)!r} differs from the "
                        f"recorded {getattr(current, name)!r}"
                    )
            if order.updated_ms < current.updated_ms:
                return current
            if order.state is not current.state:
                current.transition(order.state, now_ms=order.updated_ms)  # raises if forbidden
            if current.venue_order_id is not None:
                if order.venue_order_id is None:
                    order = order.model_copy(update={"venue_order_id": current.venue_order_id})
                elif order.venue_order_id != current.venue_order_id:
                    raise StoreError(
                        f"order {coid}: venue order id {order.venue_order_id} differs from the "
                        f"known {current.venue_order_id}"
                    )
            has_void = order.venue_order_id is not None
            index_key = (
                keys.venue_order(order.venue, order.venue_order_id) if order.venue_order_id is not None else keys.unused
            )
            with _translate(f"updating order {coid}"):
                reply = await self._update_order(
                    keys=[order_key, index_key, keys.order_events],
                    args=[
                        _text(rev),
                        order.model_dump_json(),
                        coid,
                        order.state.value,
                        str(order.updated_ms),
                        "1" if has_void else "0",
                    ],
                )
            status = _text(reply[0])
            if status == "ok":
                return order
            if status == "missing":
                raise StoreError(f"order {coid} disappeared while being updated")
            if status == "conflict":
                raise StoreError(
                    f"order {coid}: venue order id {order.venue_order_id} already belongs to "
                    f"order {_text(reply[1])}"
                )
        raise StoreError(f"order {coid} kept changing during {_CAS_ATTEMPTS} update attempts")

    async def get_order(self, client_order_id: str) -> Order | None:
        with _translate(f"reading order {client_order_id}"):
            raw = await self._client.hget(self._keys.order(client_order_id), "json")
        return Order.model_validate_json(_text(raw)) if raw is not None else None

    async def find_order_by_venue_id(self, venue: str, venue_order_id: str) -> Order | None:
        with _translate(f"looking up venue order {venue}:{venue_order_id}"):
            coid = await self._client.get(self._keys.venue_order(venue, venue_order_id))
        return await self.get_order(_text(coid)) if coid is not None else None

    async def _tracked_order_ids(self, venue: str | None) -> list[str]:
        """Client order ids in the polling set of ``venue`` (of every venue when None); the caller translates errors."""
        keys = self._keys
        if venue is None:
            venues = sorted(_text(v) for v in await self._client.smembers(keys.open_venues))
        else:
            venues = [venue]
        coids: list[str] = []
        for v in venues:
            coids.extend(_text(c) for c in await self._client.smembers(keys.open_orders(v)))
        return coids

    async def open_orders(
        self, venue: str | None = None, strategy_id: str | None = None
    ) -> list[Order]:
        """The tracked orders (recorded, not yet untracked), oldest first.

        Tracked is not the same as live at the venue: a filled or canceled
        order stays tracked until the poller untracks it.
        """
        return [order for order, _ in await self.open_orders_with_applied(venue, strategy_id)]

    async def open_orders_with_applied(
        self, venue: str | None = None, strategy_id: str | None = None
    ) -> list[tuple[Order, Decimal]]:
        """The tracked orders (as ``open_orders``), each with its applied size.

        With a ``venue``, two round trips whatever the number of orders (the
        open set, then one pipeline of snapshots and applied sizes); the pairs
        also come from one moment, so a checker never compares a snapshot with
        an applied size read much later.
        """
        keys = self._keys
        with _translate("reading open orders"):
            coids = await self._tracked_order_ids(venue)
            if not coids:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for coid in coids:
                    pipe.hget(keys.order(coid), "json")
                    pipe.get(keys.order_applied(coid))
                raw = await pipe.execute()
        pairs = []
        for snapshot, applied in zip(raw[::2], raw[1::2], strict=True):
            if snapshot is None:
                continue
            order = Order.model_validate_json(_text(snapshot))
            if strategy_id is None or order.strategy_id == strategy_id:
                pairs.append((order, _applied_size(applied)))
        return sorted(pairs, key=lambda p: (p[0].created_ms, p[0].client_order_id))

    async def exposure(
        self, venue: str | None = None, strategy_id: str | None = None
    ) -> tuple[list[tuple[Order, Decimal]], list[Position]]:
        """The tracked orders with their applied sizes (as ``open_orders_with_applied``, of
        ``venue`` / ``strategy_id``), then every position (``positions()``, of every strategy:
        what an order may still do is weighed against the account's net).

        Read in that order on purpose. A fill is applied atomically with its order's applied
        size, and an order is untracked only once its fills are applied. With the orders read
        first, a fill applied between the two reads counts twice (still in flight, and in the
        position): the checks err on the side of less room. With positions read first it would
        count zero times (not yet in the position, no longer in flight), and a limit, the
        duplicate-close guard or the venue's reduce-only decision would see room that is not
        there. Every reader that weighs orders against positions reads them here.
        """
        orders = await self.open_orders_with_applied(venue, strategy_id)
        return orders, await self.positions()

    async def untrack_order(self, client_order_id: str) -> None:
        """Remove the order from its venue's open set (the REST polling set).

        Contract: only the poller calls this, and only after it has itself seen
        the order in a terminal state AND the fills applied for it add up to
        the order's filled size. The WS path never calls it: a layer must not
        switch off the layer that backs it up. Unknown or already untracked
        orders are a no-op; the order record itself stays.
        """
        keys = self._keys
        with _translate(f"untracking order {client_order_id}"):
            venue = await self._client.hget(keys.order(client_order_id), "venue")
            if venue is not None:
                await self._client.srem(keys.open_orders(_text(venue)), client_order_id)

    # -- positions ------------------------------------------------------------------

    async def position(self, strategy_id: str, venue: str, inst_id: str) -> Position:
        """The position (flat with zero counters when no fill was ever applied)."""
        keys = self._keys
        with _translate(f"reading position {strategy_id} {venue}:{inst_id}"):
            raw = await self._client.hgetall(
                keys.position(position_id(strategy_id, venue, inst_id))
            )
        return _position_from_fields(_text_map(raw), strategy_id, venue, inst_id)

    async def positions(self, strategy_id: str | None = None) -> list[Position]:
        """Every position that ever had a fill (flat ones included), sorted by
        strategy, venue, instrument; of one strategy if given."""
        keys = self._keys
        with _translate("reading positions"):
            ids = sorted(_text(i) for i in await self._client.smembers(keys.positions))
            if not ids:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for position_id in ids:
                    pipe.hgetall(keys.position(position_id))
                raw = await pipe.execute()
        result = []
        for fields in (_text_map(r) for r in raw if r):
            if strategy_id is None or fields["strategy_id"] == strategy_id:
                result.append(_position_from_fields(fields, "", "", ""))
        return sorted(result, key=lambda p: (p.strategy_id, p.venue, p.inst_id))

    # -- liveness and control state --------------------------------------------------

    async def heartbeat(self, component: str, ts_ms: int) -> None:
        with _translate(f"writing heartbeat of {component}"):
            await self._client.hset(self._keys.heartbeats, component, str(ts_ms))

    async def heartbeats(self) -> dict[str, int]:
        """component -> ts_ms of its latest heartbeat."""
        with _translate("reading heartbeats"):
            raw = await self._client.hgetall(self._keys.heartbeats)
        return {k: int(v) for k, v in _text_map(raw).items()}

    async def heartbeat_text(self, component: str) -> str | None:
        """The stored heartbeat field of ``component`` as text, unparsed (None: not present)."""
        with _translate(f"reading heartbeat of {component}"):
            raw = await self._client.hget(self._keys.heartbeats, component)
        return None if raw is None else _text(raw)

    async def set_strategy_state(self, strategy_id: str, state: StrategyState | str) -> None:
        """Raises: ValueError: ``state`` is not a ``StrategyState`` (nor the text of one)."""
        try:
            value = StrategyState(state)
        except ValueError:
            raise ValueError(
                f"strategy state {state!r} is not one of {', '.join(sorted(STRATEGY_STATES))}"
            ) from None
        with _translate(f"writing state of strategy {strategy_id}"):
            await self._client.hset(self._keys.strategy_states, strategy_id, value.value)

    async def transition_strategy_state(
        self, strategy_id: str, from_states: Collection[StrategyState | None], to: StrategyState
    ) -> bool:
        """Set the state of ``strategy_id`` to ``to`` only if it is one of ``from_states``
        (None: no state recorded), atomically; True when it was set.

        The one check-and-set for writers that must not overwrite another's state
        (the host and the risk monitor never overwrite the kill switch's
        WINDING_DOWN or KILLED), however their reads and writes interleave.
        """
        args = [StrategyState(to).value, *("" if s is None else StrategyState(s).value for s in from_states)]
        with _translate(f"moving strategy {strategy_id} to {to.value}"):
            changed = await self._transition_state(keys=[self._keys.strategy_states], args=[strategy_id, *args])
        return int(changed) == 1

    async def strategy_state(self, strategy_id: str) -> StrategyState | None:
        """The state of one strategy (None: none recorded).

        For a reader that needs only its own entry (a strategy host, the
        freshness gate): another strategy's garbled entry must not refuse its
        orders or break its pause.

        Raises:
            StoreError: the stored state is not a ``StrategyState``.
        """
        with _translate(f"reading the state of strategy {strategy_id}"):
            raw = await self._client.hget(self._keys.strategy_states, strategy_id)
        if raw is None:
            return None
        return _strategy_state(strategy_id, _text(raw))

    @overload
    async def strategy_states(self, *, strict: Literal[True] = True) -> dict[str, StrategyState]: ...

    @overload
    async def strategy_states(self, *, strict: Literal[False]) -> dict[str, str]: ...

    async def strategy_states(self, *, strict: bool = True) -> dict[str, StrategyState] | dict[str, str]:
        """Strategy id -> state.

        ``strict=False`` returns the stored texts as they are, garbled ones too:
        for the callers that must act on every strategy whatever one entry says
        (the kill switch winding everything down, the risk monitor pausing).

        Raises:
            StoreError: (strict) a stored state is not a ``StrategyState`` (the message names the strategy).
        """
        with _translate("reading strategy states"):
            raw = _text_map(await self._client.hgetall(self._keys.strategy_states))
        if not strict:
            return raw
        return {strategy_id: _strategy_state(strategy_id, text) for strategy_id, text in raw.items()}

    async def set_kill_flag(self, reason: str, ts_ms: int) -> None:
        """Set (or re-set with a new reason) the global kill flag."""
        with _translate("setting the kill flag"):
            await self._client.hset(
                self._keys.kill, mapping={"reason": reason, "ts_ms": str(ts_ms)}
            )

    async def clear_kill_flag(self) -> None:
        with _translate("clearing the kill flag"):
            await self._client.delete(self._keys.kill)

    async def kill_flag(self) -> str | None:
        """The reason of the kill flag, or None when it is not set."""
        with _translate("reading the kill flag"):
            raw = await self._client.hget(self._keys.kill, "reason")
        return _opt_text(raw)

    async def reset_namespace(self) -> int:
        """Delete every key of this namespace (SCAN, never KEYS); return how many.

        Keys of other namespaces are untouched. Not atomic: do not run it while
        anything writes to the namespace.
        """
        deleted = 0
        with _translate(f"resetting namespace {self.namespace}"):
            batch: list[Any] = []
            async for key in self._client.scan_iter(match=self._keys.scan_pattern, count=500):
                batch.append(key)
                if len(batch) >= _DELETE_BATCH:
                    deleted += await self._client.delete(*batch)
                    batch = []
            if batch:
                deleted += await self._client.delete(*batch)
        return deleted

    # -- kill switch journal and lease ------------------------------------------------
    # The records are JSON of risk.kill_switch's KillProgress / KillStep: core sits below
    # risk and stores them as text; actors.kill_switch.KillJournal gives them their types.

    async def save_kill_progress(
        self, scope: str, progress_json: str, *, state: str, reason: str, updated_ms: int
    ) -> None:
        """Write a kill's progress and index its scope, in one transaction.

        ``state`` and ``reason`` are copied beside the JSON for redis-cli readers.
        """
        with _translate(f"writing kill progress of {scope}"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.kill_progress(scope), mapping={
                    "json": progress_json, "state": state, "reason": reason,
                    "updated_ms": str(updated_ms),
                })
                pipe.sadd(self._keys.kills, scope)
                await pipe.execute()

    async def kill_progress(self, scope: str) -> str | None:
        """The progress JSON of the kill of ``scope``; None if it was never killed."""
        with _translate(f"reading kill progress of {scope}"):
            return _opt_text(await self._client.hget(self._keys.kill_progress(scope), "json"))

    async def kill_scopes(self) -> list[str]:
        """Every scope that has a kill record, sorted."""
        with _translate("reading kill scopes"):
            return sorted(_text(s) for s in await self._client.smembers(self._keys.kills))

    async def append_kill_step(self, scope: str, step_json: str) -> None:
        """Append to the audit stream of ``scope`` (capped at about 10,000 entries)."""
        with _translate(f"appending to the kill log of {scope}"):
            await self._client.xadd(self._keys.kill_log(scope), {"json": step_json},
                                    maxlen=_KILL_LOG_MAXLEN, approximate=True)

    async def kill_steps(self, scope: str, count: int | None = None) -> list[str]:
        """The JSON of the latest ``count`` steps of ``scope`` (all when None), oldest first."""
        key = self._keys.kill_log(scope)
        raw: list[Any]
        with _translate(f"reading the kill log of {scope}"):
            if count is None:
                raw = list(await self._client.xrange(key) or ())
            else:
                raw = list(reversed(await self._client.xrevrange(key, count=count) or ()))
        return [_text_map(fields)["json"] for _, fields in raw]

    async def acquire_kill_lease(self, owner: str, now_ms: int, lease_ms: int) -> str | None:
        """Take or renew the kill executor lease until ``now_ms + lease_ms``.

        Returns None when ``owner`` holds it now, else the id of the executor holding it.
        """
        with _translate("taking the kill lease"):
            holder = await self._client.eval(
                _KILL_LEASE_LUA, 1, self._keys.kill_lease, owner, str(now_ms), str(now_ms + lease_ms)
            )
        return (_text(holder) if holder is not None else "") or None

    async def release_kill_lease(self, owner: str) -> None:
        """Release the lease if ``owner`` holds it (else leave it alone)."""
        with _translate("releasing the kill lease"):
            await self._client.eval(_KILL_RELEASE_LUA, 1, self._keys.kill_lease, owner)

    # -- day P&L baselines --------------------------------------------------------------

    async def day_pnl_baselines(self, day: str, candidates: Mapping[str, Decimal]) -> dict[str, Decimal]:
        """Set each candidate baseline not yet set on ``day``, then return all of that day's.

        ``candidates`` maps position id -> its net P&L now (``risk.day_pnl.candidate_baselines``).
        HSETNX: the first observer of a position on a day sets its baseline and nobody
        moves it, so every reader agrees whoever looks first. One pipelined round trip;
        the hash expires after ``PNL_DAY_TTL_SECS``. Returns position id -> baseline,
        including positions others observed.
        """
        key = self._keys.risk_pnl_day(day)
        with _translate(f"updating day P&L baselines of {day}"):
            pipe = self._client.pipeline(transaction=False)
            for position_id, value in candidates.items():
                pipe.hsetnx(key, position_id, str(value))
            pipe.expire(key, PNL_DAY_TTL_SECS)
            pipe.hgetall(key)
            raw = (await pipe.execute())[-1]
        return {k: Decimal(v) for k, v in _text_map(raw).items()}
