"""The exporter without Ray: the gatherer isolates failing parts, the endpoint serves over HTTP; and its
ray.util.metrics mirror, pure and inside a real Ray actor."""

from __future__ import annotations

import asyncio
import math
import socket
import time
import urllib.request
from decimal import Decimal as D

import pytest

from tests.core.test_snapshot import ETH
from tests.core.test_store import SWAP, make_fill, make_order
from tests.test_metrics import COMPONENTS, _snapshot, parse, value
from tradetree.actors.metrics_exporter import (
    RAY_SERIES,
    MetricsExporter,
    RayMetricsMirror,
    SnapshotGatherer,
    key_series,
)
from tradetree.core import ControlState, Mark, MarkBook, RedisStore, Side
from tradetree.core.clock import ManualClock
from tradetree.telemetry.config import MetricsConfig


class FakeReader:
    """Parts from a crafted snapshot; ``fail`` names parts that raise, ``hang`` parts that never answer."""

    def __init__(self, *, fail: set[str] = frozenset(), hang: set[str] = frozenset()) -> None:
        self.snap = _snapshot()
        self.fail, self.hang = set(fail), set(hang)

    async def _part(self, name: str, result):
        if name in self.hang:
            await asyncio.sleep(3600)
        if name in self.fail:
            raise ConnectionError(f"{name} is down")
        return result

    async def tree(self):
        return await self._part("tree", self.snap["tree"])

    async def redis_view(self):
        return await self._part("redis", self.snap["redis"])

    async def stats(self, actor_id):
        if actor_id not in self.snap["stats"]:
            raise ValueError(f"no actor {actor_id}")
        return await self._part(actor_id, self.snap["stats"][actor_id])


def _gatherer(reader: FakeReader, clock: ManualClock | None = None) -> SnapshotGatherer:
    return SnapshotGatherer(reader, COMPONENTS, timeout_secs=0.2, clock=clock or ManualClock())


async def test_a_failing_or_hung_part_is_left_out_and_counted_the_rest_is_kept():
    reader = FakeReader(fail={"VenueGateway[okx]"}, hang={"redis"})
    gatherer = _gatherer(reader)
    snap = await gatherer.gather()
    await gatherer.gather()
    snap2 = await gatherer.gather()
    assert snap["up"]["VenueGateway[okx]"] is False and snap["up"]["redis"] is False
    assert snap["up"]["tree"] is True and snap["up"]["FillReconciler[okx]"] is True
    assert "VenueGateway[okx]" not in snap["stats"] and snap["redis"] is None
    assert snap["up"]["MR_ETH"] is False  # configured, but it never answered (no such actor)
    assert snap2["scrape_errors"]["VenueGateway[okx]"] == 3 and snap2["scrape_errors"]["redis"] == 3
    assert snap2["scrape_errors"]["tree"] == 0
    reader.fail.clear()
    assert (await gatherer.gather())["up"]["VenueGateway[okx]"] is True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


async def test_serves_the_latest_snapshot_on_a_port_of_its_own():
    clock = ManualClock(start_ms=_snapshot()["ts_ms"])
    exporter = MetricsExporter(MetricsConfig(enabled=True, port=0, refresh_secs=0.05),
                               _gatherer(FakeReader(fail={"Alerter"}), clock), clock=clock)
    await exporter.start()
    try:
        host, port = exporter.address()
        assert host == "127.0.0.1" and port > 0
        assert exporter.url() == f"http://127.0.0.1:{port}/metrics"
        for _ in range(100):
            if exporter.snapshot is not None:
                break
            await asyncio.sleep(0.02)
        text = await asyncio.to_thread(_get, exporter.url())
        s = parse(text)
        assert value(s, "tradetree_fills_applied_total", venue="okx", layer="ws") == 5
        assert value(s, "tradetree_up", component="Alerter") == 0
        assert value(s, "tradetree_scrape_errors_total", component="Alerter") >= 1
        report = exporter.check_health()
        assert report.healthy, report
    finally:
        await exporter.stop()
    assert exporter.address() is None
    assert not exporter.check_health().live  # the refresh loop is gone


async def test_a_busy_port_fails_only_the_readiness_probe_and_is_retried():
    port = _free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    exporter = MetricsExporter(MetricsConfig(enabled=True, port=port, refresh_secs=0.05),
                               _gatherer(FakeReader()))
    try:
        await exporter.start()  # does not raise: metrics never stop the engine
        report = exporter.check_health()
        http = {p.name: p for p in report.probes}["http"]
        assert report.live and not http.ok and not http.liveness
        assert f"127.0.0.1:{port}" in http.detail
        blocker.close()
        for _ in range(200):
            if exporter.address() is not None:
                break
            await asyncio.sleep(0.02)
        assert exporter.address() == ("127.0.0.1", port)
        assert exporter.check_health().healthy
    finally:
        blocker.close()
        await exporter.stop()


def test_metrics_are_off_unless_enabled_and_checked():
    config = MetricsConfig()
    assert (config.enabled, config.host, config.port) == (False, "127.0.0.1", 9464)
    with pytest.raises(ValueError):
        MetricsConfig(port=70000)
    with pytest.raises(ValueError):
        MetricsConfig(refresh_secs=0)


# -- the ray.util.metrics mirror ---------------------------------------------------------------


def test_key_series_of_a_snapshot():
    snap = _snapshot()
    snap["redis"]["kill_flag"] = "manual stop"
    snap["redis"]["strategy_pnl"]["MR_ETH"]["total_pnl"] = None
    series = key_series(snap)
    assert series[("tradetree_kill_flag", ())] == 1
    assert series[("tradetree_strategies_running", ())] == 1  # MR_BTC RUNNING, MR_ETH PAUSED
    assert series[("tradetree_strategy_unrealized_pnl", (("strategy", "MR_BTC"),))] == -0.015
    assert series[("tradetree_strategy_total_pnl", (("strategy", "MR_BTC"),))] == 11.485
    assert math.isnan(series[("tradetree_strategy_total_pnl", (("strategy", "MR_ETH"),))])  # unknown is not 0
    assert series[("tradetree_fills_applied", (("layer", "ws"), ("venue", "okx")))] == 5
    assert series[("tradetree_actor_restarts", (("child", "VenueGateway[okx]"),))] == 2
    assert ("tradetree_actor_restarts", (("child", "RootSupervisor"),)) not in series  # the root has no parent
    assert series[("tradetree_risk_breakers_open", ())] == 1
    assert {name for name, _ in series} == set(RAY_SERIES)
    snap["redis"] = None  # Redis unread: none of its series, rather than stale or zero ones
    assert {name for name, _ in key_series(snap)} == {"tradetree_actor_restarts"}
    assert key_series(None) == {}


def test_the_mirror_is_a_no_op_outside_ray_and_a_failure_never_reaches_the_refresh(monkeypatch, caplog):
    import ray

    mirror = RayMetricsMirror()

    def broken(name):
        raise RuntimeError("metrics agent gone")

    monkeypatch.setattr(mirror, "_gauge", broken)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    mirror.update(_snapshot())
    assert mirror.failures == 0 and mirror.last_recorded() == []
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    with caplog.at_level("WARNING", logger="tradetree.actors.metrics_exporter"):
        mirror.update(_snapshot())
        mirror.update(_snapshot())
    assert mirror.failures == 2
    assert [r.getMessage() for r in caplog.records].count(
        "metrics: ray.util.metrics mirror failed (logged once): RuntimeError: metrics agent gone") == 1


async def test_an_exporter_whose_mirror_fails_still_refreshes(monkeypatch):
    import ray

    mirror = RayMetricsMirror()
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(mirror, "_gauge", lambda name: (_ for _ in ()).throw(RuntimeError("down")))
    exporter = MetricsExporter(MetricsConfig(enabled=True, port=0), _gatherer(FakeReader()), mirror=mirror)
    snap = await exporter.refresh_now()
    assert snap["redis"]["kill_flag"] is None and exporter.snapshot is snap and mirror.failures == 1


@pytest.mark.integration
async def test_the_exporter_actor_sets_ray_gauges_from_redis(ray_session, redis_url, real_redis, namespace):
    """The real actor in the shared Ray: gauges are set in its worker from what Redis holds."""
    ray = ray_session
    from tradetree.actors.metrics_exporter import MetricsExporterActor

    store = RedisStore(real_redis, namespace)
    now = int(time.time() * 1000)
    await store.set_strategy_state("MR_BTC", "RUNNING")
    await store.set_strategy_state("MR_ETH", "RUNNING")
    await store.set_kill_flag("operator test", now)
    await ControlState(real_redis, namespace).set_breaker("strategy:MR_BTC:rejections", "test", now)
    await store.record_order(make_order("o1", strategy_id="MR_BTC", inst=SWAP, size="2"))
    await store.apply_fill(make_fill("t1", Side.BUY, "2", "100", now, "o1", SWAP), SWAP)
    await store.record_order(make_order("o2", strategy_id="MR_ETH", inst=ETH, size="1"))
    await store.apply_fill(make_fill("t2", Side.BUY, "1", "2000", now, "o2", ETH), ETH)  # no ETH mark
    await MarkBook(real_redis, namespace).write("okx", {SWAP.inst_id: Mark(price=D("110"), ts_ms=now,
                                                                            recv_ms=now)})
    actor_cls = ray.remote(num_cpus=0)(MetricsExporterActor)
    exporter = actor_cls.options(name=f"metrics-{namespace}").remote(
        MetricsConfig(enabled=True, port=0, call_timeout_secs=5), redis_url=redis_url, namespace=namespace,
        ray_namespace=ray.get_runtime_context().namespace,
        components={"gateways": {"okx": "VenueGateway[okx]"}, "strategies": {"MR_BTC": "okx"}},
        instruments={"okx": [SWAP.inst_id]}, root_id=f"no-root-{namespace}")
    try:
        await exporter.refresh_now.remote()
        recorded = {(r["name"], tuple(sorted(r["tags"].items()))): r["value"]
                    for r in await exporter.ray_metrics.remote()}
        assert recorded[("tradetree_kill_flag", ())] == 1
        assert recorded[("tradetree_strategies_running", ())] == 2
        # (110 - 100) * 2 * 0.01 = 0.2
        assert recorded[("tradetree_strategy_unrealized_pnl", (("strategy", "MR_BTC"),))] == pytest.approx(0.2)
        assert math.isnan(recorded[("tradetree_strategy_unrealized_pnl", (("strategy", "MR_ETH"),))])
        assert recorded[("tradetree_fills_applied", (("layer", "ws"), ("venue", "okx")))] == 2
        assert recorded[("tradetree_risk_breakers_open", ())] == 1
    finally:
        await exporter.stop.remote()
        ray.kill(exporter)
