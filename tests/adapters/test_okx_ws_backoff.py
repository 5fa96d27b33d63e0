"""OkxWsClient's reconnect backoff against the simulator: sessions dropped at once do not reset it,
a session that held does; every wait is recorded and stays within its ceiling."""

from __future__ import annotations

import asyncio

from tests.adapters.sim_helpers import eventually, venue_config
from tradetree.adapters.okx import OkxWsClient

MIN_SECS, MAX_SECS, STABLE_SECS = 0.02, 0.16, 0.5


async def _noop(message: dict) -> None:
    return None


async def test_backoff_grows_while_sessions_drop_at_once_and_starts_over_after_one_holds(sim):
    venue = venue_config(sim, ws_reconnect_min_secs=MIN_SECS, ws_reconnect_max_secs=MAX_SECS)
    client = OkxWsClient(f"{sim.ws_url}/public", venue=venue, on_message=_noop, stable_session_secs=STABLE_SECS)
    await client.start()
    try:
        for cut in range(6):  # drop every session as soon as it is up
            sessions = client.sessions
            sim.faults.cut_ws()
            await eventually(lambda before=sessions: client.sessions > before and client.connected, what=f"session {cut + 2}")
        waits = list(client.backoff_history)
        assert [attempt for attempt, _ in waits] == list(range(6))
        for attempt, delay in waits:
            ceiling = min(MAX_SECS, MIN_SECS * 2 ** attempt)
            assert ceiling / 2 <= delay <= ceiling
        assert waits[-1][1] >= MAX_SECS / 2 > MIN_SECS >= waits[0][1]

        await asyncio.sleep(STABLE_SECS * 1.5)  # this session holds
        sessions = client.sessions
        sim.faults.cut_ws()
        await eventually(lambda: client.sessions > sessions, what="reconnect after a held session")
        assert client.backoff_history[-1][0] == 0
    finally:
        await client.stop()
