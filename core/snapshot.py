"""The status snapshot of a tree, read from Redis alone.

It reads Redis only (plus the supervisor's view of actor health when given),
so the same view works from any process: the run loop, the CLI and the
metrics exporter.
"""

from __future__ import annotations

from typing import Any

from tradetree.core.store import RedisStore

__all__ = ["collect_snapshot"]


async def collect_snapshot(store: RedisStore, actor_health: dict[str, Any] | None = None) -> dict[str, Any]:
    positions = await store.positions()
    return {
        "strategies": await store.strategy_states(),
        "positions": [p.model_dump(mode="json") for p in positions],
        "fills_by_layer": await store.fill_layer_counts(),
        "kill_flag": await store.kill_flag(),
        "heartbeats": await store.heartbeats(),
        "actors": actor_health or {},
    }
