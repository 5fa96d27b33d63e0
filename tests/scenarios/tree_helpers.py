"""Read helpers for the supervision, kill-switch and restart scenarios (on top of ``harness.Tree``).

Everything here reads; nothing changes the tree. Ray calls carry a timeout so
a dead actor fails the read (``Tree.wait_for`` keeps polling through it).
"""

from __future__ import annotations

from typing import Any

import ray

from tests.scenarios.harness import Tree
from tradetree.core.types import Order

__all__ = [
    "RAY_TIMEOUT_SECS",
    "call",
    "orders_of",
    "heartbeat_ms",
    "kill_flag",
    "supervisor_status",
    "child_info",
    "breakers",
]

RAY_TIMEOUT_SECS = 10


def call(tree: Tree, actor: str, method: str, *args: Any) -> Any:
    """``actor.method(*args)`` on the named actor of the tree, waited for."""
    return ray.get(getattr(tree.actor(actor), method).remote(*args), timeout=RAY_TIMEOUT_SECS)


def orders_of(tree: Tree, strategy_id: str | None = None) -> dict[str, Order]:
    """Every order ever recorded (latest snapshot), by client order id, from the order events stream."""

    async def read(store, _control):
        latest: dict[str, Order] = {}
        after = "0-0"
        while True:
            batch = await store.order_events(after_id=after, count=1000)
            if not batch:
                return latest
            for entry_id, order in batch:
                if strategy_id is None or order.strategy_id == strategy_id:
                    latest[order.client_order_id] = order
                after = entry_id

    return tree.redis(read)


def heartbeat_ms(tree: Tree, component: str) -> int | None:
    """The latest heartbeat of ``component`` (e.g. ``reconciler:okx``) in Redis."""
    return tree.redis(lambda s, c: s.heartbeats()).get(component)


def kill_flag(tree: Tree) -> str | None:
    return tree.redis(lambda s, c: s.kill_flag())


def breakers(tree: Tree) -> dict[str, dict[str, Any]]:
    return tree.redis(lambda s, c: c.breakers())


def supervisor_status(tree: Tree, supervisor_id: str) -> dict[str, Any]:
    """A supervisor's own ``status()`` (state, restarts in window, escalation reason, children)."""
    return call(tree, supervisor_id, "status")


def child_info(tree: Tree, child_id: str) -> dict[str, Any]:
    """One actor's row in the flattened tree status: state, restarts, parent, detail."""
    return tree.status()[child_id]
