"""A multi-node Ray cluster on one host (``ray.cluster_utils.Cluster``), driven over stdin.

Run as its own process so that the test process, which may already be attached to another Ray,
can start and kill nodes of this one. It prints one JSON line per command:

    {"address": ..., "nodes": {"head": id, "w1": id, ...}}   at start
    remove <name>     -> {"removed": name}      the node's raylet killed without warning (SIGKILL)
    add <name>        -> {"added": name, "id": node id}
    quit              -> the cluster is shut down
"""

from __future__ import annotations

import json
import sys

from ray.cluster_utils import Cluster


def main() -> None:
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
                nodes[name] = cluster.add_node(**spec.get("workers", {}).get(name, {}))
                print(json.dumps({"added": name, "id": nodes[name].node_id}), flush=True)
            elif cmd == "quit":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
