"""What the venue gateway decides, apart from talking to the venue and Redis.

``actors.gateway`` holds the connections and the locks; it reads what it
needs, calls one of these, and does what it returns:

- ``ws_probe`` / ``market_data_probe``: the health verdicts on a WS client's
  status and on the age of each instrument's last ticker;
- ``ticker_args``: the WS subscription of an instrument list's tickers;
- ``acknowledged``: the stored order once the venue acknowledged it, or None
  when the stored one already says more (the WS got there first);
- ``cancel_all_error``: the one error a ``cancel_all`` with failed cancels raises;
- ``strategy_order_refusals`` / ``wind_down_refusals``: the gateway's own gate over a
  ``GatewayGateInputs`` snapshot, for a strategy's order and for the kill switch's clips.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from tradetree.adapters.okx import WsState
from tradetree.core import Order, OrderIntent, OrderState, ProbeResult, StrategyState, VenueError
from tradetree.risk import root_unsupervised_reason

__all__ = [
    "GatewayGateInputs",
    "WsStatus",
    "acknowledged",
    "cancel_all_error",
    "market_data_probe",
    "strategy_order_refusals",
    "ticker_args",
    "wind_down_refusals",
    "ws_probe",
]


class WsStatus(Protocol):
    """What ``ws_probe`` reads of a WS client (``adapters.okx.OkxWsClient`` has it)."""

    @property
    def state(self) -> WsState: ...
    @property
    def connected(self) -> bool: ...
    @property
    def logged_in(self) -> bool: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def last_error(self) -> str: ...


def ws_probe(name: str, ws: WsStatus | None) -> ProbeResult:
    """Connected (and logged in, for the private endpoint ``ws_private``), or why not.

    A client that is reconnecting by itself (the venue dropped or refused us)
    fails as a readiness probe: restarting the gateway would not bring the
    venue back, and would only interrupt the backoff. A client whose loop
    ended (a fatal login error, stopped) fails as a liveness probe.
    """
    if ws is None:
        return ProbeResult(name=name, ok=False, detail="not opened")
    if ws.connected and (name == "ws_public" or ws.logged_in):
        return ProbeResult(name=name, ok=True)
    reconnecting = ws.state in (WsState.CONNECTING, WsState.BACKOFF)
    return ProbeResult(name=name, ok=False, liveness=not reconnecting,
                       detail=f"state {ws.state.value}; reconnects {ws.reconnects}; {ws.last_error}")


def market_data_probe(inst_ids: Iterable[str], last_ticker_ms: Mapping[str, int], now_ms: int,
                      stale_after_ms: int) -> ProbeResult:
    """``market_data_fresh``: every instrument of ``inst_ids`` had a ticker (received at
    ``last_ticker_ms``, our clock) within ``stale_after_ms`` of ``now_ms``.

    Readiness, never liveness: stale market data holds strategies back and the
    freshness gate refuses their orders, but restarting the gateway would not
    make a halted venue publish (and would cut the private WS that may still
    deliver fills). Not healed by resubscribing either: a venue answers a
    subscription with a snapshot, which would make a halted feed look fresh.
    """
    stale = []
    for inst_id in sorted(set(inst_ids)):
        seen = last_ticker_ms.get(inst_id)
        if seen is None:
            stale.append(f"{inst_id}: no ticker yet")
        elif now_ms - seen > stale_after_ms:
            stale.append(f"{inst_id}: last ticker {now_ms - seen} ms ago")
    return ProbeResult(name="market_data_fresh", ok=not stale, liveness=False, detail="; ".join(stale))


def ticker_args(inst_ids: Iterable[str]) -> list[dict[str, str]]:
    """The OKX WS subscription args of the tickers of ``inst_ids``."""
    return [{"channel": "tickers", "instId": inst_id} for inst_id in inst_ids]


def acknowledged(current: Order, venue_order_id: str, now_ms: int) -> Order | None:
    """``current`` (the stored order) updated by the venue's acknowledgement, or None to leave it.

    PENDING_NEW becomes LIVE with the id; an order the WS already moved on
    without the id gains it; one that has its id already says at least as
    much. Stamped no earlier than the stored update, so time never runs back.
    """
    stamp = max(now_ms, current.updated_ms)
    if current.state is OrderState.PENDING_NEW:
        return current.transition(OrderState.LIVE, now_ms=stamp, venue_order_id=venue_order_id)
    if current.venue_order_id is None:
        return current.model_copy(update={"venue_order_id": venue_order_id, "updated_ms": stamp})
    return None


def cancel_all_error(component: str, venue: str, failures: list[VenueError], attempted: int,
                     accepted: int) -> VenueError | None:
    """The error of ``component``'s ``cancel_all`` on ``venue`` whose ``failures`` (in order) were
    among ``attempted`` cancels, ``accepted`` of which the venue accepted; None when none failed.

    Of the first failure's type and code (an auth failure stays one), counting them all.
    """
    if not failures:
        return None
    first = failures[0]
    return type(first)(
        f"{component}: cancel_all: {len(failures)} of {attempted} cancels failed "
        f"({accepted} accepted); first: {first}", venue=venue, code=first.code,
    )


# -- the gateway's own gate -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayGateInputs:
    """What the gateway's gate reads from Redis for one order (``actors.gate_inputs``, one round trip).

    Attributes:
        strategy_id: the strategy they were read for.
        strategy_state: its recorded state (None: none recorded).
        kill_flag: the global kill flag's reason (None: not set).
        venue_pauses: the venue's pauses, source -> reason (empty: not paused).
        unknown: why they could not be read (empty: they were).
        now_ms: when they were read (the gateway's clock, wall-clock ms in a tree).
        root_heartbeat_ms: the root supervisor's last heartbeat (None: none recorded or unparseable).
        root_armed: judge ``root_heartbeat_ms`` at all (``risk.RootLatch``: this gateway has seen
            a root heartbeat; off for a gateway that does not watch the root).
    """

    strategy_id: str
    strategy_state: StrategyState | None = None
    kill_flag: str | None = None
    venue_pauses: Mapping[str, str] = field(default_factory=dict)
    unknown: str = ""
    now_ms: int = 0
    root_heartbeat_ms: int | None = None
    root_armed: bool = False


# The states only the kill switch writes: a strategy in one of them is being (or was) wound down by it.
_KILL_SWITCH_STATES = frozenset({StrategyState.WINDING_DOWN, StrategyState.KILLED})


def strategy_order_refusals(intent: OrderIntent, inputs: GatewayGateInputs) -> list[str]:
    """Why the gateway refuses a strategy's ``intent`` (``submit_order``); empty = it may be sent.

    A second gate behind the strategy host's freshness gate, on what the host
    cannot get wrong for the gateway: refuses when the inputs are unknown or
    for another strategy (fail closed), when the kill flag is set, when the
    strategy is not RUNNING (no state recorded, PAUSED, or WINDING_DOWN /
    KILLED: once the kill switch owns a strategy only its clips trade, and
    those come through ``wind_down_refusals``), when the venue is paused
    by any source, and when the tree is unsupervised (the root's heartbeat
    is missing or stale, once ``root_armed``) and the intent is not
    reduce-only: while no supervisor runs nothing opens risk, but closing it
    stays possible. Never raises.
    """
    if inputs.unknown:
        return [f"gateway gate: state unknown: {inputs.unknown}"]
    if inputs.strategy_id != intent.strategy_id:
        return [f"gateway gate: inputs are for strategy {inputs.strategy_id!r}, not {intent.strategy_id!r}"]
    reasons = []
    if inputs.kill_flag is not None:
        reasons.append(f"kill flag set: {inputs.kill_flag or 'no reason given'}")
    state = inputs.strategy_state
    if state is None:
        reasons.append(f"strategy {intent.strategy_id} has no state in Redis, not RUNNING")
    elif state is not StrategyState.RUNNING:
        reasons.append(f"strategy {intent.strategy_id} is {state.value}, not RUNNING")
    if inputs.venue_pauses:
        why = "; ".join(f"{source}: {reason}" if reason else source
                        for source, reason in sorted(inputs.venue_pauses.items()))
        reasons.append(f"venue {intent.venue} paused ({why})")
    if inputs.root_armed and not intent.reduce_only:
        unsupervised = root_unsupervised_reason(inputs.root_heartbeat_ms, inputs.now_ms)
        if unsupervised is not None:
            reasons.append(unsupervised)
    return reasons


def wind_down_refusals(intent: OrderIntent, inputs: GatewayGateInputs) -> list[str]:
    """Why the gateway refuses an account-level ``intent`` (``submit_account_order``); empty = send.

    That path is the kill switch's: its clips pass the kill flag and venue
    pauses, which exist to let exactly them through. What makes an order a
    clip is not anything its sender says about it but the strategy's state:
    the kill switch sets WINDING_DOWN before it sends any clip of a strategy,
    and only the kill switch writes WINDING_DOWN or KILLED (a host never
    does). So an order of a RUNNING or PAUSED strategy is refused here, and a
    strategy cannot bypass the gate by any field of its intent. Unknown
    inputs refuse (fail closed; the kill switch retries). An unsupervised
    tree (no fresh root heartbeat) does not refuse a clip: closing risk must
    stay possible while no supervisor runs. Never raises.
    """
    if inputs.unknown:
        return [f"gateway gate: state unknown: {inputs.unknown}"]
    if inputs.strategy_id != intent.strategy_id:
        return [f"gateway gate: inputs are for strategy {inputs.strategy_id!r}, not {intent.strategy_id!r}"]
    if inputs.strategy_state in _KILL_SWITCH_STATES:
        return []
    state = "no state in Redis" if inputs.strategy_state is None else inputs.strategy_state.value
    return [f"not a wind-down clip: strategy {intent.strategy_id} is {state}; account-level orders are the "
            f"kill switch's, for strategies it winds down"]
