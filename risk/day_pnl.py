"""Today's realized P&L per strategy, from day baselines kept in Redis.

A position's baseline is its net P&L (``position_net_pnl``) when it was
first observed on a UTC day; today's P&L is the difference from it. The
baselines live in ``{namespace}:ctl:risk_pnl_day:{YYYYMMDD}`` (a hash,
field = position id, expires after three days), written with HSETNX: the
first observer of a position on a day sets its baseline and nobody moves it,
so the risk monitor and every strategy host agree on it whoever looks first.

A position first observed after it already lost today counts that loss as
yesterday's: the baselines are taken by whoever reads positions first each
day (the risk monitor's loop, twice a second by default), so the gap is one
loop at the day's start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal

import redis.asyncio as aioredis

from tradetree.core.redis_calls import redis_call
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.types import Position
from tradetree.risk.rules import daily_pnl_by_strategy, position_net_pnl

__all__ = ["PNL_DAY_TTL_SECS", "DayBaselines", "pnl_day_key"]

PNL_DAY_TTL_SECS = 3 * 86_400


def pnl_day_key(namespace: str, now_ms: int) -> str:
    """The baselines hash of the UTC day containing ``now_ms``."""
    return f"{namespace}:ctl:risk_pnl_day:{time.strftime('%Y%m%d', time.gmtime(now_ms / 1000))}"


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class DayBaselines:
    """Day baselines of positions in Redis. Works on redis.asyncio and fakeredis clients."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def baselines(self, positions: Iterable[Position], now_ms: int) -> dict[str, Decimal]:
        """Set the baseline of each of ``positions`` not yet seen today, then return all of today's.

        One pipelined round trip (HSETNX per position, EXPIRE, HGETALL).
        Returns position id -> baseline, including positions others observed.

        Raises:
            StoreUnavailable: Redis does not answer.
            StoreError: any other Redis error.
        """
        key = pnl_day_key(self.namespace, now_ms)
        pipe = self.client.pipeline(transaction=False)
        for p in positions:
            pipe.hsetnx(key, RedisKeys.position_id(p.strategy_id, p.venue, p.inst_id), str(position_net_pnl(p)))
        pipe.expire(key, PNL_DAY_TTL_SECS)
        pipe.hgetall(key)
        raw = (await redis_call(pipe.execute()))[-1]
        return {_s(k): Decimal(_s(v)) for k, v in raw.items()}

    async def daily_pnl(self, positions: Iterable[Position], now_ms: int) -> dict[str, Decimal]:
        """Realized P&L net of fees today, per strategy of ``positions`` (see ``baselines``).

        Raises:
            StoreUnavailable: Redis does not answer.
            StoreError: any other Redis error.
        """
        positions = list(positions)
        return daily_pnl_by_strategy(positions, await self.baselines(positions, now_ms))
