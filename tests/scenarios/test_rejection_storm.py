"""Scenario 4: the venue rejects every order; the strategy is paused after N, alerted once, and stays out.

The incident let 228 rejected orders go by without a pause. Here the risk
monitor counts consecutive venue rejections per strategy from the order events
in Redis and opens the strategy's ``rejections`` breaker at
``risk.rejection_streak_limit``: the strategy goes PAUSED, one alert goes out,
and no order reaches the venue afterwards although the strategy keeps wanting
to trade (its intents are refused before the gateway).
"""

import pytest

from tests.scenarios.harness import running_tree, scenario_config
from tests.scenarios.tree_helpers import breakers, call, orders_of
from tradetree.core.types import OrderState

pytestmark = pytest.mark.integration

STREAK_LIMIT = 4


def test_rejection_storm_pauses_the_strategy_once(ray_session, redis_url, namespace):
    config = scenario_config(redis_url, namespace, risk={"rejection_streak_limit": STREAK_LIMIT})
    strategy = config.strategies[0].id
    breaker = f"strategy:{strategy}:rejections"
    with running_tree(config) as tree:
        tree.wait_running()
        tree.sim.faults.set_reject_orders(True)
        reached_before = tree.sim.order_requests
        known_before = set(orders_of(tree, strategy))

        opened = tree.wait_for(lambda: breakers(tree).get(breaker), 60, f"breaker {breaker}")
        assert f"{STREAK_LIMIT} consecutive venue rejections" in opened["reason"]
        tree.wait_for(lambda: tree.strategy_states()[strategy] == "PAUSED", 10, f"{strategy} PAUSED")

        storm = {c: o for c, o in orders_of(tree, strategy).items() if c not in known_before}
        rejected = [o for o in storm.values() if o.state is OrderState.REJECTED]
        assert len(rejected) == len(storm), {c: o.state for c, o in storm.items()}
        # The breaker opens at the limit; an order already on its way when it opened may add one.
        assert STREAK_LIMIT <= len(rejected) <= STREAK_LIMIT + 1
        assert all("51008" in o.reject_reason for o in rejected), [o.reject_reason for o in rejected]
        reached_at_pause = tree.sim.order_requests
        assert reached_at_pause - reached_before == len(rejected)

        # The paused strategy keeps deciding (its indicators stay warm) and is refused before the
        # gateway each time: after several refusals, nothing more may have reached the venue.
        denials_at_pause = call(tree, strategy, "stats")["denials"]
        tree.wait_for(lambda: call(tree, strategy, "stats")["denials"] >= denials_at_pause + 3, 60,
                      "three more refusals of the paused strategy")
        last_denial = call(tree, strategy, "stats")["last_denial"]
        assert any("PAUSED" in r for r in last_denial) and any(breaker in r for r in last_denial), last_denial
        assert tree.sim.order_requests == reached_at_pause
        assert set(orders_of(tree, strategy)) == set(storm) | known_before
        assert tree.strategy_states()[strategy] == "PAUSED"

        about_it = [a for a in tree.alerts() if a["key"] == breaker]
        assert len(about_it) == 1, about_it
        assert about_it[0]["severity"] == "critical" and strategy in about_it[0]["text"]
