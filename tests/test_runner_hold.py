"""A strategy a dead engine left RUNNING in Redis is held PAUSED (supervisor hold) at the next start."""

from tradetree.core.control_state import ControlState
from tradetree.core.store import RedisStore
from tradetree.runner import hold_running_strategies


async def test_running_strategies_are_held_and_others_kept(fake_redis, namespace):
    store = RedisStore(fake_redis, namespace)
    control = ControlState(fake_redis, namespace)
    await store.set_strategy_state("A", "RUNNING")
    await store.set_strategy_state("B", "PAUSED")
    await control.set_strategy_pause("B", "operator", "hands off", 1)
    await store.set_strategy_state("C", "KILLED")
    await store.set_strategy_state("other", "RUNNING")  # not configured here: not ours to touch

    held = await hold_running_strategies(store, ["A", "B", "C", "D"], 42)

    assert held == ["A"]
    assert await store.strategy_states() == {"A": "PAUSED", "B": "PAUSED", "C": "KILLED", "other": "RUNNING"}
    hold = await control.strategy_pause("A")
    assert hold["source"] == "supervisor" and hold["since_ms"] == 42  # the supervisor's release lifts it
    assert (await control.strategy_pause("B"))["source"] == "operator"
