"""Scenario 8: the same fill delivered by WS and by polling is counted once."""

import pytest

from tests.scenarios.harness import running_tree, scenario_config

pytestmark = pytest.mark.integration


def test_fill_seen_by_ws_and_poll_counts_once(ray_session, redis_url, namespace):
    with running_tree(scenario_config(redis_url, namespace)) as tree:
        tree.wait_running()
        tree.wait_for_fills(3)
        # The poller re-reads trades since its cursor, so it delivers fills the WS already applied.
        tree.wait_for(lambda: tree.layer_counts()["poll"]["delivered"] >= 3, 30, "poll deliveries")
        tree.wait_for(tree.matches_venue, 15, "Redis to match the venue")
        counts = tree.layer_counts()
        applied = sum(c["applied"] for c in counts.values())
        assert applied == len(tree.truth()["trades"]) == len(tree.audit())
        assert counts["poll"]["delivered"] > counts["poll"]["applied"]
