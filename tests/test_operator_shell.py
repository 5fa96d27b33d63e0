"""The operator's shell, as an operator uses it: `tradetree run` in one process, the CLI in others.

Everything runs as subprocesses of the installed ``tradetree`` command, each with its own Ray
driver, against the Ray cluster `tradetree run` starts itself (token authentication on, as
Ray 2.60 sets it for a new cluster). A second Ray cluster is started on the host after the
tree's, so Ray's "auto" would attach to the wrong one. The engine's Redis is a redis-server
this test owns, so it can be killed with SIGKILL and restarted on the same append-only file
under the running engine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")]

BIN = Path(sys.executable).parent
START_BOUND_SECS = 420.0  # a whole tree on a busy 2-core machine, with a second Ray cluster beside it


PASSWORD = "s3cret-Pa55-for-the-shell-test"


def wait_for(predicate, timeout_secs: float, what: str, poll_secs: float = 0.5):
    deadline = time.monotonic() + timeout_secs
    while True:
        try:
            value = predicate()
        except Exception:  # "not yet" while something restarts
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_secs:g}s waiting for {what}")
        time.sleep(poll_secs)


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "REDIS_URL")}
    return subprocess.run([str(BIN / "tradetree"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def engine_dir(tmp_path):
    """A folder with a paper config of its own ports and state dir, and its own Redis."""
    own = RedisServer(tmp_path / "redis-data", password=PASSWORD)
    own.start()
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    for name, sym, size in (("s_btc.yaml", "BTC-USDT-SWAP", "1"), ("s_eth.yaml", "ETH-USDT-SWAP", "3")):
        (strategies / name).write_text(textwrap.dedent(f"""\
            class: MeanReversion
            version: v1
            venue: okx
            symbols: [{sym}]
            bar_interval_ms: 30000
            params: {{window_bars: 4, entry_z: 0.5, exit_z: 0.2, stop_z: 6.0, size: "{size}"}}
            """))
    namespace = f"tt-shell-{os.getpid()}-{int(time.time())}"
    (tmp_path / "engine.yaml").write_text(textwrap.dedent(f"""\
        name: {namespace}
        redis: {{url: "{own.url}", namespace: {namespace}}}
        venues: [{{name: okx, instruments: [BTC-USDT-SWAP, ETH-USDT-SWAP]}}]
        strategy_files: [strategies/s_btc.yaml, strategies/s_eth.yaml]
        simulator: {{seed: 5, tick_interval_ms: 100, time_scale: 60.0}}
        metrics: {{enabled: true, port: 0}}
        state_dir: state
        supervision: {{venue_startup_timeout_secs: 300, child_startup_timeout_secs: 180}}
        """))
    try:
        yield tmp_path, own, namespace
    finally:
        own.stop()


@pytest.fixture
def decoy_cluster(tmp_path):
    """Another Ray cluster on the host, started after the tree's: Ray's "auto" would pick it."""
    proc: subprocess.Popen[str] | None = None

    def start() -> None:
        nonlocal proc
        script = ("import ray, time; ray.init(namespace='decoy', include_dashboard=False, num_cpus=1); "
                  "print('UP', flush=True); time.sleep(3600)")
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, cwd=tmp_path)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "UP"

    yield start
    if proc is not None:
        proc.terminate()
        proc.wait(60)


def test_an_operator_attaches_from_another_shell_and_the_run_rides_out_a_redis_kill(engine_dir, decoy_cluster):
    folder, own, namespace = engine_dir
    log = (folder / "run.log").open("w")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "REDIS_URL")}
    run = subprocess.Popen([str(BIN / "tradetree"), "run", "--config", "engine.yaml", "--no-dashboard"],
                           cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        record_file = folder / "state" / "engine.json"
        wait_for(record_file.exists, START_BOUND_SECS, "the engine to record how to reach it")
        record = json.loads(record_file.read_text())
        assert record["ray_auth_mode"] == "token" and record["ray_namespace"] == namespace
        assert "embedded_redis_url" not in record or record["embedded_redis_url"] is None, \
            "a configured Redis URL is never recorded"
        printed = wait_for(lambda: (t := (folder / "run.log").read_text()) and "attach:" in t and t, 60,
                           "the run to print how to attach")
        assert record["ray_address"] in printed and "attach: tradetree status --config" in printed
        assert "VenueGateway[okx]: started, probes pass" in printed, "start-up progress, child by child"

        decoy_cluster()

        # From another shell: --config finds the tree (not the decoy), token auth handled, table wide.
        def strategies_running():
            out = cli("status", "--config", "engine.yaml", "--json", cwd=folder)
            assert out.returncode == 0, out.stderr
            status = json.loads(out.stdout)
            return set(status["snapshot"]["strategies"].values()) == {"RUNNING"} and status
        status = wait_for(strategies_running, 240, "both strategies RUNNING, seen from the CLI")
        assert "RootSupervisor" in status["actors"]
        assert PASSWORD not in record_file.read_text()
        out = cli("status", "--config", "engine.yaml", cwd=folder)
        assert out.returncode == 0 and "MetricsExporter" in out.stdout and "unrealized P&L" in out.stdout
        assert PASSWORD not in out.stdout + out.stderr
        assert max(len(line) for line in out.stdout.splitlines()) > 80, "piped status is not cut at 80 columns"
        out = cli("status", "--address", record["ray_address"], "--namespace", namespace, "--json", cwd=folder)
        assert out.returncode == 0 and "RootSupervisor" in json.loads(out.stdout)["actors"], out.stderr

        # Nothing answers: a clear error within the timeout, not Ray's minutes of retries.
        t0 = time.monotonic()
        out = cli("status", "--address", f"127.0.0.1:{free_port()}", "--namespace", namespace,
                  "--timeout", "10", cwd=folder)
        assert out.returncode == 1 and "nothing answers at Ray address" in out.stderr
        assert time.monotonic() - t0 < 60

        # A second engine on the same state dir is refused before it starts anything.
        out = cli("run", "--config", "engine.yaml", "--no-dashboard", "--duration", "5", cwd=folder)
        assert out.returncode == 2 and "already runs from state dir" in out.stderr and "state_dir" in out.stderr

        client = redis.Redis.from_url(own.url)
        wait_for(lambda: int(client.xlen(f"{namespace}:audit")) >= 2, 240, "some fills")
        client.close()

        # Redis dies under the running engine and comes back on its AOF: the watcher rides it out.
        own.kill()
        wait_for(lambda: "unreachable since" in (folder / "run.log").read_text(), 60,
                 "the run loop to show the outage")
        time.sleep(3)
        assert run.poll() is None, "the watching terminal must not take the tree down"
        own.start()
        client = redis.Redis.from_url(own.url)
        fills = int(client.xlen(f"{namespace}:audit"))
        wait_for(lambda: int(client.xlen(f"{namespace}:audit")) > fills, 300, "fills again after the restart")
        client.close()
        assert run.poll() is None

        # Read-only commands start nothing: positions reads the engine's Redis.
        out = cli("positions", "--config", "engine.yaml", "--json", cwd=folder)
        assert out.returncode == 0, out.stderr
        assert all("mark_price" in row and "unrealized_pnl" in row for row in json.loads(out.stdout))
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
        try:
            code = run.wait(180)
        except subprocess.TimeoutExpired:
            run.kill()
            code = run.wait(30)
        log.close()
    text = (folder / "run.log").read_text()
    assert code == 0, text[-3000:]
    assert PASSWORD not in text, "the Redis password is never printed"
    assert "No order was sent" not in text and "stopped; positions stay in Redis" in text
    assert not (folder / "state" / "engine.json").exists(), "the record goes with the engine"


def test_run_attaches_to_an_existing_cluster_named_by_ray_address(engine_dir, tmp_path):
    """The reported failure: with RAY_ADDRESS set, `tradetree run` died asking Ray for num_cpus.

    The engine's config carries the Redis password in its URL, which cannot reach actors on a
    cluster this process did not start: the cluster's nodes hold it as $REDIS_PASSWORD (the
    config's default password_env), where each actor reads it."""
    folder, _, namespace = engine_dir
    script = ("import ray, time; ray.init(namespace='other', include_dashboard=False, num_cpus=2, "
              "_system_config={'worker_niceness': 0}); "
              "print('GCS', ray.get_runtime_context().gcs_address, flush=True); time.sleep(3600)")
    cluster = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, cwd=tmp_path, env={**os.environ, "REDIS_PASSWORD": PASSWORD})
    try:
        assert cluster.stdout is not None
        gcs = cluster.stdout.readline().split()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "REDIS_URL")}
        env["RAY_ADDRESS"] = gcs
        out = subprocess.run([str(BIN / "tradetree"), "run", "--config", "engine.yaml", "--no-dashboard",
                              "--duration", "5"], cwd=folder, env=env, capture_output=True, text=True,
                             timeout=START_BOUND_SECS + 120)
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
        assert f"Ray: {gcs}" in out.stdout and "VenueGateway[okx]: started, probes pass" in out.stdout
        assert "stopped; positions stay in Redis" in out.stdout
        assert cluster.poll() is None, "the run stops its tree, not the cluster it attached to"
    finally:
        cluster.terminate()
        cluster.wait(60)
