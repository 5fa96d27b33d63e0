"""The exporter without Ray: the gatherer isolates failing parts, the endpoint serves over HTTP."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import pytest

from tests.test_metrics import COMPONENTS, _snapshot, parse, value
from tradetree.actors.metrics_exporter import MetricsExporter, SnapshotGatherer
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
