"""Stopping an actor's background loops without hanging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

__all__ = ["cancel_and_wait"]

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task], *, timeout_secs: float, owner: str) -> None:
    """Cancel ``tasks`` and wait for them at most ``timeout_secs``; log any that did not stop.

    A library can swallow a cancellation (a timeout racing the cancel in
    redis-py, fakeredis or aiohttp), so callers' loops should also watch a
    closing flag; this never waits on them for ever and never raises.
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_secs)
    for task in pending:
        log.error("%s: task %s did not stop", owner, task.get_name())
