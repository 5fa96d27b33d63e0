"""The risk monitor alerts once when the tree goes unsupervised and once when a root heartbeats again.

The plain monitor on a real Redis, driven by ``run_once()`` on a manual clock;
the root's heartbeat is written as the root supervisor writes it.
"""

from __future__ import annotations

import pytest

from tests.actors.test_risk_monitor import CFG, RecordingAlerts
from tradetree.actors.risk_monitor import RiskMonitor
from tradetree.core.clock import ManualClock
from tradetree.core.names import ROOT_HEARTBEAT_KEY
from tradetree.core.store import RedisStore
from tradetree.risk.root_supervision import ROOT_ALERT_KEY

pytestmark = pytest.mark.integration


@pytest.fixture
async def env(real_redis, namespace):
    clock = ManualClock()
    alerts = RecordingAlerts()
    mon = RiskMonitor(CFG, namespace=namespace, alerts=alerts, client=real_redis, clock=clock)
    yield RedisStore(real_redis, namespace), mon, alerts, clock
    await mon.stop()


def unsupervised(alerts):
    return [a for a in alerts.alerts if a[1] == ROOT_ALERT_KEY]


async def test_one_critical_alert_when_stale_one_info_alert_on_recovery(env):
    store, mon, alerts, clock = env
    await mon.run_once()  # no root heartbeat ever: no verdict, no alert
    assert alerts.alerts == [] and mon.stats()["root_heartbeat_age_secs"] is None

    await store.heartbeat(ROOT_HEARTBEAT_KEY, clock.now_ms())
    clock.advance(1)
    await mon.run_once()
    assert alerts.alerts == [] and mon.stats()["root_heartbeat_age_secs"] == 1.0

    clock.advance(11)  # the root stopped heartbeating 12 s ago
    for _ in range(3):
        await mon.run_once()
        clock.advance(5)
    [(severity, _, title, text)] = unsupervised(alerts)
    assert severity == "critical" and title == "Tree unsupervised"
    assert text.startswith("tree unsupervised since 22:13:20 UTC: strategies refused new risk; "
                           "the root is being re-created by Ray / run tradetree status")
    assert "heartbeat 12.0s old" in text
    assert mon.stats()["tree_unsupervised_since_ms"] == 1_700_000_000_000
    assert mon.stats()["root_heartbeat_age_secs"] == 22.0

    await store.heartbeat(ROOT_HEARTBEAT_KEY, clock.now_ms())  # Ray re-created the root
    await mon.run_once()
    await mon.run_once()
    assert len(alerts.alerts) == 2
    severity, key, title, text = alerts.alerts[1]
    assert severity == "info" and key == ROOT_ALERT_KEY + ":recovered" and "heartbeats again" in text
    assert mon.stats()["tree_unsupervised_since_ms"] is None


async def test_a_vanished_root_heartbeat_alerts_once_seen(env):
    store, mon, alerts, clock = env
    await store.heartbeat(ROOT_HEARTBEAT_KEY, clock.now_ms())
    await mon.run_once()
    await store.client.hdel(store._keys.heartbeats, ROOT_HEARTBEAT_KEY)
    await mon.run_once()
    await mon.run_once()
    [(severity, _, _, text)] = unsupervised(alerts)
    assert severity == "critical" and "no RootSupervisor heartbeat in Redis" in text
    assert mon.stats()["root_heartbeat_age_secs"] is None


async def test_an_undelivered_alert_is_retried_not_repeated(real_redis, namespace):
    clock = ManualClock()
    alerts = RecordingAlerts(fail_times=1)
    mon = RiskMonitor(CFG, namespace=namespace, alerts=alerts, client=real_redis, clock=clock)
    store = RedisStore(real_redis, namespace)
    await store.heartbeat(ROOT_HEARTBEAT_KEY, clock.now_ms() - 60_000)  # a monitor started while the root is gone
    await mon.run_once()  # the alerter is down: kept in the outbox
    assert alerts.alerts == []
    await mon.run_once()
    await mon.run_once()
    assert [a[0] for a in unsupervised(alerts)] == ["critical"]
    await mon.stop()
