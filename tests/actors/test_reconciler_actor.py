"""FillReconcilerActor: the Ray shell delegates to FillReconciler and sends alerts to a named alerter."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest

from tests.adapters.sim_helpers import FAST_SIM, credentials, eventually, venue_config
from tradetree.actors.reconciler import FillReconcilerActor, ReconcileReport
from tradetree.core.store import RedisStore
from tradetree.core.types import Order, OrderState, OrderType, Side
from tradetree.execution.reconciliation import ReconcilerConfig
from tradetree.sim.server import SimulatorThread

pytestmark = pytest.mark.integration

CONFIG = ReconcilerConfig(poll_interval_secs=0.3, fill_health_interval_secs=0.2, drift_interval_secs=0.3)


@pytest.fixture
def sim_thread():
    # In its own thread: the actor reaches it from another process while the test awaits Ray.
    thread = SimulatorThread(FAST_SIM)
    server = thread.start()
    yield server
    thread.stop()


async def test_actor_reconciles_reports_health_and_alerts_by_name(ray_session, sim_thread, redis_url, real_redis,
                                                                   namespace):
    ray = ray_session

    @ray.remote(num_cpus=0)
    class TinyAlerter:
        def __init__(self):
            self.keys = []

        def alert(self, severity, key, title, text):
            self.keys.append(key)

        def sent(self):
            return self.keys

    tag = uuid.uuid4().hex[:8]
    alerter = TinyAlerter.options(name=f"alerter-{tag}").remote()
    reconciler = FillReconcilerActor.options(name=f"reconciler-okx-{tag}").remote(
        venue_config(sim_thread), redis_url=redis_url, namespace=namespace, rest_url=sim_thread.rest_url,
        credentials=credentials(), config=CONFIG, alerter_name=f"alerter-{tag}",
    )
    try:
        # An order Redis holds as acknowledged that the venue does not know: an anomaly to alert.
        now = int(time.time() * 1000)
        ghost = Order(client_order_id=f"ttghost{tag}", strategy_id="s1", venue="okx", inst_id="BTC-USDT-SWAP",
                      side=Side.BUY, type=OrderType.LIMIT, size=Decimal(1), price=Decimal(50000),
                      state=OrderState.LIVE, venue_order_id="999999999", created_ms=now, updated_ms=now)
        assert await RedisStore(real_redis, namespace).record_order(ghost)
        await reconciler.start.remote()
        report = await reconciler.reconcile_now.remote()
        assert isinstance(report, ReconcileReport) and report.venue == "okx"
        assert report.poll.decisions == {ghost.client_order_id: "unknown_at_venue"}

        async def alerted() -> bool:
            return f"okx:order_anomaly:{ghost.client_order_id}" in await alerter.sent.remote()

        await eventually(alerted, what="anomaly alert delivered to the named alerter")

        async def rest_and_drift_ok() -> bool:
            health = await reconciler.check_health.remote()
            return {p.name for p in health.probes if p.ok} >= {"store", "rest", "poll_fresh", "no_drift"}

        await eventually(rest_and_drift_ok, what="probes")
        stats = await reconciler.stats.remote()
        assert stats["venue"] == "okx" and stats["counters"]["poll_cycles"] >= 1
        # the anomaly is alerted once, not at every cycle
        assert (await alerter.sent.remote()).count(f"okx:order_anomaly:{ghost.client_order_id}") == 1
        await reconciler.stop.remote()
        assert not (await reconciler.check_health.remote()).healthy
    finally:
        ray.kill(reconciler)
        ray.kill(alerter)
