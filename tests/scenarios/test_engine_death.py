"""Scenario 9: the whole engine is killed at once, the venue cancels our orders, the next start reconciles first.

The engine runs as ``tradetree run`` in a subprocess, with its own Ray cluster
(``ray.init`` in that driver), against a simulator this test runs in-process
and the test Redis. Its market maker rests quotes at the venue. The driver is
SIGKILLed: every process of its Ray cluster goes with it (checked), so nothing
re-arms the venue's dead-man switch and the simulator cancels the resting
orders when it runs out (one may fill first: the next start books that fill).
Redis still says those orders are live and the strategy RUNNING: the next
start holds the strategy PAUSED until the reconciler has polled the venue and
its probes are green (a fault on the drift check's REST path keeps them red
for a while, to see it wait), and only then releases it, onto a Redis that
matches the venue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.scenarios.harness import Tree
from tests.scenarios.tree_helpers import orders_of
from tradetree.config import load_engine_config
from tradetree.core.types import OrderState
from tradetree.sim.config import DEFAULT_API_KEY, DEFAULT_PASSPHRASE, DEFAULT_SECRET, SimulatorConfig
from tradetree.sim.server import SimulatorThread

pytestmark = pytest.mark.integration

TRADETREE = Path(sys.executable).with_name("tradetree")
DEAD_MAN_SECS = 10  # OKX's shortest cancel-all-after timeout
DRIFT_PATH = "/api/v5/account/positions"
MARKET_MAKER = {
    "class": "SingleVenueMarketMaking", "version": "v1", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
    "bar_interval_ms": 30000,
    "params": {"fair_price": "mid", "half_spread_bps": 50.0, "skew_bps": 5.0, "requote_bps": 80.0,
               "quote_size": "1", "max_inventory": "3", "tick_size": "0.1", "ack_timeout_ms": 5000},
}


def _engine_yaml(path: Path, *, sim, redis_url: str, namespace: str) -> Path:
    raw = {
        "name": f"tt-death-{uuid.uuid4().hex[:6]}",
        "redis": {"url": redis_url, "namespace": namespace},
        "venues": [{"name": "okx", "rest_url": sim.rest_url, "ws_url": sim.ws_url,
                    "instruments": ["BTC-USDT-SWAP"]}],
        "strategies": [MARKET_MAKER],
        # Quotes that filled while no engine ran reach Redis by poll, never by WS, so fill health
        # pauses the venue until they leave its WS-flow window (120 s by default): shortened here.
        "reconciler": {"poll_interval_secs": 0.5, "fill_health_interval_secs": 0.25,
                       "fill_gap_alert_secs": 1.5, "drift_interval_secs": 1.0, "ws_flow_window_secs": 10.0},
        "risk": {"max_verification_age_secs": 3.0, "max_market_data_age_secs": 3.0, "loop_interval_secs": 0.25},
        "heartbeat_interval_secs": 0.5,
        "dead_man_switch_secs": DEAD_MAN_SECS,
    }
    path.write_text(yaml.safe_dump(raw))
    return path


class Engine:
    """``tradetree run`` in a subprocess (its own session), output to a log file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(OKX_API_KEY=DEFAULT_API_KEY, OKX_SECRET_KEY=DEFAULT_SECRET, OKX_PASSPHRASE=DEFAULT_PASSPHRASE)
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [str(TRADETREE), "run", "--config", str(config_path), "--no-dashboard"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=config_path.parent, start_new_session=True,
        )

    def ray_processes(self) -> dict[int, str]:
        """The driver's descendants, pid -> name: its Ray cluster (GCS, raylet, every actor's worker)."""
        return _descendants(self.proc.pid)

    def log_tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean shutdown: pause, cancel, stop the tree
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(name, state, parent pid) from /proc, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2:].split()[:2]
    return name, state, int(ppid)


def _niceness(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[16])  # field 19 of proc(5)


def _descendants(root: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[2], []).append(int(entry.name))
            names[int(entry.name)] = st[0]
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = names[child]
            todo.append(child)
    return out


_RAY_AGENTS = ("ray::DashboardA", "ray::RuntimeEnv")  # /proc truncates names to 15 characters


def _all_gone(processes: dict[int, str], but: tuple[str, ...] = ()) -> bool:
    left = [p for p in _alive(processes) if not p.endswith(but)] if but else _alive(processes)
    assert not left, f"still running: {left}"
    return True


def _alive(processes: dict[int, str]) -> list[str]:
    """Those still running (a zombie waiting to be reaped runs nothing)."""
    return [f"{pid} {name}" for pid, name in processes.items()
            if (st := _stat(pid)) is not None and st[0] == name and st[1] != "Z"]


@pytest.fixture
def sim():
    # A separate venue the engine does not own: it outlives the engine, as OKX would.
    thread = SimulatorThread(SimulatorConfig(seed=5, tick_interval_ms=100, time_scale=60.0))
    server = thread.start()
    try:
        yield server
    finally:
        thread.stop()


def test_whole_engine_killed_then_restarted_reconciles_before_trading(sim, redis_url, namespace, tmp_path):
    config_path = _engine_yaml(tmp_path / "engine.yaml", sim=sim, redis_url=redis_url, namespace=namespace)
    config = load_engine_config(config_path)
    strategy = config.strategies[0].id
    view = Tree(SimpleNamespace(config=config, redis_url=redis_url, ray_namespace=config.name, sim_server=sim))

    first = Engine(config_path, tmp_path / "first.log")
    ray_procs: dict[int, str] = {}
    try:
        view.wait_for(lambda: first.proc.poll() is None and view.strategy_states().get(strategy) == "RUNNING",
                      120, f"the first engine running (log: {tmp_path / 'first.log'})")
        # Both quotes resting (wide quotes, rarely requoted: they rest most of the time).
        view.wait_for(lambda: sim.account_truth()["open_orders"] >= 2, 60, "two quotes resting at the venue")
        ray_procs.update(first.ray_processes())
        names = " ".join(ray_procs.values())
        assert "gcs_server" in names and "raylet" in names, names  # its own Ray cluster
        assert "ray::_VenueGate" in names and "ray::StrategyAc" in names, names  # the actors run there
        # At a normal priority, not Ray's default nice 15 (a few percent of a core beside any load).
        workers = {f"{pid} {name}": _niceness(pid) for pid, name in ray_procs.items() if name.startswith("ray::")}
        assert set(workers.values()) <= {0, None}, workers

        first.proc.send_signal(signal.SIGKILL)  # the driver, and with it the whole cluster
        first.proc.wait(timeout=10)
        # Everything that runs our code or could act for it dies with the driver: the GCS, the
        # raylet and every actor's worker. Ray's two agents outlive the raylet a while (they try
        # to report its death to the dead GCS first); they hold no actor, and are checked at the end.
        view.wait_for(lambda: _all_gone(ray_procs, but=_RAY_AGENTS), 30, "the engine's Ray cluster gone")

        with sim.lock:
            resting = {o.cl_ord_id for o in sim.engine.open_orders()}
        assert resting, "no order of ours left resting at the venue"
        # Redis still holds the dead engine's view: the quotes live, the strategy RUNNING.
        stale = orders_of(view, strategy)
        assert all(not stale[c].state.is_terminal for c in resting), {c: stale[c].state for c in resting}
        assert view.strategy_states()[strategy] == "RUNNING"

        # Nothing re-arms cancel-all-after now: the venue cancels our resting orders by itself.
        view.wait_for(lambda: sim.account_truth()["open_orders"] == 0, DEAD_MAN_SECS + 20,
                      "the venue's dead-man switch to cancel the resting orders")
        with sim.lock:
            at_venue = {c: sim.engine.get_order(cl_ord_id=c) for c in resting}
        # A quote may also have filled while no engine was alive: the next start must book that too.
        final = {c: ("canceled" if o.cancel_source == "cancel_all_after" else o.state) for c, o in at_venue.items()}
        assert set(final.values()) <= {"canceled", "filled"} and "canceled" in final.values(), at_venue
        expected_in_redis = {c: OrderState.CANCELED if f == "canceled" else OrderState.FILLED
                             for c, f in final.items()}
    finally:
        first.close()

    sim.faults.set_rest_errors(1.0, "5xx", paths=(DRIFT_PATH,))  # keeps the reconciler's drift probe red
    second = Engine(config_path, tmp_path / "second.log")
    try:
        verified_before = view.control_snapshot().verified_at_ms or 0
        # Held from the very start: never RUNNING before its venue's pipeline is green.
        view.wait_for(lambda: view.strategy_states()[strategy] == "PAUSED", 30, "the strategy held PAUSED")

        def reconciled() -> bool:
            assert view.strategy_states()[strategy] == "PAUSED", "released while the drift probe fails"
            now = orders_of(view, strategy)
            return ((view.control_snapshot().verified_at_ms or 0) > verified_before
                    and {c: now[c].state for c in resting} == expected_in_redis)

        view.wait_for(reconciled, 60, "startup reconciliation (the dead engine's quotes final in Redis)")
        # Several more clean poll cycles go by, and it stays held while the drift probe is red.
        verified = view.control_snapshot().verified_at_ms
        view.wait_for(lambda: reconciled() and view.control_snapshot().verified_at_ms >= verified + 2000, 30,
                      "more poll cycles with the strategy still held")
        hold = view.redis(lambda s, c: c.strategy_pause(strategy))
        assert hold is not None and hold["source"] == "supervisor", hold
        assert view.matches_venue()

        sim.faults.clear_all()
        view.wait_for(lambda: view.strategy_states()[strategy] == "RUNNING", 150,
                      f"the strategy released (log: {tmp_path / 'second.log'})")
        view.wait_for(view.matches_venue, 30, "Redis to match the venue")
    finally:
        second.close()
    assert second.proc.returncode == 0, second.log_tail()
    view.wait_for(lambda: _all_gone(ray_procs), 90, "every process of the killed engine's Ray cluster gone")
