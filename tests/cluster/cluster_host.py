"""A multi-node Ray cluster on one host (``ray.cluster_utils.Cluster``), driven over stdin.

Run as its own process so that the test process, which may already be attached to another Ray,
can start and kill nodes of this one. It prints one JSON line per command:

    {"address": ..., "nodes": {"head": id, "w1": id, ...}}   at start
    remove <name>     -> {"removed": name}      the node's raylet killed without warning (SIGKILL)
    add <name>        -> {"added": name, "id": node id}   (args: workers[name], else default_worker)
    quit              -> the cluster is shut down
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


class ClusterHost:
    """The test's (or benchmark's) side: starts this script and sends it commands."""

    def __init__(self, spec: dict[str, Any], log_path: Path, cwd: Path) -> None:
        env = {**os.environ, "RAY_worker_niceness": "0"}  # the tree's actors are latency-critical workers
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log_path.open("w"), text=True, env=env, cwd=cwd)
        hello = self._read()
        self.address: str = hello["address"]
        self.nodes: dict[str, str] = hello["nodes"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the cluster host exited (see its log)")
        return json.loads(line)

    def _send(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def remove(self, node_id: str) -> str:
        name = next(n for n, nid in self.nodes.items() if nid == node_id)
        if name == "head":
            raise ValueError("the head holds the GCS: removing it ends the cluster")
        assert self._send(f"remove {name}") == {"removed": name}
        del self.nodes[name]
        return name

    def add(self, name: str) -> str:
        reply = self._send(f"add {name}")
        self.nodes[name] = reply["id"]
        return reply["id"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main() -> None:
    from ray.cluster_utils import Cluster

    spec = json.loads(sys.argv[1])  # {"head": {...node args}, "workers": {name: {...node args}}}
    cluster = Cluster(initialize_head=True, head_node_args=spec.get("head", {}))
    nodes = {"head": cluster.head_node}
    for name, args in spec.get("workers", {}).items():
        nodes[name] = cluster.add_node(**args)
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "nodes": {n: node.node_id for n, node in nodes.items()}}),
          flush=True)
    try:
        for line in sys.stdin:
            cmd, _, name = line.strip().partition(" ")
            if cmd == "remove":
                cluster.remove_node(nodes.pop(name), allow_graceful=False)
                print(json.dumps({"removed": name}), flush=True)
            elif cmd == "add":
                args = spec.get("workers", {}).get(name) or spec.get("default_worker", {})
                nodes[name] = cluster.add_node(**args)
                print(json.dumps({"added": name, "id": nodes[name].node_id}), flush=True)
            elif cmd == "quit":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
