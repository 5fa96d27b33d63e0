"""The tree's actors run at a normal priority, and a cluster that nices them is found and named.

Ray nices its workers to 15 unless told otherwise; every actor of the tree is such
a worker, so beside any normal-priority load the gateway and the reconciler would
get a few percent of a core. `tradetree run` starts Ray with niceness 0 (the engine
death scenario checks the processes of a real `tradetree run`); attached to a
cluster it did not start, it asks every node and warns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tradetree.runner import TREE_RAY_SYSTEM_CONFIG, niced_nodes, worker_niceness_by_node

pytestmark = pytest.mark.integration


def test_niced_nodes_names_only_those_below_normal_priority():
    assert niced_nodes({"a": 0, "b": 15, "c": None, "d": 1}) == {"b": 15, "d": 1}
    assert niced_nodes({}) == {}


def test_the_suite_runs_actors_as_the_engine_does(ray_session):
    niceness = worker_niceness_by_node(120.0)
    assert niceness and set(niceness.values()) == {TREE_RAY_SYSTEM_CONFIG["worker_niceness"]}, niceness


def test_a_cluster_started_with_rays_defaults_is_found_niced():
    # A separate local cluster with Ray's own default, as an operator's plain `ray start` gives.
    script = (
        "import json, ray\n"
        "from tradetree.runner import worker_niceness_by_node\n"
        "ray.init(address='local', include_dashboard=False, num_cpus=1, log_to_driver=False,"
        " configure_logging=False)\n"
        "print('NICENESS', json.dumps(worker_niceness_by_node(120.0)))\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("NICENESS "))
    niceness = json.loads(line.split(" ", 1)[1])
    assert len(niceness) == 1 and list(niced_nodes(niceness).values()) == [15], niceness
