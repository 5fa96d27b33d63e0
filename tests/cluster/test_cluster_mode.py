"""Cluster mode on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``, one host, own process).

`tradetree up` starts the tree detached and exits; `tradetree status` from other processes sees
it. Then, with the tree trading: the worker node holding the venue's gateway is killed without
warning (raylet SIGKILL) and everything it held comes back on the surviving nodes, probes gating
it, with no SAFE MODE; then the node holding the root is killed, Ray re-creates the root, which
adopts the children it finds instead of starting duplicates. Redis positions equal the venue
throughout; `tradetree down` winds it all down.

Redis and the venue are external to the tree, as cluster mode requires: a password-protected
redis-server and a simulator owned by this test, on 127.0.0.1. No secret travels as a Ray
argument: each actor reads the Redis password and the venue keys from the files the config names,
on its node. Before that, `up` is refused when a node lacks a secret that only the operator's
shell has (venue keys, the Slack webhook), and a second `up` of the running tree is refused
without touching it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from tests.cluster.cluster_host import ClusterHost
from tests.redis_server import RedisServer
from tradetree.core import RISK_MONITOR_ID, ROOT_ID, RedisStore, gateway_id, reconciler_id

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")]
PASSWORD = "cluster-redis-pw-5e1f"

BIN = Path(sys.executable).parent
BOUND_SECS = 420.0  # a tree brought up, or back, on four raylets sharing two busy cores
GATEWAY = gateway_id("okx")


def wait_for(predicate, timeout_secs: float, what: str, poll_secs: float = 1.0):
    deadline = time.monotonic() + timeout_secs
    last = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # "not yet" while something restarts
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_secs:g}s waiting for {what}; last: {last!r}")
        time.sleep(poll_secs)


@pytest.fixture
def cluster(tmp_path):
    # Every worker may host the root (the config asks for tradetree_root); the head has no CPUs,
    # so placement keeps the tree's children off it and it can never be the node we lose.
    spec = {"head": {"num_cpus": 0},
            "workers": {w: {"num_cpus": 1, "resources": {"tradetree_root": 1}} for w in ("w1", "w2", "w3")}}
    host = ClusterHost(spec, tmp_path / "cluster.log", tmp_path)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def venue():
    from pydantic import SecretStr

    from tradetree.sim import SimulatorConfig, SimulatorThread

    sim = SimulatorThread(SimulatorConfig(port=0, seed=11, tick_interval_ms=100, time_scale=60.0,
                                          api_key="cluster-key", secret_key=SecretStr("cluster-secret"),
                                          passphrase=SecretStr("cluster-pass")))
    server = sim.start()
    try:
        yield server
    finally:
        sim.stop()


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def cli(*args: str, folder: Path, timeout: float = 180, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "REDIS_URL")}
    env.update(extra_env)
    return subprocess.run([str(BIN / "tradetree"), *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_up_survives_losing_the_gateways_node_and_the_roots_node(tmp_path, cluster, venue, own_redis):
    namespace = f"tt-cluster-{uuid.uuid4().hex[:10]}"
    (tmp_path / "redis-password").write_text(PASSWORD + "\n")
    (tmp_path / "okx.secrets.yaml").write_text("api_key: cluster-key\nsecret_key: cluster-secret\n"
                                               "passphrase: cluster-pass\n")
    strategies = "\n".join(textwrap.indent(textwrap.dedent(f"""\
        - class: MeanReversion
          version: v{i}
          venue: okx
          symbols: [{sym}]
          bar_interval_ms: 30000
          params: {{window_bars: 4, entry_z: 0.5, exit_z: 0.2, stop_z: 6.0, size: "1"}}"""), "  ")
        for i, sym in ((1, "BTC-USDT-SWAP"), (2, "ETH-USDT-SWAP")))
    (tmp_path / "engine.yaml").write_text(textwrap.dedent(f"""\
        name: {namespace}
        redis: {{url: "redis://127.0.0.1:{own_redis.port}/0", namespace: {namespace},
                 password_file: {tmp_path / 'redis-password'}}}
        venues:
          - name: okx
            rest_url: {venue.rest_url}
            ws_url: {venue.ws_url}
            secrets_file: {tmp_path / 'okx.secrets.yaml'}
            instruments: [BTC-USDT-SWAP, ETH-USDT-SWAP]
        supervision: {{venue_startup_timeout_secs: 300, child_startup_timeout_secs: 180,
                       root_resources: {{tradetree_root: 1}}}}
        strategies:
        """) + strategies + "\n")
    cfg = ["--config", "engine.yaml", "--address", cluster.address]

    def status() -> dict:
        out = cli("status", *cfg, "--json", folder=tmp_path, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def healthy(snap: dict) -> bool:
        actors = snap["actors"]
        bad = {k: v["state"] for k, v in actors.items() if v["state"] != "running"}
        states = store(lambda st: st.strategy_states())
        return not bad and len(actors) >= 10 and len(states) == 2 and all(v == "RUNNING" for v in states.values())

    def store(read):
        async def go():
            st = await RedisStore.connect(own_redis.url, namespace)
            try:
                return await read(st)
            finally:
                await st.close()

        return asyncio.run(go())

    def positions_match_venue() -> bool:
        truth = {k: Decimal(v) for k, v in venue.account_truth()["positions"].items() if Decimal(v) != 0}
        summed: Counter = Counter()
        for pos in store(lambda st: st.positions()):
            summed[pos.inst_id] += pos.qty
        return {k: v for k, v in summed.items() if v != 0} == truth

    def kill_flag():
        return store(lambda st: st.kill_flag())

    # Refused before anything starts: keys or a Slack webhook that only this shell has. The nodes
    # of this cluster were started without them; each actor reads its secrets on its own node.
    text = (tmp_path / "engine.yaml").read_text()
    (tmp_path / "engine-env.yaml").write_text(text.replace(f"secrets_file: {tmp_path / 'okx.secrets.yaml'}",
                                                           "api_key_env: TT_CLUSTER_OKX_KEY\n    "
                                                           "secret_key_env: TT_CLUSTER_OKX_SECRET\n    "
                                                           "passphrase_env: TT_CLUSTER_OKX_PASS"))
    refused = cli("up", "--config", "engine-env.yaml", "--address", cluster.address, folder=tmp_path,
                  TT_CLUSTER_OKX_KEY="cluster-key", TT_CLUSTER_OKX_SECRET="cluster-secret",
                  TT_CLUSTER_OKX_PASS="cluster-pass")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "these nodes cannot" in refused.stderr and "TT_CLUSTER_OKX_KEY" in refused.stderr
    assert "cluster-secret" not in refused.stdout + refused.stderr
    refused = cli("up", *cfg, folder=tmp_path, TRADETREE_SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T/B/x")
    assert refused.returncode == 2 and "Slack is set in this shell but not on node" in refused.stderr, \
        refused.stdout + refused.stderr
    assert store(lambda st: st.strategy_states()) == {}, "a refused up writes nothing"

    try:
        up = cli("up", *cfg, folder=tmp_path, timeout=BOUND_SECS + 60)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "runs on without this process" in up.stdout
        assert PASSWORD not in up.stdout + up.stderr
        # The driver has exited; another process sees the tree.
        snap = wait_for(lambda: (s := status()) and healthy(s) and s, BOUND_SECS, "the tree healthy after up")
        nodes = {k: v.get("node_id") for k, v in snap["actors"].items()}
        assert cluster.nodes["head"] not in nodes.values(), nodes
        assert nodes[GATEWAY] != nodes[reconciler_id("okx")], nodes  # the two fill paths apart

        # A second `up` of the running tree is refused, and the running tree is left as it was.
        again = cli("up", *cfg, folder=tmp_path, timeout=BOUND_SECS)
        assert again.returncode == 2 and "already runs" in again.stderr, again.stdout + again.stderr
        assert healthy(status()), "a refused second up must not pause or stop the running tree"

        # 1. Lose the gateway's node (never the root's: children are kept off it).
        lost = nodes[GATEWAY]
        assert lost != nodes[ROOT_ID]
        cluster.remove(lost)
        after = wait_for(lambda: (s := status()) and healthy(s)
                         and all(v.get("node_id") != lost for v in s["actors"].values()) and s,
                         BOUND_SECS, "the tree healthy again on the surviving nodes")
        assert kill_flag() is None, "a node loss must not be SAFE MODE"
        assert after["actors"][GATEWAY]["restarts"] >= 1
        wait_for(positions_match_venue, 120, "Redis positions equal to the venue after the node loss")

        # 2. Lose the root's node: Ray re-creates the root, which adopts the live children.
        root_node = after["actors"][ROOT_ID]["node_id"]
        venue_sup = "VenueSupervisor[okx]"
        cluster.remove(root_node)
        final = wait_for(lambda: (s := status()) and healthy(s) and s["actors"][ROOT_ID]["node_id"] != root_node
                         and s, BOUND_SECS, "a re-created root supervising a healthy tree")
        # The venue supervisor survived on its node and was adopted: it still counts the restart of
        # the first loss (a re-created one would start from zero).
        assert final["actors"][GATEWAY]["restarts"] >= 1, final["actors"][GATEWAY]
        assert final["actors"][venue_sup]["state"] == "running"
        assert kill_flag() is None
        assert final["actors"][RISK_MONITOR_ID]["state"] == "running"
        wait_for(positions_match_venue, 120, "Redis positions equal to the venue after the root's node loss")
    finally:
        down = cli("down", *cfg, folder=tmp_path, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    with venue.lock:
        assert venue.engine.open_orders() == [], "down cancels our open orders at the venue"
