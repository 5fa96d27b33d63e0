"""Last traded prices ("marks") per instrument, shared through Redis.

Each venue's gateway records the last ticker price of every instrument it
receives tickers for in ``{namespace}:marks:{venue}`` (a hash, field
``inst_id``, value ``{"px", "ts_ms", "recv_ms"}``); the strategy hosts read
them to value exposure for the notional limits, including positions of other
strategies on instruments they do not subscribe to themselves.

Age is judged on ``recv_ms``, our clock when the ticker arrived, not on the
venue's ``ts_ms``: a venue clock running ahead of ours (the simulator's
``time_scale``, or skew) must not make every mark look fresh or stale.

Redis failures raise ``StoreUnavailable`` / ``StoreError``; the order path
treats an unreadable mark as unknown (the notional check then refuses).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from tradetree.core.redis_calls import redis_call
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.text import as_text

__all__ = ["Mark", "MarkBook", "fresher", "usable_marks"]

MarkKey = tuple[str, str]  # venue, inst_id


class Mark(BaseModel):
    """One instrument's last price: ``ts_ms`` on the venue's clock, ``recv_ms`` on ours."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    price: Decimal
    ts_ms: int
    recv_ms: int


def fresher(a: Mark | None, b: Mark | None) -> Mark | None:
    """The mark received last (by ``recv_ms``; ``a`` on a tie); None when both are."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b.recv_ms > a.recv_ms else a


def usable_marks(
    marks: Mapping[MarkKey, Mark], wanted: Iterable[MarkKey], now_ms: int, max_age_ms: int
) -> tuple[dict[MarkKey, Decimal], dict[MarkKey, str]]:
    """Split ``wanted`` into prices fresh enough to use and why the others are not.

    A mark received more than ``max_age_ms`` before ``now_ms`` is unknown (fail
    closed: an instrument whose feed died is not valued at a price from before
    it died). A mark stamped in the future (clock skew between processes)
    counts as fresh. Returns ``(prices, why_not)``; every wanted key is in
    exactly one of them.
    """
    prices: dict[MarkKey, Decimal] = {}
    why_not: dict[MarkKey, str] = {}
    for key in wanted:
        mark = marks.get(key)
        if mark is None:
            why_not[key] = "no mark recorded"
            continue
        age_ms = now_ms - mark.recv_ms
        if age_ms > max_age_ms:
            why_not[key] = f"last mark {age_ms / 1000:.1f} s old, max {max_age_ms / 1000:g} s"
        else:
            prices[key] = mark.price
    return prices, why_not


class MarkBook:
    """Read and write the marks hashes. Works on redis.asyncio and fakeredis clients."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.keys = RedisKeys(namespace)

    async def _do(self, coro):
        return await redis_call(coro)

    async def write(self, venue: str, marks: Mapping[str, Mark]) -> None:
        """Record ``inst_id -> mark`` for ``venue`` in one command (no-op when empty).

        The caller writes only marks newer than the ones it wrote before (a
        gateway is the one writer of its venue's hash).
        """
        if not marks:
            return
        mapping: dict[Any, Any] = {
            inst_id: json.dumps({"px": str(m.price), "ts_ms": m.ts_ms, "recv_ms": m.recv_ms})
            for inst_id, m in marks.items()
        }
        await self._do(self.client.hset(self.keys.marks(venue), mapping=mapping))

    async def read(self, wanted: Iterable[MarkKey]) -> dict[MarkKey, Mark]:
        """The recorded marks of ``wanted`` (absent: never recorded, or unreadable JSON)."""
        by_venue: dict[str, list[str]] = {}
        for venue, inst_id in sorted(set(wanted)):
            by_venue.setdefault(venue, []).append(inst_id)
        if not by_venue:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for venue, inst_ids in by_venue.items():
            pipe.hmget(self.keys.marks(venue), inst_ids)
        replies = await self._do(pipe.execute())
        out: dict[MarkKey, Mark] = {}
        for (venue, inst_ids), values in zip(by_venue.items(), replies):
            for inst_id, raw in zip(inst_ids, values):
                if raw is None:
                    continue
                try:
                    d = json.loads(as_text(raw))
                    out[(venue, inst_id)] = Mark(price=Decimal(d["px"]), ts_ms=int(d["ts_ms"]),
                                                 recv_ms=int(d["recv_ms"]))
                except (ValueError, KeyError, TypeError, ArithmeticError):
                    continue  # a garbled entry is an unknown mark: the check fails closed
        return out
