"""Today's realized P&L per strategy, from day baselines (pure).

A position's baseline is its net P&L (``position_net_pnl``) when it was
first observed on a UTC day; today's P&L is the difference from it. The
store keeps the baselines (``RedisStore.day_pnl_baselines``): the first
observer of a position on a day sets its baseline and nobody moves it, so
the risk monitor and every strategy host agree on it whoever looks first.

A position first observed after it already lost today counts that loss as
yesterday's: the baselines are taken by whoever reads positions first each
day (the risk monitor's loop, twice a second by default), so the gap is one
loop at the day's start.

Reading them is the host's part::

    positions = list(positions)
    baselines = await store.day_pnl_baselines(utc_day(now_ms), candidate_baselines(positions))
    pnl = daily_pnl_by_strategy(positions, baselines)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal

from tradetree.core import Position, position_id
from tradetree.risk.rules import daily_pnl_by_strategy, position_net_pnl

__all__ = ["candidate_baselines", "daily_pnl_by_strategy", "utc_day"]


def utc_day(now_ms: int) -> str:
    """The UTC day containing ``now_ms``, as ``YYYYMMDD`` (the day baselines are kept per)."""
    return time.strftime("%Y%m%d", time.gmtime(now_ms / 1000))


def candidate_baselines(positions: Iterable[Position]) -> dict[str, Decimal]:
    """Position id -> net P&L now: each position's baseline if it is the day's first sight of it."""
    out: dict[str, Decimal] = {}
    for p in positions:
        # The first wins, as HSETNX would have it for a position listed twice.
        out.setdefault(position_id(p.strategy_id, p.venue, p.inst_id), position_net_pnl(p))
    return out
