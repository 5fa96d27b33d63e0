"""Control state shared through Redis by the defense layers.

The reconciler writes when it last verified a venue's positions, the
discrepancies it has open, the fill cursor and the venue pauses of its
checks; the risk monitor writes breakers; the freshness gate reads all of it
before every order. Keeping it in Redis means any actor restarted anywhere
resumes from it.

A venue pause is held per *source* (``fill_health``, ``drift``, ``operator``,
...): the venue is paused while any source holds a pause, and a layer that
lifts its own pause (the reconciler after a canary round trip proved the WS
fill path) never lifts another layer's.

Every key lives under ``{namespace}:ctl:``. Redis failures raise
``StoreUnavailable``: callers in the order path treat that as "unknown state",
which refuses the order (fail closed).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from tradetree.core.redis_calls import redis_call
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.text import as_text

__all__ = [
    "ControlSnapshot",
    "ControlState",
    "PAUSE_SOURCE_DRIFT",
    "PAUSE_SOURCE_FILL_HEALTH",
    "PAUSE_SOURCE_OPERATOR",
]

# Who paused a venue (the field of the venue's pause hash).
PAUSE_SOURCE_FILL_HEALTH = "fill_health"  # the fill-health layer: fills not arriving or not adding up
PAUSE_SOURCE_DRIFT = "drift"  # venue positions and Redis disagree
PAUSE_SOURCE_OPERATOR = "operator"


class ControlSnapshot(BaseModel):
    """Everything the freshness gate needs about one venue, read in one round trip.

    ``venue_pause`` is the reasons of every pause source joined (None: not
    paused); ``venue_pauses`` the pauses per source (``{source: {reason, since_ms}}``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    venue: str
    verified_at_ms: int | None
    discrepancies: dict[str, dict[str, Any]]
    venue_pause: str | None
    breakers: dict[str, dict[str, Any]]
    venue_pauses: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ControlState:
    """Async access to the control keys. Works on redis.asyncio and fakeredis clients."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.keys = RedisKeys(namespace)

    async def _do(self, coro):
        return await redis_call(coro)

    # -- verification ---------------------------------------------------------

    async def mark_verified(self, venue: str, ts_ms: int) -> None:
        """Record that ``venue``'s positions were checked against the venue at ``ts_ms``.

        Never moves backwards: a slow poll finishing late cannot make the
        venue look verified earlier than a faster one already recorded.
        """
        key = self.keys.ctl_verified(venue)
        script = "local c = tonumber(redis.call('GET', KEYS[1]) or '0') " \
                 "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end return 1"
        await self._do(self.client.eval(script, 1, key, str(ts_ms)))

    async def verified_at(self, venue: str) -> int | None:
        v = await self._do(self.client.get(self.keys.ctl_verified(venue)))
        return int(v) if v is not None else None

    # -- discrepancies --------------------------------------------------------

    async def open_discrepancy(self, venue: str, key: str, detail: str, ts_ms: int) -> bool:
        """Open (or keep) a discrepancy. Returns True if it was newly opened."""
        payload = json.dumps({"detail": detail, "since_ms": ts_ms})
        return bool(await self._do(self.client.hsetnx(self.keys.ctl_discrepancy(venue), key, payload)))

    async def close_discrepancy(self, venue: str, key: str) -> bool:
        return bool(await self._do(self.client.hdel(self.keys.ctl_discrepancy(venue), key)))

    async def discrepancies(self, venue: str) -> dict[str, dict[str, Any]]:
        return _json_map(await self._do(self.client.hgetall(self.keys.ctl_discrepancy(venue))))

    # -- venue pause ----------------------------------------------------------

    async def pause_venue(self, venue: str, reason: str, ts_ms: int, source: str = PAUSE_SOURCE_OPERATOR) -> bool:
        """Pause trading on ``venue`` on behalf of ``source``.

        A source already holding a pause keeps its ``since_ms``; its reason is
        replaced. Returns True if ``source`` did not hold a pause before.
        """
        key = self.keys.ctl_venue_pause(venue)
        if await self._do(self.client.hsetnx(key, source, json.dumps({"reason": reason, "since_ms": ts_ms}))):
            return True
        old = await self._do(self.client.hget(key, source))
        since = json.loads(as_text(old)).get("since_ms", ts_ms) if old is not None else ts_ms
        # A resume racing in between is overridden: pausing is the fail-closed outcome.
        await self._do(self.client.hset(key, source, json.dumps({"reason": reason, "since_ms": since})))
        return False

    async def resume_venue(self, venue: str, source: str | None = None) -> list[str]:
        """Lift the pause of ``source`` (None: of every source). Returns the sources lifted.

        The venue trades again only when no source holds a pause any more.
        """
        key = self.keys.ctl_venue_pause(venue)
        if source is not None:
            removed = await self._do(self.client.hdel(key, source))
            return [source] if removed else []
        pipe = self.client.pipeline(transaction=True)
        pipe.hkeys(key)
        pipe.delete(key)
        sources, _ = await self._do(pipe.execute())
        return sorted(as_text(k) for k in sources)

    async def venue_pauses(self, venue: str) -> dict[str, dict[str, Any]]:
        """The pauses held on ``venue``, per source: ``{source: {"reason", "since_ms"}}``."""
        return _json_map(await self._do(self.client.hgetall(self.keys.ctl_venue_pause(venue))))

    async def venue_pause(self, venue: str) -> str | None:
        """Why ``venue`` is paused (every source's reason, oldest first), or None if it is not."""
        return _pause_text(await self.venue_pauses(venue))

    # -- breakers -------------------------------------------------------------

    async def set_breaker(self, name: str, reason: str, ts_ms: int) -> bool:
        """Open breaker ``name`` (e.g. ``strategy:X:rejections``). True if newly opened."""
        payload = json.dumps({"reason": reason, "since_ms": ts_ms})
        return bool(await self._do(self.client.hsetnx(self.keys.ctl_breakers, name, payload)))

    async def clear_breaker(self, name: str) -> bool:
        return bool(await self._do(self.client.hdel(self.keys.ctl_breakers, name)))

    async def breakers(self) -> dict[str, dict[str, Any]]:
        return _json_map(await self._do(self.client.hgetall(self.keys.ctl_breakers)))

    # -- why a strategy is paused -----------------------------------------------

    async def set_strategy_pause(self, strategy_id: str, source: str, reason: str, ts_ms: int) -> None:
        """Record who paused a strategy and why (``source``: supervisor, risk, operator, ...)."""
        payload = json.dumps({"source": source, "reason": reason, "since_ms": ts_ms})
        await self._do(self.client.hset(self.keys.ctl_strategy_pause, strategy_id, payload))

    async def clear_strategy_pause(self, strategy_id: str) -> None:
        await self._do(self.client.hdel(self.keys.ctl_strategy_pause, strategy_id))

    async def strategy_pause(self, strategy_id: str) -> dict[str, Any] | None:
        v = await self._do(self.client.hget(self.keys.ctl_strategy_pause, strategy_id))
        return json.loads(as_text(v)) if v is not None else None

    # -- operator audit -----------------------------------------------------------

    async def append_operator_action(self, entry: dict[str, Any], maxlen: int = 10_000) -> str:
        """Record one operator action (who, when, what, why, outcome) on the audit stream; its id.

        Trimmed approximately past ``maxlen`` entries, so weeks of operation stay bounded.
        """
        fields: dict[Any, Any] = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in entry.items()}
        entry_id = await self._do(self.client.xadd(self.keys.operator_log, fields, maxlen=maxlen, approximate=True))
        return as_text(entry_id)

    async def operator_actions(self, count: int = 50) -> list[dict[str, Any]]:
        """The latest ``count`` operator actions, oldest first (each with its stream ``id``)."""
        raw = await self._do(self.client.xrevrange(self.keys.operator_log, count=count))
        return [{"id": as_text(i), **{as_text(k): as_text(v) for k, v in f.items()}} for i, f in reversed(raw)]

    # -- fill cursor ----------------------------------------------------------

    async def get_cursor(self, venue: str, inst_id: str) -> dict[str, Any] | None:
        v = await self._do(self.client.get(self.keys.ctl_cursor(venue, inst_id)))
        return json.loads(as_text(v)) if v is not None else None

    async def set_cursor(self, venue: str, inst_id: str, cursor: dict[str, Any]) -> None:
        await self._do(self.client.set(self.keys.ctl_cursor(venue, inst_id), json.dumps(cursor, sort_keys=True)))

    # -- one read for the gate ------------------------------------------------

    async def snapshot(self, venue: str) -> ControlSnapshot:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.ctl_verified(venue))
        pipe.hgetall(self.keys.ctl_discrepancy(venue))
        pipe.hgetall(self.keys.ctl_venue_pause(venue))
        pipe.hgetall(self.keys.ctl_breakers)
        verified, disc, pause, breakers = await self._do(pipe.execute())
        pauses = _json_map(pause)
        return ControlSnapshot(
            venue=venue,
            verified_at_ms=int(verified) if verified is not None else None,
            discrepancies=_json_map(disc),
            venue_pause=_pause_text(pauses),
            venue_pauses=pauses,
            breakers=_json_map(breakers),
        )


def _json_map(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """A hash of JSON values (discrepancies, pauses, breakers) as field -> decoded value."""
    return {as_text(k): json.loads(as_text(v)) for k, v in raw.items()}


def _pause_text(pauses: dict[str, dict[str, Any]]) -> str | None:
    if not pauses:
        return None
    ordered = sorted(pauses.items(), key=lambda kv: (kv[1].get("since_ms", 0), kv[0]))
    return "; ".join(str(info.get("reason", "")) or source for source, info in ordered)
