"""The metrics exporter's snapshot decisions as pure functions."""

from __future__ import annotations

from decimal import Decimal

from tradetree.core.marks import Mark
from tradetree.telemetry.gather import (
    REDIS,
    TREE,
    actor_ids,
    assemble_snapshot,
    exporter_probes,
    metrics_url,
    venue_marks_view,
)

COMPONENTS = {"gateways": {"okx": "VenueGateway[okx]"}, "reconcilers": {"okx": "FillReconciler[okx]"},
              "strategies": {"S1": "okx", "S2": "okx"}, "risk_monitor": "RiskMonitor", "alerter": None,
              "model_servers": {"m": "ModelServer[m]"}}


def test_actor_ids_in_a_stable_order_skipping_absent_members() -> None:
    assert actor_ids(COMPONENTS) == ["VenueGateway[okx]", "FillReconciler[okx]", "S1", "S2", "RiskMonitor",
                                     "ModelServer[m]"]
    assert actor_ids({}) == []


def test_assemble_snapshot_leaves_out_failed_parts_and_marks_them_down() -> None:
    values = {TREE: {"root": 1}, REDIS: None, "VenueGateway[okx]": {"counters": {}}, "S1": None}
    snap = assemble_snapshot(ts_ms=5, gather_secs=0.5, components={"gateways": {"okx": "VenueGateway[okx]"},
                                                                   "strategies": {"S1": "okx"}},
                             values=values, scrape_errors={REDIS: 2})
    assert snap["tree"] == {"root": 1} and snap["redis"] is None
    assert snap["stats"] == {"VenueGateway[okx]": {"counters": {}}}
    assert snap["up"] == {TREE: True, REDIS: False, "VenueGateway[okx]": True, "S1": False}
    assert snap["scrape_errors"] == {REDIS: 2} and snap["ts_ms"] == 5 and snap["gather_secs"] == 0.5


def test_venue_marks_view_keeps_one_venue() -> None:
    marks = {("okx", "A"): Mark(price=Decimal("1.5"), ts_ms=1, recv_ms=2),
             ("bn", "A"): Mark(price=Decimal(9), ts_ms=1, recv_ms=3)}
    assert venue_marks_view(marks, "okx") == {"A": {"price": "1.5", "recv_ms": 2}}


def test_metrics_url_brackets_ipv6() -> None:
    assert metrics_url(None) is None
    assert metrics_url(("127.0.0.1", 9464)) == "http://127.0.0.1:9464/metrics"
    assert metrics_url(("::1", 80)) == "http://[::1]:80/metrics"


def test_exporter_probes() -> None:
    refresh, http = exporter_probes(loop_running=True, snapshot_ts_ms=None, url=None, bind_error="cannot bind")
    assert refresh.ok and refresh.detail == "no snapshot yet"
    assert not http.ok and not http.liveness and http.detail == "cannot bind"
    refresh, http = exporter_probes(loop_running=False, snapshot_ts_ms=7, url="http://h:1/metrics", bind_error="")
    assert not refresh.ok and refresh.detail == "refresh loop not running"
    assert http.ok and http.detail == "serving http://h:1/metrics"
    assert exporter_probes(loop_running=True, snapshot_ts_ms=7, url=None, bind_error="")[1].detail == "not started"
