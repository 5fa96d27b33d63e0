"""Fixtures shared by the gateway tests: a gateway on the simulator and its store."""

from tests.actors.test_gateway_sim import gateway, store

__all__ = ["gateway", "store"]
