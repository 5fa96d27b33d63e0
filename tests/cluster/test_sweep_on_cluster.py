"""`tradetree sweep --address` on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``, own process).

The head has no CPUs, so every backtest must run on the two 1-CPU workers; the CLI runs as a
subprocess, as an operator runs it, and must report both nodes. A dead address must fail fast
with exit code 1 and a message, not a traceback after Ray's minutes of retries.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backtest.inputs import write_cli_inputs
from tests.cluster.cluster_host import ClusterHost

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
GRID = ["--grid", "window_bars=8,12,16,20", "--grid", "entry_z=1.0,1.5,2.0,2.5,3.0"]  # 20 sets, + 4 held-out


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    # One token for the cluster and the sweep: Ray 2.60 turns token auth on for a driver that finds
    # ~/.ray/auth_token, and a cluster started without it cannot reach such a driver's objects.
    # Set explicitly, the test does not depend on what an earlier Ray left in the home directory.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    host = ClusterHost({"head": {"num_cpus": 0}, "workers": {"w1": {"num_cpus": 1}, "w2": {"num_cpus": 1}}},
                       tmp_path / "cluster.log", tmp_path)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def files(tmp_path):
    return write_cli_inputs(tmp_path)


def sweep(*args: str, folder: Path, env: dict[str, str] | None = None,
          timeout: float = 180) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([str(BIN / "tradetree"), "sweep", *args, "--no-progress"], cwd=folder,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def test_sweep_runs_its_backtests_on_the_clusters_worker_nodes(tmp_path, cluster, files):
    strategy, data = files
    out = tmp_path / "sweep"
    run = sweep(str(strategy), "--data", str(data), *GRID, "--top", "4", "--warmup-bars", "20",
                "--address", cluster.address, "--out", str(out), folder=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ran 24 backtests on 2 nodes of the Ray cluster at {cluster.address}" in run.stdout, run.stdout
    text = (out / "sweep.md").read_text()
    assert "ran 24 backtests on 2 nodes" in text
    # The head has no CPUs: the per-node counts name the two workers and only them.
    counts = dict(re.findall(r"`([0-9a-f]{12})` (\d+)", text))
    assert set(counts) == {cluster.nodes[w][:12] for w in ("w1", "w2")}, (counts, cluster.nodes)
    assert sum(int(c) for c in counts.values()) == 24
    assert len((out / "sweep.csv").read_text().splitlines()) == 21
    # The sweep only disconnected: the cluster still takes drivers.
    again = sweep(str(strategy), "--data", str(data), "--grid", "window_bars=8,12", "--top", "1",
                  "--warmup-bars", "20", "--out", str(tmp_path / "again"), folder=tmp_path,
                  env={"RAY_ADDRESS": cluster.address})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ran 3 backtests on 2 nodes" in again.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_address_fails_fast_with_a_message(tmp_path, files):
    strategy, data = files
    address = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    # $RAY_ADDRESS, not --address: the environment that used to crash the sweep in ray.init(num_cpus=...).
    run = sweep(str(strategy), "--data", str(data), "--grid", "window_bars=8,12", "--out", str(tmp_path / "x"),
                folder=tmp_path, env={"RAY_ADDRESS": address}, timeout=60)
    assert time.monotonic() - t0 < 60
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"nothing answers at Ray address {address}" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "x").exists()

    both = sweep(str(strategy), "--data", str(data), "--grid", "window_bars=8,12", "--num-cpus", "2",
                 "--address", address, folder=tmp_path, timeout=60)
    assert both.returncode == 2 and "--num-cpus sizes a local Ray" in both.stderr, both.stderr
