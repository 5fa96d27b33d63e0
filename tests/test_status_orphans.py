"""The status view while the root is gone: components still heartbeating show as ORPHAN, the header says
the tree is unsupervised."""

from __future__ import annotations

from tradetree.core import ROOT_HEARTBEAT_KEY
from tradetree.status import orphans, snapshot_text

NOW = 1_700_000_100_000


def _snap(root_state: str, heartbeats: dict[str, int]) -> dict:
    return {"strategies": {}, "positions": [], "fills_by_layer": {}, "kill_flag": None, "heartbeats": heartbeats,
            "actors": {"RootSupervisor": {"state": root_state, "restarts": 0, "detail": "ActorUnavailable: gone"}}}


HEARTBEATS = {ROOT_HEARTBEAT_KEY: NOW - 30_000, "gateway:okx": NOW - 800, "strategy:S1": NOW - 1_200,
              "risk_monitor": NOW - 2_000, "strategy:OLD": NOW - 600_000}


def test_orphans_are_the_fresh_heartbeats_while_the_root_is_unreachable():
    actors = _snap("UNREACHABLE", HEARTBEATS)["actors"]
    assert orphans(actors, HEARTBEATS, NOW) == {"gateway:okx": 0.8, "risk_monitor": 2.0, "strategy:S1": 1.2}
    assert orphans({"RootSupervisor": {"state": "RUNNING"}}, HEARTBEATS, NOW) == {}
    assert orphans({}, HEARTBEATS, NOW) == {}


def test_the_view_lists_orphans_and_says_the_tree_is_unsupervised():
    text = snapshot_text(_snap("UNREACHABLE", HEARTBEATS), now_ms=NOW)
    assert "Tree unsupervised: RootSupervisor heartbeat 30.0s old (stale after 10s)" in text
    for name in ("gateway:okx", "strategy:S1", "risk_monitor"):
        line = next(line for line in text.splitlines() if name in line)
        assert "ORPHAN" in line and "unreachable" in line
    assert "strategy:OLD" not in text


def test_a_supervised_tree_shows_no_orphans_and_no_warning():
    text = snapshot_text(_snap("RUNNING", {**HEARTBEATS, ROOT_HEARTBEAT_KEY: NOW - 500}), now_ms=NOW)
    assert "ORPHAN" not in text and "unsupervised" not in text.lower()
    assert "unsupervised" not in snapshot_text(_snap("RUNNING", {}), now_ms=NOW).lower()  # no root heartbeat yet


def test_on_a_cluster_each_actor_shows_its_node_and_on_one_node_the_column_is_left_out():
    snap = _snap("RUNNING", {})
    snap["actors"] = {"RootSupervisor": {"state": "running", "restarts": 0, "node_id": "aaaaaaaa1111"},
                      "VenueGateway[okx]": {"state": "running", "restarts": 1, "node_id": "bbbbbbbb2222"},
                      "Alerter": {"state": "running", "restarts": 0}}
    text = snapshot_text(snap, now_ms=NOW)
    gateway = next(line for line in text.splitlines() if "VenueGateway[okx]" in line)
    assert "bbbbbbbb" in gateway and "2222" not in gateway
    assert " - " in next(line for line in text.splitlines() if "Alerter" in line)
    snap["actors"]["VenueGateway[okx]"]["node_id"] = "aaaaaaaa1111"
    assert "aaaaaaaa" not in snapshot_text(snap, now_ms=NOW)
