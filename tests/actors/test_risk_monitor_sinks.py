"""The risk monitor reaches the alerter and the strategies through ActorClient, by the tree's names."""

from __future__ import annotations

import asyncio

from tradetree.actors.alerter import AlerterClient
from tradetree.actors.risk_monitor import RayStrategyPauser
from tradetree.core.names import ALERTER_ID
from tradetree.supervisor.actor_client import ActorClient


class _Method:
    def __init__(self, calls: list, name: str, fail: BaseException | None = None) -> None:
        self.calls, self.name, self.fail = calls, name, fail

    def remote(self, *args):
        self.calls.append((self.name, args))

        async def ref():
            if self.fail is not None:
                raise self.fail
            return None
        return ref()


class _Actor:
    def __init__(self, calls: list, fail: BaseException | None = None) -> None:
        self.alert = _Method(calls, "alert", fail)
        self.pause = _Method(calls, "pause", fail)


def _client(actors: dict) -> tuple[ActorClient, list]:
    looked_up: list = []

    def lookup(name, namespace):
        looked_up.append((name, namespace))
        if name not in actors:
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return actors[name]
    return ActorClient("ns", lookup=lookup, timeout_secs=5.0), looked_up


def test_alerts_go_to_the_tree_alerter_by_default() -> None:
    calls: list = []
    client, looked_up = _client({ALERTER_ID: _Actor(calls)})
    sink = AlerterClient(namespace="ns", client=client)
    assert sink.actor_name == ALERTER_ID == "Alerter"
    asyncio.run(sink.alert("critical", "k", "t", "x"))
    assert calls == [("alert", ("critical", "k", "t", "x"))]
    assert looked_up == [(ALERTER_ID, "ns")]


def test_pauser_tells_the_strategy_and_tolerates_a_missing_or_hung_one() -> None:
    calls: list = []
    client, _ = _client({"s1": _Actor(calls), "hung": _Actor(calls, TimeoutError())})
    pauser = RayStrategyPauser("ns", client=client)
    assert asyncio.run(pauser.pause("s1", "why")) is True
    assert calls == [("pause", ("why",))]
    assert asyncio.run(pauser.pause("gone", "why")) is False
    assert asyncio.run(pauser.pause("hung", "why")) is False
