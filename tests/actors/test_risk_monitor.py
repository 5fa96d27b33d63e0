"""RiskMonitor on a real Redis (plain class), and one Ray test of the actor shell.

The plain monitor is driven by `run_once()` without `start()`, so no timer runs
beside the test: every assertion is about a loop the test ran itself.
"""

import uuid
from decimal import Decimal as D

import pytest

from tradetree.actors.risk_monitor import RiskMonitor, RiskMonitorActor
from tradetree.core.clock import ManualClock
from tradetree.core.control_state import ControlState
from tradetree.core.errors import StoreUnavailable
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Instrument, InstrumentKind, Order, OrderState, OrderType, Side
from tradetree.risk.config import RiskConfig

INST = "BTC-USDT-SWAP"
INSTRUMENT = Instrument(venue="okx", inst_id=INST, kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                        settle="USDT", contract_value=D("0.01"), tick_size=D("0.1"), lot_size=D("0.01"),
                        min_size=D("0.01"))
CFG = RiskConfig(loop_interval_secs=3600, rejection_streak_limit=5)

pytestmark = pytest.mark.integration  # real Redis, and Ray for the actor test


class RecordingAlerts:
    def __init__(self, fail_times=0):
        self.alerts = []
        self.fail_times = fail_times

    async def alert(self, severity, key, title, text):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("alerter down")
        self.alerts.append((severity, key, title, text))


class RecordingPauser:
    def __init__(self):
        self.calls = []

    async def pause(self, strategy_id, reason):
        self.calls.append((strategy_id, reason))
        return True


def _order(coid, state, *, sid="S1", side=Side.BUY, size="1", reduce_only=False, ms=1_000):
    o = Order(client_order_id=coid, strategy_id=sid, venue="okx", inst_id=INST, side=side,
              type=OrderType.MARKET, size=D(size), reduce_only=reduce_only, created_ms=ms, updated_ms=ms)
    extra = {"reject_reason": "51008 insufficient balance"} if state is OrderState.REJECTED else {}
    return o.model_copy(update={"state": state, **extra})


async def _xadd(client, namespace, order):
    await client.xadd(RedisKeys(namespace).order_events, {"order": order.model_dump_json()})


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
async def env(real_redis, namespace, clock):
    store = RedisStore(real_redis, namespace)
    await store.set_strategy_state("S1", "RUNNING")
    await store.set_strategy_state("S2", "RUNNING")
    alerts, pauser = RecordingAlerts(), RecordingPauser()
    monitors = []

    def make(cfg=CFG, alerts_sink=None):
        mon = RiskMonitor(cfg, namespace=namespace, alerts=alerts_sink or alerts, pauser=pauser,
                          client=real_redis, clock=clock)
        monitors.append(mon)
        return mon

    yield store, make, alerts, pauser
    for mon in monitors:
        await mon.stop()


async def _storm(client, namespace, n, *, start=0, sid="S1"):
    for i in range(start, start + n):
        await _xadd(client, namespace, _order(f"{sid}-rej-{i}", OrderState.REJECTED, sid=sid))


async def test_rejection_storm_opens_breaker_pauses_and_alerts_once(env, real_redis, namespace):
    store, make, alerts, pauser = env
    mon = make()
    await _storm(real_redis, namespace, 5)
    trips = await mon.run_once()
    assert [t.breaker for t in trips] == ["strategy:S1:rejections"]
    assert list(await mon.breakers()) == ["strategy:S1:rejections"]
    assert (await store.strategy_states()) == {"S1": "PAUSED", "S2": "RUNNING"}
    assert [p[0] for p in pauser.calls] == ["S1"]
    assert len(alerts.alerts) == 1
    severity, key, title, text = alerts.alerts[0]
    assert key == "strategy:S1:rejections" and "5 consecutive venue rejections" in text and "S1" in text

    await _storm(real_redis, namespace, 1, start=5)  # the 6th
    assert await mon.run_once() == []
    assert len(alerts.alerts) == 1
    assert mon.stats()["rejection_streaks"]["S1"] == {"count": 6, "tripped": True}
    assert (await store.heartbeats())["risk_monitor"] == mon.clock.now_ms()
    assert (await mon.check_health()).healthy


async def test_storm_split_over_loops_and_a_restart_trips_once(env, real_redis, namespace):
    store, make, alerts, _ = env
    first = make()
    await _storm(real_redis, namespace, 3)
    assert await first.run_once() == []
    await first.stop()
    # A new monitor takes up cursor and streak from Redis: no event is read twice...
    second = make()
    await _storm(real_redis, namespace, 2, start=3)
    assert [t.breaker for t in await second.run_once()] == ["strategy:S1:rejections"]
    await second.stop()
    # ...and a third one neither re-reads the storm nor alerts again.
    third = make()
    assert await third.run_once() == []
    assert len(alerts.alerts) == 1
    assert third.stats()["events_read"] == 0


async def test_trip_not_applied_is_not_lost_by_a_restart(env, real_redis, namespace):
    store, make, alerts, _ = env
    first = make()
    await first.run_once()  # connects

    async def breaker_write_fails(*args):
        raise StoreUnavailable("Redis blip")

    first.control.set_breaker = breaker_write_fails
    await _storm(real_redis, namespace, 5)
    assert len(await first.run_once()) == 1
    assert await first.breakers() == {} and first.stats()["pending_trips"] == 1
    # it dies here; the cursor was not moved past the storm, so the next one trips again
    second = make()
    assert [t.breaker for t in await second.run_once()] == ["strategy:S1:rejections"]
    assert list(await second.breakers()) == ["strategy:S1:rejections"] and len(alerts.alerts) == 1
    assert (await store.strategy_states())["S1"] == "PAUSED"


async def test_accepted_order_between_rejections_resets_the_streak(env, real_redis, namespace):
    store, make, alerts, _ = env
    mon = make()
    await _storm(real_redis, namespace, 4)
    await _xadd(real_redis, namespace, _order("ok", OrderState.LIVE))
    await _storm(real_redis, namespace, 4, start=4)
    assert await mon.run_once() == []
    assert await mon.breakers() == {} and alerts.alerts == []


async def test_wind_down_state_is_not_overwritten_by_a_pause(env, real_redis, namespace):
    store, make, alerts, _ = env
    await store.set_strategy_state("S1", "WINDING_DOWN")
    mon = make()
    await _storm(real_redis, namespace, 5)
    await mon.run_once()
    assert (await store.strategy_states())["S1"] == "WINDING_DOWN"
    assert "strategy:S1:rejections" in await mon.breakers()
    assert len(alerts.alerts) == 1 and "none was RUNNING" in alerts.alerts[0][3]


async def test_operator_clear_rearms_but_does_not_resume(env, real_redis, namespace):
    store, make, alerts, _ = env
    mon = make()
    await _storm(real_redis, namespace, 5)
    await mon.run_once()
    assert await mon.clear_breaker("strategy:S1:rejections") is True
    assert await mon.clear_breaker("strategy:S1:rejections") is False
    assert (await store.strategy_states())["S1"] == "PAUSED"
    await _storm(real_redis, namespace, 4, start=5)
    assert await mon.run_once() == []
    await _storm(real_redis, namespace, 1, start=9)
    assert [t.breaker for t in await mon.run_once()] == ["strategy:S1:rejections"]
    assert len(alerts.alerts) == 2


async def test_undelivered_alert_is_retried_and_sent_once(env, real_redis, namespace):
    store, make, _, _ = env
    flaky = RecordingAlerts(fail_times=1)
    mon = make(alerts_sink=flaky)
    await _storm(real_redis, namespace, 5)
    await mon.run_once()
    assert flaky.alerts == [] and mon.stats()["alerts_pending"] == 1
    await mon.run_once()
    assert len(flaky.alerts) == 1 and mon.stats()["alerts_pending"] == 0
    await mon.run_once()
    assert len(flaky.alerts) == 1


async def test_garbled_event_is_skipped_and_counted(env, real_redis, namespace):
    store, make, alerts, _ = env
    mon = make()
    await real_redis.xadd(RedisKeys(namespace).order_events, {"order": b"{not json"})
    await real_redis.xadd(RedisKeys(namespace).order_events, {"other": b"x"})
    await _storm(real_redis, namespace, 5)
    assert [t.breaker for t in await mon.run_once()] == ["strategy:S1:rejections"]
    assert mon.stats()["bad_events"] == 2


# -- positions ---------------------------------------------------------------------------------

class Trader:
    """Writes orders and fills through the real store, and their events to the stream."""

    def __init__(self, store, client, namespace):
        self.store, self.client, self.namespace, self.n = store, client, namespace, 0

    async def fill(self, side, size, price, *, sid="S1", reduce_only=False, ms=2_000):
        self.n += 1
        coid = f"{sid}-o{self.n}"
        order = _order(coid, OrderState.PENDING_NEW, sid=sid, side=side, size=size,
                       reduce_only=reduce_only, ms=ms)
        await self.store.record_order(order)
        filled = order.transition(OrderState.FILLED, now_ms=ms + 1, filled_size=D(size))
        await self.store.update_order(filled)
        await _xadd(self.client, self.namespace, filled)
        await self.store.apply_fill(
            Fill(venue="okx", inst_id=INST, trade_id=f"t{self.n}", client_order_id=coid, side=side,
                 price=D(price), size=D(size), ts_ms=ms + 1, layer=FillLayer.WS),
            INSTRUMENT,
        )


async def test_unintended_flip_opens_breaker_and_pauses(env, real_redis, namespace):
    store, make, alerts, pauser = env
    trader = Trader(store, real_redis, namespace)
    mon = make()
    await trader.fill(Side.BUY, "1", "100")
    assert await mon.run_once() == []
    # the same position closed twice: the second close opens a short
    await trader.fill(Side.SELL, "1", "100", reduce_only=True, ms=3_000)
    await trader.fill(Side.SELL, "1", "100", reduce_only=True, ms=3_100)
    trips = await mon.run_once()
    assert [t.breaker for t in trips] == ["strategy:S1:flip"]
    assert "flipped from long to short" in trips[0].reason
    assert (await store.strategy_states())["S1"] == "PAUSED"
    assert [p[0] for p in pauser.calls] == ["S1"] and len(alerts.alerts) == 1
    assert await mon.run_once() == [] and len(alerts.alerts) == 1


async def test_intended_flip_is_left_alone(env, real_redis, namespace):
    store, make, alerts, _ = env
    trader = Trader(store, real_redis, namespace)
    mon = make()
    await trader.fill(Side.BUY, "1", "100")
    await mon.run_once()
    await trader.fill(Side.SELL, "1", "100", reduce_only=True, ms=3_000)
    await trader.fill(Side.SELL, "1", "100", ms=3_100)
    assert await mon.run_once() == []
    assert await mon.breakers() == {} and alerts.alerts == []


async def test_flip_is_not_judged_while_order_events_cannot_be_read(env, real_redis, namespace):
    store, make, alerts, _ = env
    trader = Trader(store, real_redis, namespace)
    mon = make()
    await trader.fill(Side.BUY, "1", "100")
    await mon.run_once()
    await trader.fill(Side.SELL, "1", "100", reduce_only=True, ms=3_000)
    await trader.fill(Side.SELL, "1", "100", ms=3_100)  # intended: its event explains the flip

    read_events = mon._stage_events

    async def events_down(trips):
        raise StoreUnavailable("Redis blip")

    mon._stage_events = events_down
    assert await mon.run_once() == []  # judged without the opening order, it would look unintended
    assert "order events" in mon.stats()["last_error"]
    mon._stage_events = read_events
    assert await mon.run_once() == []
    assert await mon.breakers() == {} and alerts.alerts == []


async def test_daily_loss_trips_strategy_then_global_pausing_every_running_strategy(env, real_redis, namespace):
    store, make, alerts, pauser = env
    trader = Trader(store, real_redis, namespace)
    cfg = RiskConfig(loop_interval_secs=3600, max_daily_loss_per_strategy=D(5), max_daily_loss_global=D(8))
    mon = make(cfg)
    await trader.fill(Side.BUY, "2", "1000")
    await trader.fill(Side.BUY, "2", "1000", sid="S2")
    assert await mon.run_once() == []  # today's baselines taken
    await trader.fill(Side.SELL, "1", "400", reduce_only=True, ms=3_000)  # 1 * 0.01 * -600 = -6
    assert [t.breaker for t in await mon.run_once()] == ["strategy:S1:loss"]
    await trader.fill(Side.SELL, "1", "700", sid="S2", reduce_only=True, ms=3_000)  # -3: total -9
    assert [t.breaker for t in await mon.run_once()] == ["global:loss"]
    assert await store.strategy_states() == {"S1": "PAUSED", "S2": "PAUSED"}
    assert set(await mon.breakers()) == {"strategy:S1:loss", "global:loss"}
    assert len(alerts.alerts) == 2


async def test_a_global_trip_pauses_every_running_strategy_despite_an_unreadable_state(env, real_redis, namespace):
    store, make, alerts, pauser = env
    await real_redis.hset(store.keys.strategy_states, "S3", "running")  # garbled: not a StrategyState
    trader = Trader(store, real_redis, namespace)
    mon = make(RiskConfig(loop_interval_secs=3600, max_daily_loss_global=D(5)))
    await trader.fill(Side.BUY, "2", "1000")
    assert await mon.run_once() == []  # today's baselines taken
    await trader.fill(Side.SELL, "1", "400", reduce_only=True, ms=3_000)  # -6
    assert [t.breaker for t in await mon.run_once()] == ["global:loss"]
    assert mon.stats()["pending_trips"] == 0, "the trip was applied"
    assert await store.strategy_states(strict=False) == {"S1": "PAUSED", "S2": "PAUSED", "S3": "running"}
    assert sorted(p[0] for p in pauser.calls) == ["S1", "S2"]
    [bad] = [a for a in alerts.alerts if "unreadable" in a[3]]
    assert "S3 'running'" in bad[3]


async def test_hung_strategy_actors_do_not_hold_the_loop(env, real_redis, namespace, monkeypatch):
    import asyncio

    from tradetree.actors import risk_monitor

    store, make, alerts, _ = env
    monkeypatch.setattr(risk_monitor, "_CALL_TIMEOUT_SECS", 0.2)

    class HungPauser:
        async def pause(self, strategy_id, reason):
            await asyncio.Event().wait()  # an actor that never answers

    trader = Trader(store, real_redis, namespace)
    mon = make(RiskConfig(loop_interval_secs=3600, max_daily_loss_global=D(5)))
    mon.pauser = HungPauser()
    await trader.fill(Side.BUY, "2", "1000")
    assert await mon.run_once() == []
    await trader.fill(Side.SELL, "1", "400", reduce_only=True, ms=3_000)  # -6

    started = asyncio.get_running_loop().time()
    trips = await asyncio.wait_for(mon.run_once(), 2)

    assert [t.breaker for t in trips] == ["global:loss"]
    assert asyncio.get_running_loop().time() - started < 1, "one bound for all the pauses, not one each"
    assert await store.strategy_states() == {"S1": "PAUSED", "S2": "PAUSED"}
    assert mon.stats()["pending_trips"] == 0


async def test_garbled_saved_streaks_are_reset_not_fatal(env, real_redis, namespace):
    store, make, alerts, _ = env
    await real_redis.set(store.keys.risk_streaks, b"{not json")
    mon = make()
    await _storm(real_redis, namespace, 5)
    assert [t.breaker for t in await mon.run_once()] == ["strategy:S1:rejections"]
    assert mon.stats()["last_error"] == ""
    assert any("streaks" in a[3] and "reset" in a[3] for a in alerts.alerts)


async def test_loss_baseline_survives_a_restart_and_resets_next_day(env, real_redis, namespace, clock):
    store, make, alerts, _ = env
    trader = Trader(store, real_redis, namespace)
    cfg = RiskConfig(loop_interval_secs=3600, max_daily_loss_per_strategy=D(5))
    first = make(cfg)
    await trader.fill(Side.BUY, "2", "1000")
    await first.run_once()
    await first.stop()
    await trader.fill(Side.SELL, "1", "400", reduce_only=True, ms=3_000)
    second = make(cfg)
    assert [t.breaker for t in await second.run_once()] == ["strategy:S1:loss"]
    await second.clear_breaker("strategy:S1:loss")
    clock.advance(86_400)  # a new UTC day starts from zero
    assert await second.run_once() == []


async def test_position_limit_trips(env, real_redis, namespace):
    store, make, alerts, _ = env
    trader = Trader(store, real_redis, namespace)
    mon = make(RiskConfig(loop_interval_secs=3600, max_position_qty=D(3)))
    await trader.fill(Side.BUY, "4", "100", sid="S2")
    assert [t.breaker for t in await mon.run_once()] == ["strategy:S2:position"]
    assert (await store.strategy_states())["S2"] == "PAUSED"


# -- health and failure ---------------------------------------------------------------------------

async def test_health_goes_stale_without_good_loops(env, clock):
    _, make, _, _ = env
    mon = make()
    report = await mon.check_health()
    assert [(p.name, p.detail) for p in report.failing()] == [("loop_fresh", "no loop completed yet")]
    await mon.run_once()
    assert (await mon.check_health()).healthy
    clock.advance(CFG.loop_stale_after_secs + 1)
    (failing,) = (await mon.check_health()).failing()
    assert failing.name == "loop_fresh"


async def test_redis_down_run_once_raises_nothing(namespace):
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    mon = RiskMonitor(CFG, namespace=namespace, alerts=RecordingAlerts(), client=client)
    try:
        assert await mon.run_once() == []
        assert "Redis unavailable" in mon.stats()["last_error"]
        report = await mon.check_health()
        assert {p.name for p in report.failing()} == {"store", "loop_fresh"}
    finally:
        await client.aclose()


async def test_start_after_stop_is_refused(env):
    _, make, _, _ = env
    mon = make()
    await mon.start()
    await mon.start()  # no-op while running
    await mon.stop()
    await mon.stop()
    with pytest.raises(RuntimeError, match="cannot be started again"):
        await mon.start()


# -- Ray -----------------------------------------------------------------------------------------

async def test_actor_pauses_a_strategy_actor_by_name(ray_session, redis_url, real_redis, namespace):
    ray = ray_session

    @ray.remote(num_cpus=0)
    class TinyStrategy:
        def __init__(self):
            self.reasons = []

        def pause(self, reason=""):
            self.reasons.append(reason)

        def paused(self):
            return self.reasons

    @ray.remote(num_cpus=0)
    class TinyAlerter:
        def __init__(self):
            self.alerts = []

        def alert(self, severity, key, title, text):
            self.alerts.append(key)

        def sent(self):
            return self.alerts

    sid = f"S-{uuid.uuid4().hex[:8]}"
    strategy = TinyStrategy.options(name=sid).remote()
    alerter = TinyAlerter.options(name=f"alerter-{sid}").remote()
    monitor = RiskMonitorActor.options(name=f"risk-{sid}").remote(
        CFG, redis_url=redis_url, namespace=namespace, alerter_name=f"alerter-{sid}")
    try:
        # The sink delivers at least once: an alert whose call timed out is sent again. On a busy
        # machine a new actor's first call can outlast that timeout, so wait for both to be up.
        assert await strategy.paused.remote() == [] and await alerter.sent.remote() == []
        await RedisStore(real_redis, namespace).set_strategy_state(sid, "RUNNING")
        await monitor.start.remote()  # its timer's first loop may see the storm before run_once does
        await _storm(real_redis, namespace, 5, sid=sid)
        await monitor.run_once.remote()
        (reason,) = await strategy.paused.remote()
        assert "5 consecutive venue rejections" in reason
        assert await alerter.sent.remote() == [f"strategy:{sid}:rejections"]
        assert (await RedisStore(real_redis, namespace).strategy_states())[sid] == "PAUSED"
        assert (await monitor.check_health.remote()).healthy
        # a dead strategy actor is tolerated
        ray.kill(strategy)
        assert await monitor.clear_breaker.remote(f"strategy:{sid}:rejections")
        await _storm(real_redis, namespace, 5, start=5, sid=sid)
        assert len(await monitor.run_once.remote()) == 1  # the timer sleeps for an hour now
        assert await alerter.sent.remote() == [f"strategy:{sid}:rejections"] * 2
        assert list(await ControlState(real_redis, namespace).breakers()) == [f"strategy:{sid}:rejections"]
        await monitor.stop.remote()
    finally:
        for actor in (monitor, alerter, strategy):
            ray.kill(actor)
