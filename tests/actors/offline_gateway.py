"""A VenueGateway wired by hand, with no venue and no Ray: what start() sets up, on fakeredis."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from tradetree.actors.gateway import VenueGateway
from tradetree.core.clock import ManualClock
from tradetree.core.config import VenueConfig, VenueCredentials
from tradetree.core.lifecycle import ComponentState
from tradetree.core.store import RedisStore
from tradetree.core.types import Instrument, InstrumentKind

__all__ = ["SWAP", "offline_gateway"]

SWAP = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                  settle="USDT", contract_value=Decimal("0.01"), tick_size=Decimal("0.1"),
                  lot_size=Decimal("0.01"), min_size=Decimal("0.01"))


def offline_gateway(redis: Any, namespace: str, *, rest: Any = None) -> tuple[VenueGateway, ManualClock]:
    """The gateway with its store on ``redis``, the SWAP listed and ``rest`` (if given) as its REST client."""
    clock = ManualClock()
    gw = VenueGateway(
        VenueConfig(name="okx", rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5"),
        rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5",
        credentials=VenueCredentials(api_key=SecretStr("k"), secret_key=SecretStr("s"), passphrase=SecretStr("p")),
        redis_url="redis://unused", namespace=namespace, clock=clock,
    )
    gw._store = RedisStore(redis, namespace, clock=clock)
    gw._instruments = {SWAP.inst_id: SWAP}
    if rest is not None:
        gw._rest = rest
        gw.state = ComponentState.RUNNING
    return gw, clock
