"""The Prometheus collector on crafted snapshots (no Ray, no Redis), and a helper for tree tests."""

from __future__ import annotations

import copy

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tradetree.telemetry.metrics import TreeCollector, build_registry

NOW_MS = 1_700_000_010_000
SNAP_MS = 1_700_000_000_000
API_KEY, SECRET, PASSPHRASE = "ak-7f3c91d0e2", "sk-b84a1c55e9", "pp-c0ffee4242"

COMPONENTS = {
    "gateways": {"okx": "VenueGateway[okx]"},
    "reconcilers": {"okx": "FillReconciler[okx]"},
    "strategies": {"MR_BTC": "okx", "MR_ETH": "okx"},
    "risk_monitor": "RiskMonitor",
    "alerter": "Alerter",
}


def _snapshot() -> dict:
    return {
        "ts_ms": SNAP_MS,
        "gather_secs": 0.05,
        "components": COMPONENTS,
        "tree": {
            "RootSupervisor": {"state": "running", "restarts": 0, "supervisor": True, "parent": None, "detail": ""},
            "VenueSupervisor[okx]": {"state": "running", "restarts": 0, "supervisor": True,
                                     "parent": "RootSupervisor", "detail": ""},
            "VenueGateway[okx]": {"state": "running", "restarts": 2, "supervisor": False,
                                  "parent": "VenueSupervisor[okx]", "detail": ""},
            "FillReconciler[okx]": {"state": "running", "restarts": 0, "supervisor": False,
                                    "parent": "VenueSupervisor[okx]",
                                    "detail": f"fill_flow: login with {API_KEY} failed"},
            "MR_BTC": {"state": "paused", "restarts": 1, "supervisor": False, "parent": "StrategySupervisor",
                       "detail": ""},
        },
        "redis": {
            "strategies": {"MR_BTC": "RUNNING", "MR_ETH": "PAUSED"},
            # valued as core.book does: (50001 - 50000.5) * -3 * 0.01 = -0.015, 12.25 - 0.015 - 0.75 = 11.485
            "positions": [
                {"strategy_id": "MR_BTC", "venue": "okx", "inst_id": "BTC-USDT-SWAP", "qty": "-3",
                 "avg_price": "50000.5", "realized_pnl": "12.25", "fees": "0.75", "fill_count": 4,
                 "contract_value": "0.01", "mark_price": "50001", "mark_age_ms": 1500, "notional": "1500.03",
                 "unrealized_pnl": "-0.015", "total_pnl": "11.485", "unvalued_reason": ""},
                {"strategy_id": "MR_ETH", "venue": "okx", "inst_id": "ETH-USDT-SWAP", "qty": "2",
                 "avg_price": "3000", "realized_pnl": "0", "fees": "0.1", "fill_count": 1,
                 "contract_value": "0.1", "mark_price": None, "mark_age_ms": None, "notional": None,
                 "unrealized_pnl": None, "total_pnl": None,
                 "unvalued_reason": f"no usable mark for okx:ETH-USDT-SWAP: {SECRET}"},
            ],
            "strategy_pnl": {
                "MR_BTC": {"strategy_id": "MR_BTC", "realized_pnl": "12.25", "fees": "0.75",
                           "unrealized_pnl": "-0.015", "total_pnl": "11.485", "notional": "1500.03",
                           "unrealized_pnl_known": "-0.015", "total_pnl_known": "11.485",
                           "notional_known": "1500.03", "open_positions": 1, "unvalued": []},
                "MR_ETH": {"strategy_id": "MR_ETH", "realized_pnl": "0", "fees": "0.1", "unrealized_pnl": None,
                           "total_pnl": None, "notional": None, "unrealized_pnl_known": "0",
                           "total_pnl_known": "0", "notional_known": "0", "open_positions": 1,
                           "unvalued": ["okx:ETH-USDT-SWAP"]},
            },
            "fills_by_layer": {"ws": {"applied": 5, "delivered": 6}, "poll": {"applied": 1, "delivered": 6},
                               "health": {"applied": 0, "delivered": 0}},
            "kill_flag": None,
            "heartbeats": {"gateway:okx": SNAP_MS - 500},
            "venues": {"okx": {
                "fills_by_layer": {"ws": {"applied": 5, "delivered": 6}, "poll": {"applied": 1, "delivered": 6},
                                   "health": {"applied": 0, "delivered": 0}},
                "control": {"venue": "okx", "verified_at_ms": SNAP_MS - 2000,
                            "discrepancies": {"BTC-USDT-SWAP": {"detail": f"secret {SECRET}"}},
                            "venue_pause": f"drift ({PASSPHRASE})",
                            "venue_pauses": {"drift": {"reason": f"why {PASSPHRASE}", "since_ms": 1}},
                            "breakers": {"strategy:MR_BTC:max_loss": {"reason": f"{SECRET}", "since_ms": 1}}},
                "marks": {"BTC-USDT-SWAP": {"price": "50001", "recv_ms": SNAP_MS - 1500}},
            }},
        },
        "stats": {
            "VenueGateway[okx]": {
                "state": "running",
                "counters": {"ws_fills_applied": 5, "order_updates": 9},
                "ws": {"public": {"state": "connected", "reconnects": 1, "last_message_ms": SNAP_MS - 100,
                                  "garbled": 0, "handler_errors": 0, "backoff": [[0, 0.5]]},
                       "private": {"state": "backoff", "reconnects": 3, "last_message_ms": SNAP_MS - 4000,
                                   "garbled": 1, "handler_errors": 0, "backoff": []}},
                "subscribers": {"MR_BTC": {"in_flight": 0, "dropped": 2, "failures": 0, "delivered": 120}},
                "last_error": f"REST 401 for key {API_KEY}",
            },
            "FillReconciler[okx]": {
                "venue": "okx", "state": "running",
                "counters": {"poll_cycles": 10, "poll_cycles_ok": 9, "poll_cycles_failed": 1,
                             "fills_applied_poll": 1, "fills_applied_health": 0, "venue_pauses": 1},
                "gaps": {"detected": 1, "open": [{"inst_id": "BTC-USDT-SWAP"}], "ws_flow": {}},
                "drift": {"drifting": [], "confirmed_total": 0, "last": None},
                "last_poll_ok_ms": SNAP_MS - 1000,
                "last_errors": {"poll": f"passphrase {PASSPHRASE} rejected"},
                "canary": {"enabled": False},
            },
            "MR_BTC": {"id": "MR_BTC", "venue": "okx", "orders_sent": 7, "rejections": 1, "denials": 2,
                       "last_denial": ["notional", SECRET], "last_ticker_ms": SNAP_MS - 300, "last_error": ""},
            "RiskMonitor": {"loops": 40, "loop_errors": 0, "events_read": 12, "bad_events": 0, "trips": 1,
                            "breakers_opened": 1, "alerts_sent": 1, "alerts_dropped": 0, "pauses": 1,
                            "last_error": SECRET, "last_loop_ms": SNAP_MS - 250, "lifecycle": "running",
                            "cursor": "1-0", "pending_trips": 0, "alerts_pending": 0, "rejection_streaks": {}},
            "Alerter": {"received": 3, "queued": 0, "sent": 2, "failed": 1, "dropped": 0, "deduplicated": 0,
                        "rate_limited": 0, "log_only": 0, "pending": 0},
        },
        "up": {"tree": True, "redis": True, "VenueGateway[okx]": True, "FillReconciler[okx]": True,
               "MR_BTC": True, "MR_ETH": False, "RiskMonitor": True, "Alerter": True},
        "scrape_errors": {"tree": 0, "redis": 0, "MR_ETH": 3},
    }


def scrape(snapshot: dict | None, now_ms: int = NOW_MS) -> str:
    collector = TreeCollector(lambda: snapshot, clock_ms=lambda: now_ms)
    return generate_latest(build_registry(collector)).decode()


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, frozenset(labels)): value}`` of an exposition text."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def test_every_part_of_the_tree_is_exported_with_units_and_labels():
    s = parse(scrape(_snapshot()))
    # supervisor
    assert value(s, "tradetree_actor_restarts_total", child="VenueGateway[okx]", parent="VenueSupervisor[okx]") == 2
    assert value(s, "tradetree_actor_running", child="MR_BTC", parent="StrategySupervisor") == 0
    assert value(s, "tradetree_actor_state", child="MR_BTC", parent="StrategySupervisor", state="paused") == 1
    assert value(s, "tradetree_actor_probe_failing", child="FillReconciler[okx]", parent="VenueSupervisor[okx]") == 1
    assert value(s, "tradetree_safe_mode") == 0 and value(s, "tradetree_kill_flag") == 0
    # gateway
    assert value(s, "tradetree_gateway_ws_connected", venue="okx", channel="public") == 1
    assert value(s, "tradetree_gateway_ws_connected", venue="okx", channel="private") == 0
    assert value(s, "tradetree_gateway_ws_reconnects_total", venue="okx", channel="private") == 3
    assert value(s, "tradetree_gateway_ws_last_message_age_seconds", venue="okx", channel="private") == 4.0
    assert value(s, "tradetree_gateway_events_total", venue="okx", event="ws_fills_applied") == 5
    assert value(s, "tradetree_gateway_subscriber_dropped_total", venue="okx", subscriber="MR_BTC") == 2
    assert value(s, "tradetree_market_data_age_seconds", venue="okx", instrument="BTC-USDT-SWAP") == 1.5
    # reconciler and the fill layers
    assert value(s, "tradetree_fills_applied_total", venue="okx", layer="ws") == 5
    assert value(s, "tradetree_fills_applied_total", venue="okx", layer="poll") == 1
    assert value(s, "tradetree_fills_delivered_total", venue="okx", layer="poll") == 6
    assert value(s, "tradetree_reconciler_polls_total", venue="okx", outcome="failed") == 1
    assert value(s, "tradetree_reconciler_venue_pauses_total", venue="okx") == 1
    assert value(s, "tradetree_reconciler_fill_gaps_open", venue="okx") == 1
    assert value(s, "tradetree_venue_verified_age_seconds", venue="okx") == 2.0
    assert value(s, "tradetree_venue_discrepancies", venue="okx") == 1
    assert value(s, "tradetree_venue_paused", venue="okx") == 1
    assert value(s, "tradetree_venue_pause", venue="okx", source="drift") == 1
    # strategies
    assert value(s, "tradetree_strategy_state", strategy="MR_ETH", venue="okx", state="PAUSED") == 1
    assert value(s, "tradetree_strategy_running", strategy="MR_BTC", venue="okx") == 1
    assert value(s, "tradetree_strategy_orders_sent_total", strategy="MR_BTC", venue="okx") == 7
    assert value(s, "tradetree_strategy_denials_total", strategy="MR_BTC", venue="okx") == 2
    assert value(s, "tradetree_position_qty", strategy="MR_BTC", venue="okx", instrument="BTC-USDT-SWAP") == -3
    # risk and alerts
    assert value(s, "tradetree_risk_breakers_open") == 1
    assert value(s, "tradetree_risk_breaker_open", breaker="strategy:MR_BTC:max_loss") == 1
    assert value(s, "tradetree_risk_monitor_events_total", event="trips") == 1
    assert value(s, "tradetree_alerts_total", outcome="failed") == 1
    # the exporter itself
    assert value(s, "tradetree_snapshot_age_seconds") == 10.0
    assert value(s, "tradetree_up", component="MR_ETH") == 0
    assert value(s, "tradetree_scrape_errors_total", component="MR_ETH") == 3
    assert all(n.startswith("tradetree_") for n in names(s))


def test_positions_and_strategies_are_exported_valued_and_an_unknown_value_has_no_sample():
    s = parse(scrape(_snapshot()))
    btc = {"strategy": "MR_BTC", "venue": "okx", "instrument": "BTC-USDT-SWAP"}
    assert value(s, "tradetree_position_mark_price", **btc) == 50001
    assert value(s, "tradetree_position_notional", **btc) == 1500.03
    assert value(s, "tradetree_position_unrealized_pnl", **btc) == -0.015
    assert value(s, "tradetree_position_total_pnl", **btc) == 11.485
    assert value(s, "tradetree_strategy_unrealized_pnl", strategy="MR_BTC") == -0.015
    assert value(s, "tradetree_strategy_total_pnl", strategy="MR_BTC") == 11.485
    assert value(s, "tradetree_strategy_unvalued_positions", strategy="MR_BTC") == 0
    # MR_ETH has no usable mark: no sample at all (0 would read as "flat, nothing lost")
    eth = {"strategy": "MR_ETH", "venue": "okx", "instrument": "ETH-USDT-SWAP"}
    assert value(s, "tradetree_position_qty", **eth) == 2
    for name in ("tradetree_position_mark_price", "tradetree_position_notional", "tradetree_position_unrealized_pnl",
                 "tradetree_position_total_pnl"):
        assert (name, frozenset(eth.items())) not in s, name
    for name in ("tradetree_strategy_unrealized_pnl", "tradetree_strategy_total_pnl"):
        assert (name, frozenset({"strategy": "MR_ETH"}.items())) not in s, name
    assert value(s, "tradetree_strategy_unvalued_positions", strategy="MR_ETH") == 1


def test_plain_position_rows_export_as_before_without_valuation_samples():
    snap = _snapshot()
    keep = ("strategy_id", "venue", "inst_id", "qty", "avg_price", "realized_pnl", "fees", "fill_count")
    snap["redis"]["positions"] = [{k: p[k] for k in keep} for p in snap["redis"]["positions"]]
    del snap["redis"]["strategy_pnl"]
    s = parse(scrape(snap))
    assert value(s, "tradetree_position_realized_pnl", strategy="MR_BTC", venue="okx",
                 instrument="BTC-USDT-SWAP") == 12.25
    assert not {"tradetree_position_unrealized_pnl", "tradetree_strategy_total_pnl"} & names(s)


def test_an_actor_that_did_not_answer_has_no_metrics_but_the_others_keep_theirs():
    snap = _snapshot()
    del snap["stats"]["VenueGateway[okx]"]
    snap["up"]["VenueGateway[okx]"] = False
    s = parse(scrape(snap))
    assert not any(n.startswith("tradetree_gateway_") for n in names(s))
    assert value(s, "tradetree_up", component="VenueGateway[okx]") == 0
    assert value(s, "tradetree_reconciler_polls_total", venue="okx", outcome="ok") == 9
    assert value(s, "tradetree_strategy_orders_sent_total", strategy="MR_BTC", venue="okx") == 7


def test_a_malformed_section_is_skipped_and_counted_not_the_scrape():
    snap = _snapshot()
    snap["stats"]["FillReconciler[okx]"]["counters"] = ["not", "a", "dict"]
    collector = TreeCollector(lambda: snap, clock_ms=lambda: NOW_MS)
    registry = build_registry(collector)
    generate_latest(registry)
    s = parse(generate_latest(registry).decode())
    assert not any(n.startswith("tradetree_reconciler_") for n in names(s))
    assert value(s, "tradetree_collect_errors_total", section="reconcilers") == 2
    assert value(s, "tradetree_gateway_events_total", venue="okx", event="order_updates") == 9


def test_without_redis_or_tree_only_what_was_read_is_exported():
    snap = _snapshot()
    snap["redis"] = None
    snap["tree"] = None
    snap["up"].update(redis=False, tree=False)
    s = parse(scrape(snap))
    assert value(s, "tradetree_up", component="redis") == 0
    assert not {"tradetree_strategy_state", "tradetree_kill_flag", "tradetree_actor_running",
                "tradetree_fills_applied_total"} & names(s)
    assert value(s, "tradetree_strategy_orders_sent_total", strategy="MR_BTC", venue="okx") == 7


def test_before_the_first_snapshot_only_the_exporter_reports():
    s = parse(scrape(None))
    assert s == {("tradetree_exporter_snapshot_present", frozenset()): 0.0}


def test_safe_mode_from_the_root_or_the_kill_flag():
    snap = _snapshot()
    snap["tree"]["RootSupervisor"]["state"] = "escalated"
    assert value(parse(scrape(snap)), "tradetree_safe_mode") == 1
    snap = _snapshot()
    snap["redis"]["kill_flag"] = "SAFE MODE: root escalated"
    s = parse(scrape(snap))
    assert value(s, "tradetree_safe_mode") == 1 and value(s, "tradetree_kill_flag") == 1


@pytest.mark.parametrize("secret", [API_KEY, SECRET, PASSPHRASE])
def test_no_free_text_reaches_the_exposition(secret):
    # The crafted snapshot carries the credentials in every free-text field: errors, probe
    # details, pause, breaker and discrepancy reasons, last denial.
    text = scrape(_snapshot())
    assert secret in repr(_snapshot())
    assert secret not in text


def test_the_snapshot_is_not_changed_by_a_scrape():
    snap = _snapshot()
    before = copy.deepcopy(snap)
    scrape(snap)
    assert snap == before


def assert_tree_metrics(text: str, strategies: list[str], *, min_fills: int = 0, venue: str = "okx") -> dict:
    """What a healthy running tree exports; used by the tree tests. Returns the parsed samples."""
    s = parse(text)
    for component in ("tree", "redis", f"VenueGateway[{venue}]", f"FillReconciler[{venue}]", "RiskMonitor",
                      "Alerter", *strategies):
        assert value(s, "tradetree_up", component=component) == 1, component
    for sid in strategies:
        states = [dict(labels)["state"] for (n, labels), v in s.items()
                  if n == "tradetree_strategy_state" and dict(labels)["strategy"] == sid and v == 1]
        assert len(states) == 1 and states[0] in ("RUNNING", "PAUSED"), (sid, states)
        assert value(s, "tradetree_strategy_orders_sent_total", strategy=sid, venue=venue) >= 0
        assert value(s, "tradetree_actor_running", child=sid, parent="StrategySupervisor") == 1
    applied = {dict(labels)["layer"]: v for (n, labels), v in s.items() if n == "tradetree_fills_applied_total"}
    assert set(applied) >= {"ws", "poll", "health"} and sum(applied.values()) >= min_fills, applied
    assert value(s, "tradetree_gateway_ws_connected", venue=venue, channel="private") == 1
    assert value(s, "tradetree_actor_running", child=f"VenueGateway[{venue}]", parent=f"VenueSupervisor[{venue}]") == 1
    assert value(s, "tradetree_safe_mode") == 0 and value(s, "tradetree_kill_flag") == 0
    return s


def wait_for_tree_metrics(url: str, strategies: list[str], *, min_fills: int, timeout_secs: float) -> str:
    """Scrape ``url`` until ``assert_tree_metrics`` passes; then return the text, else raise its failure."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_secs
    while True:
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
        try:
            assert_tree_metrics(text, strategies, min_fills=min_fills)
            return text
        except (AssertionError, KeyError):
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.25)


def test_the_exporter_is_a_tree_child_only_when_enabled():
    from types import SimpleNamespace

    from pydantic import SecretStr

    from tradetree.config import EngineConfig
    from tradetree.core import SERVICE_SUPERVISOR_ID
    from tradetree.core.config import VenueCredentials
    from tradetree.supervisor.spec import ChildSpec, SupervisorSpec, iter_tree, validate_tree
    from tradetree.tree import METRICS_EXPORTER_ID, build_root_spec

    creds = VenueCredentials(api_key=SecretStr(API_KEY), secret_key=SecretStr(SECRET),
                             passphrase=SecretStr(PASSPHRASE))
    endpoints = {"okx": SimpleNamespace(rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5",
                                        credentials=creds)}
    raw = {"venues": [{"name": "okx", "instruments": ["BTC-USDT-SWAP"]}],
           "strategies": [{"class": "MeanReversion", "version": "v1", "venue": "okx", "symbols": ["ETH-USDT-SWAP"],
                           "params": {"size": "1"}}]}

    def root(**extra):
        return build_root_spec(EngineConfig.model_validate({**raw, **extra}), redis_url="redis://127.0.0.1:1/0",
                               endpoints=endpoints, ray_namespace="t")

    assert METRICS_EXPORTER_ID not in [c.id for c in iter_tree(root())]
    spec = root(metrics={"enabled": True, "port": 0})
    validate_tree(spec)
    # Both under the non-trading subtree, which the root starts first, alerter first.
    services = spec.children[0]
    assert isinstance(services, SupervisorSpec) and services.id == SERVICE_SUPERVISOR_ID and not services.escalate
    assert [c.id for c in services.children] == ["Alerter", METRICS_EXPORTER_ID]
    child = services.children[1]
    assert isinstance(child, ChildSpec) and child.actor_class == "tradetree.actors.metrics_exporter:MetricsExporterActor"
    assert child.kwargs["instruments"] == {"okx": ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]}
    assert child.kwargs["components"]["strategies"] == {"MeanReversion_v1_ETH": "okx"}
    assert not child.start_paused and not child.release_after and child.heartbeat_key is None
    # The exporter is handed names and addresses only, never the venue credentials.
    assert not any(s in repr(child) for s in (API_KEY, SECRET, PASSPHRASE))
