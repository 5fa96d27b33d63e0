"""Venue pauses are held per source: a layer lifting its own pause never lifts another's."""

import pytest

from tradetree.core.control_state import (
    PAUSE_SOURCE_DRIFT,
    PAUSE_SOURCE_FILL_HEALTH,
    PAUSE_SOURCE_OPERATOR,
    ControlState,
)


@pytest.fixture(params=["real", "fake"])
def control(request, real_redis, fake_redis, namespace):
    return ControlState(real_redis if request.param == "real" else fake_redis, namespace)


async def test_each_source_holds_its_own_pause(control):
    assert await control.pause_venue("okx", "fills not on the WS", 10, source=PAUSE_SOURCE_FILL_HEALTH)
    assert await control.pause_venue("okx", "position drift", 20, source=PAUSE_SOURCE_DRIFT)
    # The same source again: the reason is updated, the pause keeps its start.
    assert not await control.pause_venue("okx", "fills still not on the WS", 30, source=PAUSE_SOURCE_FILL_HEALTH)
    assert await control.venue_pauses("okx") == {
        PAUSE_SOURCE_FILL_HEALTH: {"reason": "fills still not on the WS", "since_ms": 10},
        PAUSE_SOURCE_DRIFT: {"reason": "position drift", "since_ms": 20},
    }
    snap = await control.snapshot("okx")
    assert snap.venue_pause == "fills still not on the WS; position drift"  # oldest first
    assert set(snap.venue_pauses) == {PAUSE_SOURCE_FILL_HEALTH, PAUSE_SOURCE_DRIFT}

    assert await control.resume_venue("okx", PAUSE_SOURCE_FILL_HEALTH) == [PAUSE_SOURCE_FILL_HEALTH]
    assert await control.resume_venue("okx", PAUSE_SOURCE_FILL_HEALTH) == []
    assert await control.venue_pause("okx") == "position drift"  # still paused: drift holds it
    assert (await control.snapshot("other")).venue_pause is None  # per venue


async def test_resume_without_a_source_lifts_every_pause(control):
    await control.pause_venue("okx", "operator stop", 1)  # the default source is the operator
    await control.pause_venue("okx", "position drift", 2, source=PAUSE_SOURCE_DRIFT)
    assert await control.resume_venue("okx") == [PAUSE_SOURCE_DRIFT, PAUSE_SOURCE_OPERATOR]
    assert await control.venue_pauses("okx") == {}
    snap = await control.snapshot("okx")
    assert snap.venue_pause is None and snap.venue_pauses == {}
    assert await control.resume_venue("okx") == []
