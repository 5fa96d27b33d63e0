"""Fill health: does order status agree with the fills applied, and do fills flow on the WS?

Pure logic, no I/O; time is passed in as monotonic seconds. The reconciler
feeds it, on its own timer, what Redis holds for every tracked order (the
venue's filled size from the latest status, WS or poll, and the sum of applied
fills) and the per-layer fill counters, and carries out the actions it returns.

**Gaps.** A gap is venue status saying filled N while applied fills add up to
less. Its age is measured per filled level: the time since the venue first
reported the oldest level the applied fills have not reached yet, so an order
that keeps filling while its fills keep arriving a second later never looks
old. A gap older than ``gap_alert_secs`` opens an *episode*:
``TARGETED_FETCH`` (fetch that order's fills over REST, apply them tagged
``health``) and ``ALERT``. The venue is paused (``PAUSE_VENUE``) when the
episode survives its targeted fetch, or when ``recurrence_count`` episodes
open within ``recurrence_window_secs``. When the applied fills reach the
level the episode was opened for, ``RESOLVED`` is returned once.

Applied fills *exceeding* the venue's filled size for longer than
``gap_alert_secs`` is an ``ALERT`` (a status update lags a WS fill by far less).

**WS flow.** ``observe_layer_counts`` samples the store's per-layer counters.
A fill first applied by poll or health is *unmatched* until the WS delivers
anything (a WS delivery of an already applied fill counts: the WS saw it).
The WS fill path is not flowing when a fill unmatched for ``gap_alert_secs``
was applied within the last ``ws_flow_window_secs``: fills happen and the WS
does not carry them. This is the probe that tells whether the WS fill path
works again after an incident. ``check_ws_flow`` turns it into venue-wide
actions: when the WS stops carrying fills, ``ALERT`` and ``PAUSE_VENUE`` once
(key ``ws_fill_flow``); when it flows again, ``RESOLVED`` once. Resolving
does not lift the pause: while the venue is paused nothing trades, so only a
deliberate round trip (the reconciler's canary) or an operator proves the WS
carries fills again.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from tradetree.core import AuditEntry, FillLayer, Order
from tradetree.execution.discrepancy_keys import FILL_GAP, discrepancy_subject, fill_gap_key

__all__ = [
    "WS_FLOW_KEY",
    "gap_backdates",
    "observations_of",
    "stale_gap_keys",
    "unmatched_in_audit",
    "FillHealthActionKind",
    "FillHealthAction",
    "OrderFillObservation",
    "FillGap",
    "WsFlowStatus",
    "FillHealthMonitor",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

WS_FLOW_KEY = "ws_fill_flow"  # key of the venue-wide "fills do not arrive on the WS" condition


class FillHealthActionKind(str, enum.Enum):
    TARGETED_FETCH = "targeted_fetch"  # fetch this order's fills over REST, apply them tagged health
    ALERT = "alert"
    PAUSE_VENUE = "pause_venue"
    RESOLVED = "resolved"  # an episode ended: applied fills reached the level it was opened for


class FillHealthAction(BaseModel):
    """One thing the reconciler must do. ``client_order_id`` is None for venue-wide actions."""

    model_config = _FROZEN

    kind: FillHealthActionKind
    key: str  # stable id of the condition, e.g. fill_gap_key(coid): alert dedup (and discrepancy) key
    client_order_id: str | None = None
    opens_discrepancy: bool = False  # an ALERT whose condition is also recorded in Redis under ``key``
    inst_id: str | None = None
    detail: str = ""


class OrderFillObservation(BaseModel):
    """One tracked order as Redis holds it: the venue's filled size and the applied fill total."""

    model_config = _FROZEN

    client_order_id: str
    inst_id: str
    venue_filled: Decimal = Field(ge=0)
    applied: Decimal = Field(ge=0)


class FillGap(BaseModel):
    """An order whose applied fills are behind its venue status (for probes and stats)."""

    model_config = _FROZEN

    client_order_id: str
    inst_id: str
    venue_filled: Decimal
    applied: Decimal
    age_secs: float
    episode: bool  # escalated (older than the alert threshold at some point)


class WsFlowStatus(BaseModel):
    model_config = _FROZEN

    flowing: bool
    detail: str = ""
    unmatched_fills: int = 0


@dataclass
class _OrderState:
    inst_id: str
    levels: deque[tuple[float, Decimal]] = field(default_factory=deque)  # (first seen, filled level)
    venue_filled: Decimal = Decimal(0)
    applied: Decimal = Decimal(0)
    episode_target: Decimal | None = None  # filled level the open episode must reach
    fetch_requested_at: float | None = None
    fetch_done: bool = False
    fetch_detail: str = ""
    paused: bool = False
    over_since: float | None = None
    over_alerted: bool = False


class FillHealthMonitor:
    """The fill-health state of one venue. Feed it with ``evaluate`` and ``observe_layer_counts``.

    Raises:
        ValueError: a non-positive threshold or window, or ``recurrence_count`` < 1.
    """

    def __init__(
        self,
        venue: str,
        *,
        gap_alert_secs: float = 5.0,
        recurrence_count: int = 2,
        recurrence_window_secs: float = 60.0,
        ws_flow_window_secs: float = 120.0,
    ) -> None:
        if gap_alert_secs <= 0 or recurrence_window_secs <= 0 or ws_flow_window_secs <= 0:
            raise ValueError("fill health thresholds and windows must be positive")
        if recurrence_count < 1:
            raise ValueError("recurrence_count must be at least 1")
        self.venue = venue
        self.gap_alert_secs = gap_alert_secs
        self.recurrence_count = recurrence_count
        self.recurrence_window_secs = recurrence_window_secs
        self.ws_flow_window_secs = ws_flow_window_secs
        self._orders: dict[str, _OrderState] = {}
        self._episodes: deque[float] = deque()
        # WS flow
        self._last_ws_delivered: int | None = None
        self._last_other_applied: int | None = None
        self._last_ws_delivery_at: float | None = None
        self._unmatched: deque[tuple[float, int]] = deque()
        self._ws_episode = False  # a "WS does not carry fills" episode is open
        # stats
        self.gaps_detected = 0
        self.targeted_fetches = 0
        self.pauses = 0
        self.over_applied_alerts = 0
        self.ws_flow_losses = 0

    # -- gaps --------------------------------------------------------------------------------

    def evaluate(self, observations: Iterable[OrderFillObservation], now_secs: float) -> list[FillHealthAction]:
        """Update from a complete read of the tracked orders; return the actions due now.

        ``observations`` must be *every* tracked order of the venue: an order
        missing from it is taken as untracked (which the poller only does when
        its fills add up), so its open episode ends with ``RESOLVED``.
        """
        actions: list[FillHealthAction] = []
        seen: set[str] = set()
        for obs in observations:
            seen.add(obs.client_order_id)
            state = self._orders.get(obs.client_order_id)
            if state is None:
                state = self._orders[obs.client_order_id] = _OrderState(inst_id=obs.inst_id)
            actions.extend(self._evaluate_order(obs, state, now_secs))
        for coid in [c for c in self._orders if c not in seen]:
            state = self._orders.pop(coid)
            if state.episode_target is not None:
                actions.append(FillHealthAction(
                    kind=FillHealthActionKind.RESOLVED, key=fill_gap_key(coid), client_order_id=coid,
                    inst_id=state.inst_id,
                    detail="order left the polling set (its fills add up)",
                ))
        return actions

    def _evaluate_order(self, obs: OrderFillObservation, st: _OrderState, now: float) -> list[FillHealthAction]:
        coid, inst_id = obs.client_order_id, obs.inst_id
        actions: list[FillHealthAction] = []
        st.venue_filled, st.applied = obs.venue_filled, obs.applied
        if not st.levels or obs.venue_filled > st.levels[-1][1]:
            if obs.venue_filled > obs.applied:
                st.levels.append((now, obs.venue_filled))
        while st.levels and st.levels[0][1] <= obs.applied:
            st.levels.popleft()

        # an open episode ends once the applied fills reach its level
        if st.episode_target is not None and obs.applied >= st.episode_target:
            actions.append(FillHealthAction(
                kind=FillHealthActionKind.RESOLVED, key=fill_gap_key(coid), client_order_id=coid, inst_id=inst_id,
                detail=f"applied fills reached {obs.applied} (venue filled {obs.venue_filled})",
            ))
            st.episode_target = None
            st.fetch_requested_at = None
            st.fetch_done = False
            st.paused = False

        if st.episode_target is not None:
            actions.extend(self._follow_episode(obs, st, now))
        elif st.levels and now - st.levels[0][0] >= self.gap_alert_secs:
            actions.extend(self._open_episode(obs, st, now))

        actions.extend(self._check_over_applied(obs, st, now))
        return actions

    def _open_episode(self, obs: OrderFillObservation, st: _OrderState, now: float) -> list[FillHealthAction]:
        coid, inst_id = obs.client_order_id, obs.inst_id
        age = now - st.levels[0][0]
        st.episode_target = obs.venue_filled
        st.fetch_requested_at = now
        st.fetch_done = False
        self.gaps_detected += 1
        self.targeted_fetches += 1
        detail = (
            f"{self.venue} order {coid} ({inst_id}): venue status says {obs.venue_filled} filled, "
            f"applied fills say {obs.applied}, for {age:.1f}s"
        )
        # The alert goes first: the fetch may take up to the HTTP timeout.
        actions = [
            FillHealthAction(kind=FillHealthActionKind.ALERT, key=fill_gap_key(coid), client_order_id=coid,
                             inst_id=inst_id, detail=f"fill gap: {detail}", opens_discrepancy=True),
            FillHealthAction(kind=FillHealthActionKind.TARGETED_FETCH, key=fill_gap_key(coid), client_order_id=coid,
                             inst_id=inst_id, detail=detail),
        ]
        self._episodes.append(now)
        while self._episodes and now - self._episodes[0] > self.recurrence_window_secs:
            self._episodes.popleft()
        if len(self._episodes) >= self.recurrence_count:
            st.paused = True
            self.pauses += 1
            actions.append(FillHealthAction(
                kind=FillHealthActionKind.PAUSE_VENUE, key="fill_gap_recurrence", client_order_id=coid,
                inst_id=inst_id,
                detail=(f"{len(self._episodes)} fill gaps within {self.recurrence_window_secs:.0f}s "
                        f"on {self.venue} (latest: {detail})"),
            ))
        return actions

    def _follow_episode(self, obs: OrderFillObservation, st: _OrderState, now: float) -> list[FillHealthAction]:
        coid, inst_id = obs.client_order_id, obs.inst_id
        actions: list[FillHealthAction] = []
        if not st.fetch_done:
            return actions  # the targeted fetch is still in flight
        if not st.paused:
            st.paused = True
            self.pauses += 1
            actions.append(FillHealthAction(
                kind=FillHealthActionKind.PAUSE_VENUE, key=f"fill_gap_persists:{coid}", client_order_id=coid,
                inst_id=inst_id,
                detail=(f"{self.venue} order {coid}: fill gap persists after a targeted fetch "
                        f"(applied {obs.applied} of {st.episode_target}; {st.fetch_detail or 'fetch done'})"),
            ))
        assert st.fetch_requested_at is not None
        if now - st.fetch_requested_at >= self.gap_alert_secs:
            # keep trying to close the gap, at the alert cadence
            st.fetch_requested_at = now
            st.fetch_done = False
            self.targeted_fetches += 1
            actions.append(FillHealthAction(
                kind=FillHealthActionKind.TARGETED_FETCH, key=fill_gap_key(coid), client_order_id=coid,
                inst_id=inst_id, detail=f"retry: applied {obs.applied} of {st.episode_target}",
            ))
        return actions

    def _check_over_applied(self, obs: OrderFillObservation, st: _OrderState, now: float) -> list[FillHealthAction]:
        if obs.applied <= obs.venue_filled:
            st.over_since, st.over_alerted = None, False
            return []
        if st.over_since is None:
            st.over_since = now
        if st.over_alerted or now - st.over_since < self.gap_alert_secs:
            return []
        st.over_alerted = True
        self.over_applied_alerts += 1
        return [FillHealthAction(
            kind=FillHealthActionKind.ALERT, key=f"over_applied:{obs.client_order_id}",
            client_order_id=obs.client_order_id, inst_id=obs.inst_id,
            detail=(f"{self.venue} order {obs.client_order_id}: applied fills {obs.applied} exceed the "
                    f"venue's filled size {obs.venue_filled} for {now - st.over_since:.1f}s"),
        )]

    def record_fetch_result(self, client_order_id: str, *, ok: bool, detail: str = "") -> None:
        """The targeted fetch of ``client_order_id`` finished (``ok`` False: it failed).

        The next ``evaluate`` judges whether the gap survived it. Unknown
        orders (untracked meanwhile) are ignored.
        """
        st = self._orders.get(client_order_id)
        if st is None or st.episode_target is None:
            return
        st.fetch_done = True
        st.fetch_detail = detail if detail else ("fetch ok" if ok else "fetch failed")

    def backdate_gap(self, client_order_id: str, since_secs: float) -> bool:
        """Date the order's current gap back to ``since_secs`` (a gap known from before a restart).

        Only an order seen with a gap by ``evaluate`` is changed; returns
        whether it was. The next ``evaluate`` ages the gap from there.
        """
        st = self._orders.get(client_order_id)
        if st is None or not st.levels or st.levels[0][0] <= since_secs:
            return False
        st.levels[0] = (since_secs, st.levels[0][1])
        return True

    def gaps(self, now_secs: float) -> list[FillGap]:
        """Orders whose applied fills are behind their venue status, oldest gap first."""
        result = []
        for coid, st in self._orders.items():
            if not st.levels:
                continue
            result.append(FillGap(
                client_order_id=coid, inst_id=st.inst_id, venue_filled=st.venue_filled, applied=st.applied,
                age_secs=now_secs - st.levels[0][0], episode=st.episode_target is not None,
            ))
        return sorted(result, key=lambda g: -g.age_secs)

    def overdue_gaps(self, now_secs: float) -> list[FillGap]:
        """Gaps at least ``gap_alert_secs`` old, or with an episode still open."""
        return [g for g in self.gaps(now_secs) if g.episode or g.age_secs >= self.gap_alert_secs]

    # -- WS flow -----------------------------------------------------------------------------

    def observe_layer_counts(self, counts: Mapping[str, Mapping[str, int]], now_secs: float) -> None:
        """Sample the store's per-layer counters (``RedisStore.fill_layer_counts(venue)``).

        Counters only grow; a decrease (namespace reset) restarts the baseline.
        """
        ws_delivered = int(counts.get(FillLayer.WS.value, {}).get("delivered", 0))
        other_applied = sum(
            int(counts.get(layer.value, {}).get("applied", 0)) for layer in (FillLayer.POLL, FillLayer.HEALTH)
        )
        last_ws, last_other = self._last_ws_delivered, self._last_other_applied
        self._last_ws_delivered, self._last_other_applied = ws_delivered, other_applied
        if last_ws is None or last_other is None or ws_delivered < last_ws or other_applied < last_other:
            self._unmatched.clear()
            return
        if other_applied > last_other:
            self._unmatched.append((now_secs, other_applied - last_other))
        if ws_delivered > last_ws:
            # The WS delivered something since the last sample: it carries fills. Fills the
            # other layers applied in the same interval get the benefit of the doubt.
            self._last_ws_delivery_at = now_secs
            self._unmatched.clear()
        while self._unmatched and now_secs - self._unmatched[0][0] > self.ws_flow_window_secs:
            self._unmatched.popleft()

    def seed_unmatched(self, applied_at_secs: Iterable[float], now_secs: float) -> None:
        """Fills applied by poll/health at the given times (from the audit stream, after a
        restart) that the WS has not been seen delivering since. Older than the window: ignored."""
        seeded = sorted(t for t in applied_at_secs if now_secs - t <= self.ws_flow_window_secs)
        merged = sorted([*self._unmatched, *((t, 1) for t in seeded)])
        self._unmatched = deque(merged)

    def ws_flow(self, now_secs: float) -> WsFlowStatus:
        """Whether fills flow on the WS (see the module docstring)."""
        while self._unmatched and now_secs - self._unmatched[0][0] > self.ws_flow_window_secs:
            self._unmatched.popleft()
        overdue = [(t, n) for t, n in self._unmatched if now_secs - t >= self.gap_alert_secs]
        unmatched = sum(n for _, n in self._unmatched)
        if overdue:
            first = overdue[0][0]
            last_ws = (
                "never since start" if self._last_ws_delivery_at is None
                else f"last {now_secs - self._last_ws_delivery_at:.0f}s ago"
            )
            return WsFlowStatus(
                flowing=False,
                unmatched_fills=unmatched,
                detail=(f"{unmatched} fill(s) applied by poll/health in the last "
                        f"{now_secs - first:.0f}s were not delivered by the WS (WS delivery {last_ws})"),
            )
        return WsFlowStatus(flowing=True, unmatched_fills=unmatched)

    @property
    def ws_flow_episode_open(self) -> bool:
        """A "WS does not carry fills" episode is open (opened by ``check_ws_flow``)."""
        return self._ws_episode

    def check_ws_flow(self, now_secs: float) -> list[FillHealthAction]:
        """Venue-wide actions for the WS flow (see the module docstring).

        Not flowing and no episode open: ``ALERT`` then ``PAUSE_VENUE`` (both key
        ``ws_fill_flow``), and the episode opens. Flowing with an episode open:
        ``RESOLVED`` and the episode closes. Otherwise nothing.
        """
        flow = self.ws_flow(now_secs)
        if not flow.flowing and not self._ws_episode:
            self._ws_episode = True
            self.ws_flow_losses += 1
            self.pauses += 1
            detail = f"{self.venue}: fills are not arriving on the WS: {flow.detail}"
            return [
                FillHealthAction(kind=FillHealthActionKind.ALERT, key=WS_FLOW_KEY, detail=detail),
                FillHealthAction(kind=FillHealthActionKind.PAUSE_VENUE, key=WS_FLOW_KEY, detail=detail),
            ]
        if flow.flowing and self._ws_episode:
            self._ws_episode = False
            return [FillHealthAction(kind=FillHealthActionKind.RESOLVED, key=WS_FLOW_KEY,
                                     detail=f"{self.venue}: no fill applied by poll/health is waiting for the WS")]
        return []


# -- what the reconciler feeds the monitor, and what Redis remembers -------------------------------


def observations_of(orders: Iterable[tuple[Order, Decimal]]) -> list[OrderFillObservation]:
    """The monitor's observations from tracked orders paired with their applied sizes."""
    return [
        OrderFillObservation(client_order_id=o.client_order_id, inst_id=o.inst_id, venue_filled=o.filled_size,
                             applied=applied)
        for o, applied in orders
    ]


def unmatched_in_audit(venue: str, entries: Iterable[AuditEntry], now_secs: float, now_ms: int) -> list[float]:
    """Monotonic times of ``venue``'s fills applied by poll/health after the last fill the WS
    applied: the WS-flow evidence a previous incarnation saw (for ``seed_unmatched``)."""
    mine = [e for e in entries if e.fill.venue == venue]
    last_ws = max((e.applied_ms for e in mine if e.fill.layer is FillLayer.WS), default=None)
    return [
        now_secs - (now_ms - e.applied_ms) / 1000
        for e in mine
        if e.fill.layer is not FillLayer.WS and (last_ws is None or e.applied_ms > last_ws)
    ]


def gap_backdates(open_discrepancies: Mapping[str, Mapping[str, object]], now_secs: float,
                  now_ms: int) -> dict[str, float]:
    """Order id -> monotonic start of its gap, from the ``fill_gap:*`` discrepancies open in Redis.

    A gap this process has not watched from its start may be older (a
    restart): its discrepancy's ``since_ms`` says since when.
    """
    return {
        coid: now_secs - (now_ms - since_ms) / 1000
        for key, info in open_discrepancies.items()
        if (coid := discrepancy_subject(key, FILL_GAP)) is not None and isinstance(since_ms := info.get("since_ms"), int)
    }


def stale_gap_keys(open_keys: Iterable[str], observations: Iterable[OrderFillObservation]) -> list[str]:
    """The ``fill_gap:*`` discrepancies whose order has no gap any more, to close.

    The monitor forgets its episodes on a restart, Redis does not: a gap that
    closed while no reconciler ran would otherwise block the venue forever.
    """
    gapped = {o.client_order_id for o in observations if o.applied < o.venue_filled}
    return [k for k in open_keys if (coid := discrepancy_subject(k, FILL_GAP)) is not None and coid not in gapped]
