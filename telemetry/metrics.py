"""Prometheus metrics of a running tree, built from one status snapshot.

``TreeCollector`` is a prometheus-client ``Collector``: at every scrape it
turns the latest snapshot (a plain dict, gathered elsewhere, see
``actors.metrics_exporter``) into metric families. It does no I/O, so a
scrape never waits on Ray or Redis, and it is testable on a crafted dict.

The snapshot (every section optional; absent means "not read this time"):

    ts_ms            when it was gathered (our clock); ages are taken at that instant
    gather_secs      how long gathering took
    components       {"gateways": {venue: id}, "reconcilers": {venue: id},
                      "strategies": {strategy: venue}, "risk_monitor": id, "alerter": id,
                      "model_servers": {model: id}}
    tree             ``supervisor.status`` output
    redis            ``core.snapshot.collect_snapshot`` output (without ``actors``: ``positions``
                     valued at their marks, ``strategy_pnl``, ...) plus
                     ``venues: {venue: {fills_by_layer, control (ControlSnapshot as JSON), marks}}``
    stats            {actor id: that actor's ``stats()``}, for the actors that answered
    up               {component: bool}: "tree", "redis" and every actor id
    scrape_errors    {component: int}: failed reads since the exporter started

Guarantees:
- only numbers, configured names (venues, strategies, instruments, actor ids),
  code-defined keys (counter names, states, layers, pause sources, breaker
  names) become samples or labels; no free text of the snapshot (errors,
  probe details, kill and pause reasons) is exported, so no credential that
  slipped into an error message can reach ``/metrics``;
- a malformed section is skipped (its component counted in
  ``tradetree_collect_errors_total``), never the whole scrape.

Names are ``tradetree_*``; units are in the names (``_seconds``, ``_total``);
labels are ``venue``, ``strategy``, ``instrument``, ``layer``, ``child``,
``component``, ``model``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from tradetree.core import ComponentState, StrategyState

__all__ = ["TreeCollector", "build_registry"]

log = logging.getLogger(__name__)

Snapshot = dict[str, Any]

_WS_CHANNELS = ("public", "private")


class _Families:
    """Metric families by name, created on first use with fixed label names."""

    def __init__(self) -> None:
        self._by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        self._labels: dict[str, tuple[str, ...]] = {}

    def _family(self, kind: str, name: str, doc: str, labels: tuple[str, ...]) -> GaugeMetricFamily | CounterMetricFamily:
        family = self._by_name.get(name)
        if family is None:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = self._by_name[name] = cls(name, doc, labels=list(labels))
            self._labels[name] = labels
        elif self._labels[name] != labels:
            raise ValueError(f"metric {name}: labels {labels} differ from {self._labels[name]}")
        return family

    def gauge(self, name: str, doc: str, value: Any, **labels: Any) -> None:
        self._add("gauge", name, doc, value, labels)

    def counter(self, name: str, doc: str, value: Any, **labels: Any) -> None:
        self._add("counter", name, doc, value, labels)

    def _add(self, kind: str, name: str, doc: str, value: Any, labels: dict[str, Any]) -> None:
        number = _number(value)
        if number is None:
            return
        family = self._family(kind, name, doc, tuple(labels))
        family.add_metric([str(v) for v in labels.values()], number)

    def all(self) -> Iterable[Metric]:
        return self._by_name.values()


def _number(value: Any) -> float | None:
    """A finite-or-not float for ints, floats and bools (and numeric strings); None otherwise."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _age_secs(now_ms: int, then_ms: Any) -> float | None:
    if not isinstance(then_ms, (int, float)) or isinstance(then_ms, bool) or then_ms <= 0:
        return None
    return max(0.0, (now_ms - then_ms) / 1000)


class TreeCollector(Collector):
    """Builds the ``tradetree_*`` families from ``snapshot()`` at each scrape.

    Args:
        snapshot: returns the latest snapshot (None: nothing gathered yet, only
            the exporter's own metrics are exported).
        clock_ms: our clock in ms, for ``tradetree_snapshot_age_seconds``.
    """

    def __init__(self, snapshot: Callable[[], Snapshot | None], *, clock_ms: Callable[[], int]) -> None:
        self._snapshot = snapshot
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._collect_errors: _Tally[str] = _Tally()

    def describe(self) -> list[Metric]:
        # Families depend on the snapshot; an empty description keeps register() from collecting.
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        out = _Families()
        sections: list[tuple[str, Callable[[_Families, Snapshot], None]]] = [
            ("tree", _tree), ("redis", _redis), ("gateways", _gateways), ("reconcilers", _reconcilers),
            ("strategies", _strategies), ("risk_monitor", _risk_monitor), ("alerter", _alerter),
            ("model_servers", _model_servers),
        ]
        if snap is not None:
            for name, build in sections:
                # Build each section into its own families first: a section that fails half-way
                # must not leave half its samples behind.
                part = _Families()
                try:
                    build(part, snap)
                except Exception as exc:  # a malformed section must not break the scrape
                    with self._lock:
                        self._collect_errors[name] += 1
                    log.warning("metrics: section %s skipped: %s", name, type(exc).__name__)
                    continue
                for family in part.all():
                    for sample in family.samples:
                        out._family(family.type, family.name, family.documentation,
                                    tuple(sample.labels)).samples.append(sample)
        self._meta(out, snap)
        yield from out.all()

    def _meta(self, out: _Families, snap: Snapshot | None) -> None:
        out.gauge("tradetree_exporter_snapshot_present", "1 once the exporter has gathered a snapshot.",
                  snap is not None)
        with self._lock:
            errors = dict(self._collect_errors)
        for section, n in sorted(errors.items()):
            out.counter("tradetree_collect_errors_total",
                        "Snapshot sections skipped at scrape time because they were malformed.", n, section=section)
        if snap is None:
            return
        ts_ms = snap.get("ts_ms")
        out.gauge("tradetree_snapshot_timestamp_seconds", "When the snapshot behind these metrics was gathered.",
                  ts_ms / 1000 if isinstance(ts_ms, (int, float)) else None)
        age = _age_secs(self._clock_ms(), ts_ms)
        out.gauge("tradetree_snapshot_age_seconds", "Age of the snapshot behind these metrics at scrape time.", age)
        out.gauge("tradetree_snapshot_gather_seconds", "How long gathering the latest snapshot took.",
                  snap.get("gather_secs"))
        for component, ok in sorted((snap.get("up") or {}).items()):
            out.gauge("tradetree_up", "1 if the component answered the latest snapshot read, else 0.",
                      bool(ok), component=component)
        for component, n in sorted((snap.get("scrape_errors") or {}).items()):
            out.counter("tradetree_scrape_errors_total", "Failed reads of a component since the exporter started.",
                        n, component=component)


# -- sections ------------------------------------------------------------------------------


def _components(snap: Snapshot) -> dict[str, Any]:
    return snap.get("components") or {}


def _tree(out: _Families, snap: Snapshot) -> None:
    tree = snap.get("tree")
    if tree is None:
        return
    root_escalated = False
    for child, info in sorted(tree.items()):
        state = str(info.get("state", "unknown")).lower()
        parent = info.get("parent") or ""
        out.gauge("tradetree_actor_state", "1 for the actor's current state as its supervisor reports it.",
                  1, child=child, parent=parent, state=state)
        out.gauge("tradetree_actor_running", "1 if the actor's supervisor reports it running.",
                  state == "running", child=child, parent=parent)
        out.gauge("tradetree_actor_probe_failing",
                  "1 if the supervisor's latest probe of the actor failed or could not be made.",
                  bool(info.get("detail")), child=child, parent=parent)
        if parent:
            out.counter("tradetree_actor_restarts_total",
                        "Restarts of the child by its supervisor (resets when the supervisor restarts).",
                        info.get("restarts", 0), child=child, parent=parent)
        elif state == "escalated":
            root_escalated = True
    kill_flag = str((snap.get("redis") or {}).get("kill_flag") or "")
    out.gauge("tradetree_safe_mode", "1 if the root supervisor escalated (SAFE MODE: kill flag set, strategies "
              "paused).", root_escalated or kill_flag.startswith("SAFE MODE"))


def _redis(out: _Families, snap: Snapshot) -> None:
    redis = snap.get("redis")
    if redis is None:
        return
    now_ms = int(snap["ts_ms"])
    out.gauge("tradetree_kill_flag", "1 if the global kill flag is set in Redis.", bool(redis.get("kill_flag")))
    for component, ts in sorted((redis.get("heartbeats") or {}).items()):
        out.gauge("tradetree_heartbeat_age_seconds", "Seconds since the component's latest heartbeat in Redis.",
                  _age_secs(now_ms, _number(ts)), component=component)
    strategies = _components(snap).get("strategies") or {}
    for sid, state in sorted((redis.get("strategies") or {}).items()):
        venue = strategies.get(sid, "")
        out.gauge("tradetree_strategy_state", "1 for the strategy's state in Redis (RUNNING, PAUSED, KILLED, ...).",
                  1, strategy=sid, venue=venue, state=str(state))
        out.gauge("tradetree_strategy_running", "1 if the strategy's state in Redis is RUNNING.",
                  state == StrategyState.RUNNING, strategy=sid, venue=venue)
    for p in redis.get("positions") or []:
        labels = {"strategy": p["strategy_id"], "venue": p["venue"], "instrument": p["inst_id"]}
        out.gauge("tradetree_position_qty", "Position in venue units (contracts for swaps), signed.",
                  p.get("qty"), **labels)
        out.gauge("tradetree_position_avg_price", "Average entry price of the position.", p.get("avg_price"), **labels)
        out.gauge("tradetree_position_realized_pnl", "Realized P&L of the position (quote currency).",
                  p.get("realized_pnl"), **labels)
        out.gauge("tradetree_position_fees", "Fees paid on the position (quote currency).", p.get("fees"), **labels)
        out.counter("tradetree_position_fills_total", "Fills applied to the position.", p.get("fill_count"), **labels)
        # The valuation (core.book): absent, never 0, where the mark or contract value is unknown.
        out.gauge("tradetree_position_mark_price",
                  "Mark price the position is valued at (absent: no mark fresher than risk.max_mark_age_secs).",
                  p.get("mark_price"), **labels)
        out.gauge("tradetree_position_notional",
                  "Notional of the position at its mark, |qty| x mark x contract value (quote currency).",
                  p.get("notional"), **labels)
        out.gauge("tradetree_position_unrealized_pnl",
                  "Unrealized P&L of the position at its mark (quote currency).", p.get("unrealized_pnl"), **labels)
        out.gauge("tradetree_position_total_pnl",
                  "Realized plus unrealized P&L of the position, net of fees (quote currency).",
                  p.get("total_pnl"), **labels)
    for sid, pnl in sorted((redis.get("strategy_pnl") or {}).items()):
        # A strategy's totals are absent while any of its positions cannot be valued (see unvalued).
        out.gauge("tradetree_strategy_unrealized_pnl",
                  "Unrealized P&L of the strategy over every venue (quote currency; absent: incomplete).",
                  pnl.get("unrealized_pnl"), strategy=sid)
        out.gauge("tradetree_strategy_total_pnl",
                  "Realized plus unrealized P&L of the strategy net of fees (quote currency; absent: incomplete).",
                  pnl.get("total_pnl"), strategy=sid)
        out.gauge("tradetree_strategy_unvalued_positions",
                  "Positions of the strategy that cannot be valued (no usable mark or contract value).",
                  len(pnl.get("unvalued") or []), strategy=sid)
    for venue, view in sorted((redis.get("venues") or {}).items()):
        _venue_view(out, now_ms, venue, view)


def _venue_view(out: _Families, now_ms: int, venue: str, view: dict[str, Any]) -> None:
    for layer, counts in sorted((view.get("fills_by_layer") or {}).items()):
        out.counter("tradetree_fills_applied_total",
                    "Fills applied to positions, by the layer that applied them first (ws, poll, health).",
                    counts.get("applied", 0), venue=venue, layer=layer)
        out.counter("tradetree_fills_delivered_total",
                    "Fills delivered to the store by each layer, duplicates included.",
                    counts.get("delivered", 0), venue=venue, layer=layer)
    control = view.get("control")
    if control is not None:
        out.gauge("tradetree_venue_verified_age_seconds",
                  "Seconds since the reconciler last verified the venue's positions (absent: never).",
                  _age_secs(now_ms, control.get("verified_at_ms")), venue=venue)
        out.gauge("tradetree_venue_discrepancies", "Discrepancies the reconciler has open on the venue.",
                  len(control.get("discrepancies") or {}), venue=venue)
        pauses = control.get("venue_pauses") or {}
        out.gauge("tradetree_venue_paused", "1 if any layer holds a pause on the venue (no new orders).",
                  bool(pauses), venue=venue)
        for source in sorted(pauses):
            out.gauge("tradetree_venue_pause", "1 per layer holding a pause on the venue.", 1, venue=venue,
                      source=source)
    for inst_id, mark in sorted((view.get("marks") or {}).items()):
        out.gauge("tradetree_market_data_age_seconds",
                  "Seconds since the venue's gateway last received a ticker of the instrument.",
                  _age_secs(now_ms, mark.get("recv_ms")), venue=venue, instrument=inst_id)
        out.gauge("tradetree_mark_price", "Last traded price of the instrument seen by the gateway.",
                  mark.get("price"), venue=venue, instrument=inst_id)


def _gateways(out: _Families, snap: Snapshot) -> None:
    stats = snap.get("stats") or {}
    now_ms = int(snap.get("ts_ms", 0))
    for venue, actor_id in sorted((_components(snap).get("gateways") or {}).items()):
        s = stats.get(actor_id)
        if s is None:
            continue
        out.gauge("tradetree_gateway_running", "1 if the venue gateway reports itself running.",
                  s.get("state") == "running", venue=venue)
        for event, n in sorted((s.get("counters") or {}).items()):
            out.counter("tradetree_gateway_events_total",
                        "Gateway counters by event (ws_fills_applied, order_updates, ...), since its start.",
                        n, venue=venue, event=event)
        ws = s.get("ws") or {}
        for channel in _WS_CHANNELS:
            c = ws.get(channel)
            if c is None:
                continue
            out.gauge("tradetree_gateway_ws_connected", "1 if the venue WS connection is up (logged in, if private).",
                      c.get("state") == "connected", venue=venue, channel=channel)
            out.counter("tradetree_gateway_ws_reconnects_total", "WS reconnects since the gateway started.",
                        c.get("reconnects", 0), venue=venue, channel=channel)
            out.counter("tradetree_gateway_ws_garbled_messages_total", "WS messages that could not be parsed.",
                        c.get("garbled", 0), venue=venue, channel=channel)
            out.counter("tradetree_gateway_ws_handler_errors_total", "WS messages whose handler raised.",
                        c.get("handler_errors", 0), venue=venue, channel=channel)
            out.gauge("tradetree_gateway_ws_last_message_age_seconds", "Seconds since the WS last received a message.",
                      _age_secs(now_ms, c.get("last_message_ms")), venue=venue, channel=channel)
        for subscriber, sub in sorted((s.get("subscribers") or {}).items()):
            labels = {"venue": venue, "subscriber": subscriber}
            out.counter("tradetree_gateway_subscriber_delivered_total",
                        "Tickers and order events delivered to a subscriber.", sub.get("delivered", 0), **labels)
            out.counter("tradetree_gateway_subscriber_dropped_total",
                        "Deliveries dropped because the subscriber was too slow.", sub.get("dropped", 0), **labels)
            out.counter("tradetree_gateway_subscriber_failures_total", "Deliveries that failed.",
                        sub.get("failures", 0), **labels)
            out.gauge("tradetree_gateway_subscriber_in_flight", "Deliveries in flight to the subscriber.",
                      sub.get("in_flight", 0), **labels)


def _reconcilers(out: _Families, snap: Snapshot) -> None:
    stats = snap.get("stats") or {}
    now_ms = int(snap.get("ts_ms", 0))
    for venue, actor_id in sorted((_components(snap).get("reconcilers") or {}).items()):
        s = stats.get(actor_id)
        if s is None:
            continue
        counters = s.get("counters") or {}
        out.gauge("tradetree_reconciler_running", "1 if the fill reconciler reports itself running.",
                  str(s.get("state", "")).lower() == "running", venue=venue)
        for outcome in ("ok", "failed"):
            out.counter("tradetree_reconciler_polls_total", "REST poll cycles of the reconciler, by outcome.",
                        counters.get(f"poll_cycles_{outcome}", 0), venue=venue, outcome=outcome)
        for layer in ("poll", "health"):
            out.counter("tradetree_reconciler_fills_applied_total",
                        "Fills this reconciler incarnation applied first, by its layer.",
                        counters.get(f"fills_applied_{layer}", 0), venue=venue, layer=layer)
        out.counter("tradetree_reconciler_venue_pauses_total", "Times the reconciler paused the venue.",
                    counters.get("venue_pauses", 0), venue=venue)
        for event, n in sorted(counters.items()):
            out.counter("tradetree_reconciler_events_total", "Reconciler counters by event, since its start.",
                        n, venue=venue, event=event)
        gaps = s.get("gaps") or {}
        out.gauge("tradetree_reconciler_fill_gaps_open", "Fill gaps the fill-health layer has open.",
                  len(gaps.get("open") or []), venue=venue)
        drift = s.get("drift") or {}
        out.gauge("tradetree_reconciler_drifting_instruments", "Instruments whose positions drift from the venue.",
                  len(drift.get("drifting") or []), venue=venue)
        out.gauge("tradetree_reconciler_last_poll_ok_age_seconds", "Seconds since the last successful REST poll.",
                  _age_secs(now_ms, s.get("last_poll_ok_ms")), venue=venue)
        canary = s.get("canary") or {}
        if canary.get("enabled"):
            out.gauge("tradetree_reconciler_canary_failures_in_row", "Canary round trips failed in a row.",
                      canary.get("failures_in_row", 0), venue=venue)


def _strategies(out: _Families, snap: Snapshot) -> None:
    stats = snap.get("stats") or {}
    now_ms = int(snap.get("ts_ms", 0))
    for sid, venue in sorted((_components(snap).get("strategies") or {}).items()):
        s = stats.get(sid)
        if s is None:
            continue
        out.counter("tradetree_strategy_orders_sent_total", "Orders the strategy host sent to the gateway.",
                    s.get("orders_sent", 0), strategy=sid, venue=venue)
        out.counter("tradetree_strategy_rejections_total", "Orders of the strategy the venue rejected.",
                    s.get("rejections", 0), strategy=sid, venue=venue)
        out.counter("tradetree_strategy_denials_total", "Intents the pre-trade checks refused (nothing sent).",
                    s.get("denials", 0), strategy=sid, venue=venue)
        out.gauge("tradetree_strategy_last_ticker_age_seconds", "Seconds since the strategy host last got a ticker.",
                  _age_secs(now_ms, s.get("last_ticker_ms")), strategy=sid, venue=venue)


_RISK_COUNTERS = ("loops", "loop_errors", "events_read", "bad_events", "trips", "breakers_opened",
                  "alerts_sent", "alerts_dropped", "pauses")


def _risk_monitor(out: _Families, snap: Snapshot) -> None:
    redis = snap.get("redis") or {}
    venues = redis.get("venues") or {}
    breakers: dict[str, Any] = {}
    for view in venues.values():  # every venue's control snapshot carries the (global) breakers
        breakers.update((view.get("control") or {}).get("breakers") or {})
    if venues:
        out.gauge("tradetree_risk_breakers_open", "Risk breakers open (strategies or the whole tree stopped).",
                  len(breakers))
        for name in sorted(breakers):
            out.gauge("tradetree_risk_breaker_open", "1 per open risk breaker.", 1, breaker=name)
    actor_id = _components(snap).get("risk_monitor")
    s = (snap.get("stats") or {}).get(actor_id) if actor_id else None
    if s is None:
        return
    for event in _RISK_COUNTERS:
        out.counter("tradetree_risk_monitor_events_total", "Risk monitor counters by event, since its start.",
                    s.get(event, 0), event=event)
    out.gauge("tradetree_risk_monitor_last_loop_age_seconds", "Seconds since the risk monitor's last loop.",
              _age_secs(int(snap.get("ts_ms", 0)), s.get("last_loop_ms")))
    out.gauge("tradetree_risk_monitor_pending_trips", "Breaker trips not yet acted upon.", s.get("pending_trips"))


_ALERT_OUTCOMES = ("received", "queued", "sent", "failed", "dropped", "deduplicated", "rate_limited", "log_only")


def _alerter(out: _Families, snap: Snapshot) -> None:
    actor_id = _components(snap).get("alerter")
    s = (snap.get("stats") or {}).get(actor_id) if actor_id else None
    if s is None:
        return
    for outcome in _ALERT_OUTCOMES:
        out.counter("tradetree_alerts_total", "Alerts by outcome (sent to Slack, failed, dropped, ...).",
                    s.get(outcome, 0), outcome=outcome)
    out.gauge("tradetree_alerts_pending", "Alerts queued for delivery.", s.get("pending", 0))


# The model server's states as its stats and the tradetree_model_server_state metric publish
# them: dashboards read these labels, so they keep their names while the lifecycle is shared.
# A state not in it is published as its ComponentState value (and no metric label matches it).
MODEL_SERVER_STATE_LABELS: dict[ComponentState, str] = {
    ComponentState.NEW: "unstarted",
    ComponentState.RUNNING: "serving",
    ComponentState.STOPPED: "stopped",
}
_MODEL_SERVER_STATES = tuple(MODEL_SERVER_STATE_LABELS.values())


def _model_servers(out: _Families, snap: Snapshot) -> None:
    stats = snap.get("stats") or {}
    for model, actor_id in sorted((_components(snap).get("model_servers") or {}).items()):
        s = stats.get(actor_id)
        if s is None:
            continue
        state = s.get("state")
        for known in _MODEL_SERVER_STATES:  # a fixed set, so no free text of the stats becomes a label
            out.gauge("tradetree_model_server_state", "1 for the model server's current state.",
                      state == known, model=model, state=known)
        out.counter("tradetree_model_server_predictions_total", "Predictions the model server returned.",
                    s.get("predictions_served", 0), model=model)
        out.counter("tradetree_model_server_batches_failed_total",
                    "Prediction batches the model server refused (an unusable item fails the batch).",
                    s.get("batches_failed", 0), model=model)


def build_registry(collector: TreeCollector) -> CollectorRegistry:
    """A registry of its own holding only ``collector`` (no process metrics of the exporter's process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
