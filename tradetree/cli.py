"""The ``tradetree`` command line.

    tradetree sim        the venue simulator alone (a paper exchange any OKX client can use)
    tradetree run        the whole tree from a config (paper trading by default)
    tradetree positions  positions held in Redis, read-only
    tradetree export     one strategy's fills from Redis as a run folder (paper or live, for compare)
    tradetree status|pause|resume|kill|reconcile|restart
                         operate a running tree (the control API)
    tradetree ml ...     train, evaluate and list models
    tradetree backtest|sweep|compare
                         backtest a strategy config, sweep its parameters, compare two runs

Exit codes: 0 ok, 2 bad config or arguments, 3 Redis unavailable, 4 refused (a probe
is failing), 1 other errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from tradetree.core import ConfigError, StoreUnavailable, TradetreeError

__all__ = ["main", "build_parser"]

DEFAULT_CONFIG = Path("configs/paper.yaml")


def _cmd_sim(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from tradetree.sim import SimulatorConfig, serve_forever

    overrides = {"host": args.host, "port": args.port, "seed": args.seed}
    if args.data:
        overrides["data_path"] = Path(args.data)
    if args.api_key:
        overrides["api_key"] = args.api_key
    if args.secret:
        overrides["secret_key"] = SecretStr(args.secret)
    if args.passphrase:
        overrides["passphrase"] = SecretStr(args.passphrase)
    if args.time_scale:
        overrides["time_scale"] = args.time_scale
    config = SimulatorConfig(**overrides)
    try:
        asyncio.run(serve_forever(config))
    except KeyboardInterrupt:
        pass
    return 0


def _load_config(path: Path):
    from tradetree.config import load_engine_config

    return load_engine_config(path)


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from tradetree.runner import EngineRuntime
    from tradetree.status import render_snapshot

    console = Console()
    config = _load_config(Path(args.config))
    runtime = EngineRuntime(config, include_dashboard=not args.no_dashboard)
    console.print(f"[bold]tradetree[/bold]: starting {config.name} from {args.config}")
    runtime.start()
    if runtime.sim_server is not None:
        console.print(f"simulator: REST {runtime.sim_server.rest_url}  WS {runtime.sim_server.ws_url}  "
                      f"admin {runtime.sim_server.admin_url}")
    if not args.no_dashboard:
        console.print(f"Ray dashboard: http://127.0.0.1:{config.dashboard_port}")
    console.print(f"Redis: {runtime.redis_url} namespace {config.redis.namespace!r}")
    if config.metrics.enabled:
        console.print(f"metrics: {runtime.metrics_url() or 'not serving (see the MetricsExporter probe in status)'}")

    stop = {"flag": False}

    def _on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    snap = None
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not stop["flag"] and (deadline is None or time.monotonic() < deadline):
                snap = runtime.snapshot()
                live.update(render_snapshot(snap, elapsed_secs=time.monotonic() - runtime.started_at))
                time.sleep(1.0)
    finally:
        console.print("shutting down: pausing strategies, canceling open orders, stopping the tree")
        runtime.shutdown()
    console.print("stopped; positions stay in Redis (`tradetree positions`)")
    return 0


def _read_store(args: argparse.Namespace, read):
    """Run ``await read(store)`` on the Redis the options or the config name; return its result.

    The URL is ``--redis-url``, else the config's, else ``$REDIS_URL``, else the
    embedded Redis of ``tradetree run`` (its AOF under .tradetree/redis), started
    for the read and stopped after it.
    """
    from tradetree.core import EmbeddedRedis, RedisStore, resolve_redis_url
    from tradetree.runner import DEFAULT_STATE_DIR

    namespace = args.namespace
    url = args.redis_url
    if namespace is None or url is None:
        config = _load_config(Path(args.config))
        namespace = namespace or config.redis.namespace
        url = url or resolve_redis_url(config.redis.url)
    embedded = None
    if url is None:
        embedded = EmbeddedRedis(data_dir=DEFAULT_STATE_DIR / "redis", prefer="redis-server")
        embedded.start()
        url = embedded.url

    async def _run():
        store = await RedisStore.connect(url, namespace)
        try:
            return await read(store)
        finally:
            await store.close()

    try:
        return asyncio.run(_run())
    finally:
        if embedded is not None:
            embedded.stop()


def _time_ms(text: str | None, option: str) -> int | None:
    """``--since``/``--until``: epoch milliseconds or an ISO 8601 time (UTC when it has no zone)."""
    import datetime as dt

    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected epoch ms or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _cmd_export(args: argparse.Namespace) -> int:
    import time

    from tradetree.sim.backtest import DEFAULT_RUNS_DIR, export_run_from_redis

    since, until = _time_ms(args.since, "--since"), _time_ms(args.until, "--until")
    out = args.out or DEFAULT_RUNS_DIR / f"{args.strategy}-paper-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"

    async def _export(store):
        return await export_run_from_redis(store, args.strategy, out, venue=args.venue, since_ms=since,
                                           until_ms=until)

    folder = _read_store(args, _export)
    print(f"run folder: {folder}  (compare with a backtest: tradetree compare <backtest folder> {folder})")
    return 0


def _cmd_positions(args: argparse.Namespace) -> int:
    from tradetree.status import positions_json, positions_table

    async def _read(store):
        return [p.model_dump(mode="json") for p in await store.positions()]

    rows = _read_store(args, _read)
    if args.json:
        print(positions_json(rows))
    else:
        from rich.console import Console

        # Piped output gets a fixed wide layout instead of truncated columns.
        Console(width=None if sys.stdout.isatty() else 160).print(positions_table(rows))
    return 0


def _control(args: argparse.Namespace):
    from tradetree.control import connect

    namespace = args.namespace
    if namespace is None:
        namespace = _load_config(Path(args.config)).name
    return connect(address=args.address, namespace=namespace)


def _print_json(value) -> None:
    import json

    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tradetree.status import render_snapshot

    status = _control(args).status()
    if args.json:
        _print_json(status)
        return 0
    snap = status.get("snapshot") or {}
    view = {
        "strategies": snap.get("strategies", {}),
        "positions": _control(args).positions(),
        "fills_by_layer": snap.get("fills_by_layer", {}),
        "kill_flag": snap.get("kill_flag"),
        "heartbeats": {},
        "actors": status["actors"],
    }
    Console().print(render_snapshot(view))
    if status.get("breakers"):
        Console().print("[red]open breakers:[/]", status["breakers"])
    return 0


def _cmd_control(args: argparse.Namespace) -> int:
    from tradetree.control import ProbesFailing

    ctl = _control(args)
    try:
        if args.command == "pause":
            ctl.pause(args.strategy, args.reason)
            print(f"{args.strategy} paused")
        elif args.command == "resume":
            ctl.resume(args.strategy)
            print(f"{args.strategy} resumed")
        elif args.command == "kill":
            _print_json(ctl.kill(args.reason, args.strategy, wait=args.wait))
        elif args.command == "reconcile":
            _print_json(ctl.reconcile(args.venue))
        elif args.command == "restart":
            ctl.restart(args.child)
            print(f"{args.child} restarted and its probes pass")
    except ProbesFailing as exc:
        print(f"tradetree: {exc}", file=sys.stderr)
        return 4
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradetree", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sim", help="run the OKX-compatible venue simulator alone")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8443)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--data", help="candle CSV to replay (timestamp_ms,open,high,low,close,volume)")
    s.add_argument("--api-key")
    s.add_argument("--secret")
    s.add_argument("--passphrase")
    s.add_argument("--time-scale", type=float, help="market time per wall time (default 1)")
    s.set_defaults(func=_cmd_sim)

    r = sub.add_parser("run", help="run the supervision tree (paper trading by default)")
    r.add_argument("--config", default=str(DEFAULT_CONFIG))
    r.add_argument("--duration", type=float, help="stop after this many seconds")
    r.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    r.set_defaults(func=_cmd_run)

    q = sub.add_parser("positions", help="positions held in Redis (read-only)")
    q.add_argument("--config", default=str(DEFAULT_CONFIG))
    q.add_argument("--redis-url", default=None, help="default: config, then $REDIS_URL, then embedded")
    q.add_argument("--namespace", default=None)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_positions)

    e = sub.add_parser("export", help="one strategy's fills from Redis as a run folder (for `compare`)")
    e.add_argument("strategy", help="strategy id, e.g. MeanReversion_v10_BTC")
    e.add_argument("--config", default=str(DEFAULT_CONFIG))
    e.add_argument("--redis-url", default=None, help="default: config, then $REDIS_URL, then embedded")
    e.add_argument("--namespace", default=None)
    e.add_argument("--venue", default=None, help="only this venue's fills")
    e.add_argument("--since", default=None, help="first fill time: epoch ms or ISO 8601 (UTC if no zone)")
    e.add_argument("--until", default=None, help="fills before this time: epoch ms or ISO 8601")
    e.add_argument("--out", type=Path, default=None, help="run folder (default .tradetree/runs/<strategy>-paper-<UTC>)")
    e.set_defaults(func=_cmd_export)

    def control_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        c.add_argument("--config", default=str(DEFAULT_CONFIG), help="to find the Ray namespace (its name)")
        c.add_argument("--namespace", default=None, help="Ray namespace of the tree (default: config name)")
        c.add_argument("--address", default=None, help="Ray address (default: the local cluster)")
        c.set_defaults(func=_cmd_control)
        return c

    st = control_parser("status", "the running tree: actors, strategies, positions, breakers")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)
    control_parser("pause", "pause a strategy").add_argument("strategy")
    sub.choices["pause"].add_argument("--reason", default="operator")
    control_parser("resume", "resume a strategy (refused until its probes pass)").add_argument("strategy")
    k = control_parser("kill", "kill switch: flag, cancel, wind down (all, or one strategy)")
    k.add_argument("reason")
    k.add_argument("--strategy", default=None)
    k.add_argument("--wait", action="store_true", help="return when flat (or stalled)")
    control_parser("reconcile", "reconcile one venue now").add_argument("venue")
    control_parser("restart", "restart one actor through its supervisor").add_argument("child")

    from tradetree.ml import register_commands as register_ml
    from tradetree.sim.backtest import register_commands as register_backtest

    register_ml(sub)
    register_backtest(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"tradetree: config error:\n{exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"tradetree: Redis unavailable: {exc}\nNo order was sent. Set REDIS_URL or "
              "the config's redis.url to a reachable server.", file=sys.stderr)
        return 3
    except TradetreeError as exc:
        print(f"tradetree: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
