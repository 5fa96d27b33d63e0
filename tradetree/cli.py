"""The ``tradetree`` command line.

    tradetree sim        the venue simulator alone (a paper exchange any OKX client can use)
    tradetree run        the whole tree from a config (paper trading by default)
    tradetree positions  positions held in Redis, read-only
    tradetree export     one strategy's fills from Redis as a run folder (paper or live, for compare)
    tradetree status|pause|resume|kill|reconcile|restart
    tradetree clear-kill|reset-breaker|release-venue|audit
                         operate a running tree (the control API; probe-gated, audited)
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class _StartupProgress:
    """Prints each child of the tree as it starts and as its probes pass, while ``start()`` blocks.

    Start-up takes a minute or more on a busy machine; a silent terminal for that long
    looks like a hang. It reads the tree from its supervisors (``tree_status``), once a second.
    """

    def __init__(self, console: Any, namespace: str, launched: Callable[[], bool] = lambda: True) -> None:
        self._console = console
        self._namespace = namespace
        # Only the tree this start launched: before that a tree found in the namespace is another
        # one's (a second `up`, about to be refused), and its children are not this start's progress.
        self._launched = launched
        self._seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tradetree-startup-progress", daemon=True)

    def __enter__(self) -> _StartupProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if exc[0] is None:
            self._poll()  # the children that passed their probes after the last tick

    def _run(self) -> None:
        self._t0 = time.monotonic()
        while not self._stop.wait(1.0):
            self._poll()

    _t0 = 0.0
    # What a child's state means to someone waiting for the tree (new/stopped: not started yet).
    _SAY = {"new": "waiting", "stopped": "waiting", "starting": "starting, waiting for its probes",
            "running": "started, probes pass"}

    def _poll(self) -> None:
        import ray

        from tradetree.core import ROOT_ID
        from tradetree.supervisor import tree_status

        if not ray.is_initialized() or not self._launched():
            return
        try:
            status = tree_status(self._namespace, root_id=ROOT_ID, timeout_secs=2.0)
        except Exception:  # progress is best effort; the start itself reports failures
            return
        for name, info in sorted(status.items()):
            state = str(info.get("state", "?")).lower()
            if state == "unreachable" and (name == ROOT_ID or name not in self._seen):
                continue  # not created yet
            if self._seen.get(name) != state:
                self._seen[name] = state
                detail = f"  ({info['detail']})" if info.get("detail") and state != "running" else ""
                self._console.print(f"  t+{time.monotonic() - self._t0:4.0f}s  {name}: "
                                    f"{self._SAY.get(state, state)}{detail}", markup=False, highlight=False)


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from tradetree.core import redact_url
    from tradetree.runner import EngineRuntime
    from tradetree.status import render_snapshot

    console = Console()
    config = _load_config(Path(args.config))

    def progress(line: str) -> None:
        console.print(f"  {line}", markup=False, highlight=False)

    runtime = EngineRuntime(config, include_dashboard=not args.no_dashboard, config_path=str(args.config),
                            on_progress=progress, ray_address=args.address)
    console.print(f"[bold]tradetree[/bold]: starting {config.name} from {args.config}")
    with _StartupProgress(console, runtime.ray_namespace, lambda: runtime.launched_root):
        runtime.start()
    console.print(f"[bold]tradetree[/bold]: {config.name} is up in {time.monotonic() - runtime.started_at:.0f}s")
    if runtime.sim_server is not None:
        console.print(f"simulator: REST {runtime.sim_server.rest_url}  WS {runtime.sim_server.ws_url}  "
                      f"admin {runtime.sim_server.admin_url}")
    console.print(f"Redis: {redact_url(runtime.redis_url or '')} namespace {config.redis.namespace!r}")
    if runtime.record is not None:
        for line in runtime.record.lines():
            console.print(line, markup=False, highlight=False)
    if config.metrics.enabled and (runtime.record is None or not runtime.record.metrics_url):
        console.print("metrics: not serving (see the MetricsExporter probe in status)")

    stop = {"flag": False}

    def _on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    watch = _Watch()

    def running() -> bool:
        return not stop["flag"] and (deadline is None or time.monotonic() < deadline)

    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                while running():
                    snap, banner = watch.read(runtime.snapshot)
                    view = render_snapshot(snap, elapsed_secs=time.monotonic() - runtime.started_at) if snap else None
                    parts = [Text(banner, style="bold red")] if banner else []
                    live.update(Group(*parts, *([view] if view is not None else [])))
                    time.sleep(1.0)
        else:  # a log file or a pipe: a line per change of reachability, a summary line now and then
            last_line, outage = 0.0, False
            while running():
                snap, banner = watch.read(runtime.snapshot)
                if banner and not outage:
                    console.print(banner, markup=False, highlight=False)
                elif outage and not banner:
                    console.print("Redis and the tree reachable again", markup=False, highlight=False)
                outage = bool(banner)
                if snap and not banner and time.monotonic() - last_line >= 30:
                    last_line = time.monotonic()
                    console.print(_summary_line(snap, time.monotonic() - runtime.started_at), markup=False,
                                  highlight=False)
                time.sleep(1.0)
    finally:
        console.print("shutting down: pausing strategies, canceling open orders, stopping the tree")
        runtime.shutdown()
    console.print("stopped; positions stay in Redis (the next `tradetree run` of a live config resumes from them)")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    """Cluster mode: start the tree detached on an existing cluster, then return (it outlives us)."""
    from rich.console import Console

    from tradetree.runner import EngineRuntime

    console = Console()
    config = _load_config(Path(args.config))

    def progress(line: str) -> None:
        console.print(f"  {line}", markup=False, highlight=False)

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("`tradetree up` needs a cluster: --address host:port (or $RAY_ADDRESS)")
    runtime = EngineRuntime(config, include_dashboard=False, config_path=str(args.config), on_progress=progress,
                            ray_address=address, detached=True, start_timeout_secs=args.timeout)
    console.print(f"[bold]tradetree[/bold]: starting {config.name} detached on {address}")
    with _StartupProgress(console, runtime.ray_namespace, lambda: runtime.launched_root):
        runtime.start()
    record = runtime.record
    console.print(f"[bold]tradetree[/bold]: {config.name} is up in {time.monotonic() - runtime.started_at:.0f}s "
                  "and runs on without this process")
    if record is not None:
        for line in record.lines():
            console.print(line, markup=False, highlight=False)
    console.print(f"stop it with: tradetree down --config {args.config} --address {address}")
    runtime.detach()
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    """Wind a detached tree down: strategies paused, our orders canceled, every actor stopped."""
    from tradetree.runner import EngineRuntime

    config = _load_config(Path(args.config))
    runtime = EngineRuntime.attach_running(config, ray_address=args.address or os.environ.get("RAY_ADDRESS"))
    print(f"tradetree: winding {config.name} down on {runtime.ray_address}: pausing strategies, canceling "
          "open orders, stopping the tree")
    runtime.shutdown()
    print("stopped; positions stay in Redis (the next `tradetree up` resumes from them)")
    return 0


def _summary_line(snap: dict[str, Any], elapsed_secs: float) -> str:
    states = ", ".join(f"{sid} {state}" for sid, state in sorted((snap.get("strategies") or {}).items()))
    applied = sum(c.get("applied", 0) for c in (snap.get("fills_by_layer") or {}).values())
    kill = f"  KILL FLAG: {snap['kill_flag']}" if snap.get("kill_flag") else ""
    return f"t+{elapsed_secs:,.0f}s  fills applied {applied}  {states}{kill}"


class _Watch:
    """The run loop's reads: an outage of Redis or of an actor is shown, never fatal.

    Watching is not owning: only Ctrl-C, ``--duration`` or ``down`` stop the
    tree; a Redis restart under a watching terminal must not take the tree down.
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self.last: dict[str, Any] | None = None
        self.failing_since: float | None = None
        self.error = ""

    def read(self, snapshot: Any) -> tuple[dict[str, Any] | None, str]:
        try:
            self.last = snapshot()
        except Exception as exc:  # whatever the outage, the watcher goes on
            if self.failing_since is None:
                self.failing_since = self._clock()
            self.error = f"{type(exc).__name__}: {exc}"
        else:
            self.failing_since = None
            return self.last, ""
        since = time.strftime("%H:%M:%S", time.localtime(self.failing_since))
        age = self._clock() - self.failing_since
        return self.last, (f"Redis or the tree unreachable since {since} ({age:.0f}s): {self.error[:160]} -- "
                           "the tree keeps running; showing the last view")


def _read_store(args: argparse.Namespace, read):
    """Run ``await read(store)`` on the Redis the options or the config name; return its result.

    The URL is ``--redis-url``, else the config's, else ``$REDIS_URL``, else the
    embedded Redis of the engine running from the config's state dir. Nothing
    is started to read: a Redis started here on a live engine's append-only
    file would write to it too.
    """
    from tradetree.control import redis_url_for
    from tradetree.core import RedisStore

    namespace = args.namespace
    url = args.redis_url
    if namespace is None or url is None:
        config = _load_config(Path(args.config))
        namespace = namespace or config.redis.namespace
        url = url or redis_url_for(config)
        if url is None:
            raise StoreUnavailable(f"no Redis to read: the config names none (redis.url, $REDIS_URL) and no engine "
                                   f"runs from {config.state_dir}/ (its embedded Redis lives while it runs). "
                                   "Pass --redis-url, or start the engine")

    async def _run():
        store = await RedisStore.connect(url, namespace)
        try:
            return await read(store)
        finally:
            await store.close()

    return asyncio.run(_run())


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
    from tradetree.core import read_book
    from tradetree.status import positions_json, positions_table, positions_text

    async def _read(store):
        rows, _, _ = await read_book(store)
        return [r.model_dump(mode="json") for r in rows]

    rows = _read_store(args, _read)
    if args.json:
        print(positions_json(rows))
    elif sys.stdout.isatty():
        from rich.console import Console

        Console().print(positions_table(rows))
    else:  # piped: as wide as the table needs, never cut at 80 columns
        print(positions_text(rows), end="")
    return 0


def _control(args: argparse.Namespace):
    """The control API of the tree the options name: ``--address`` (with ``--namespace`` or the
    config's name), else the engine record of ``--config``. Never "whichever Ray cluster is local"."""
    import ray

    from tradetree.control import attach, connect

    if args.address or (ray.is_initialized() and args.namespace):
        namespace = args.namespace or _load_config(Path(args.config)).name
        ctl = connect(address=args.address, namespace=namespace, timeout_secs=args.timeout)
    else:
        ctl, _ = attach(_load_config(Path(args.config)), timeout_secs=args.timeout)
    return ctl


def _print_json(value) -> None:
    import json

    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tradetree.status import render_snapshot, render_text

    status = _control(args).status()
    if args.json:
        _print_json(status)
        return 0
    snap = status.get("snapshot") or {}
    view = {**snap, "heartbeats": snap.get("heartbeats") or {}, "actors": status["actors"]}
    renderable = render_snapshot(view)
    if sys.stdout.isatty():
        Console().print(renderable)
    else:  # piped: as wide as the tables need, never cut at 80 columns
        print(render_text(renderable), end="")
    if status.get("risk_monitor_error"):
        print(f"risk monitor unreachable: {status['risk_monitor_error']}", file=sys.stderr)
    if status.get("breakers"):
        print(f"open breakers: {status['breakers']}")
    return 0


def _cmd_control(args: argparse.Namespace) -> int:
    from tradetree.control import ProbesFailing

    ctl = _control(args)
    try:
        if args.command == "pause":
            ctl.pause(args.strategy, args.reason)
            print(f"{args.strategy} paused")
        elif args.command == "resume":
            print(ctl.resume(args.strategy, args.reason))
        elif args.command == "kill":
            _print_json(ctl.kill(args.reason, args.strategy, wait=args.wait))
        elif args.command == "reconcile":
            _print_json(ctl.reconcile(args.venue))
        elif args.command == "restart":
            ctl.restart(args.child)
            print(f"{args.child} restarted and its probes pass")
        elif args.command == "clear-kill":
            done = ctl.clear_kill(args.reason)
            paused = ", ".join(done["paused"]) or "none"
            print(f"kill flag cleared (was {done['kill_flag_was']!r}); strategies the kill left KILLED are PAUSED: "
                  f"{paused}. Resume each with `tradetree resume <strategy>`.")
        elif args.command == "reset-breaker":
            was_open = ctl.reset_breaker(args.name, args.reason)
            print(f"breaker {args.name} {'closed' if was_open else 'was not open: nothing done'}; "
                  "strategies it paused stay PAUSED")
        elif args.command == "release-venue":
            lifted = ctl.release_venue(args.venue, args.reason)
            print(f"venue {args.venue}: pauses lifted: {', '.join(lifted)}" if lifted
                  else f"venue {args.venue} was not paused: nothing done")
        elif args.command == "audit":
            rows = ctl.operator_log(args.n)
            if args.json:
                _print_json(rows)
            for r in [] if args.json else rows:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(r.get("ts_ms", 0)) / 1000))
                print(f"{when}Z  {r.get('action')} {r.get('target')}  {r.get('outcome')}  by {r.get('who')}: "
                      f"{r.get('why')}  {r.get('detail', '')}")
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
    r.add_argument("--address", default=None,
                   help="run the tree on this existing Ray cluster (GCS host:port; default $RAY_ADDRESS, "
                        "else a local Ray started for the run)")
    r.set_defaults(func=_cmd_run)

    u = sub.add_parser("up", help="start the tree detached on an existing Ray cluster and return (cluster mode)")
    u.add_argument("--config", default=str(DEFAULT_CONFIG))
    u.add_argument("--address", default=None, help="the cluster's GCS host:port (default $RAY_ADDRESS)")
    u.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for the tree to come up (default: the tree's own start bound); past it "
                        "what started is paused and its orders canceled before it is torn down")
    u.set_defaults(func=_cmd_up)
    d = sub.add_parser("down", help="wind a detached tree down: strategies paused, orders canceled, actors stopped")
    d.add_argument("--config", default=str(DEFAULT_CONFIG))
    d.add_argument("--address", default=None, help="the cluster's GCS host:port (default: $RAY_ADDRESS, then the "
                                                    "engine record in the config's Redis)")
    d.set_defaults(func=_cmd_down)

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
        c.add_argument("--address", default=None,
                       help="Ray (GCS) address host:port, as `tradetree run` prints it (default: the running "
                            "engine of --config, found in its state dir or Redis)")
        c.add_argument("--timeout", type=float, default=30.0, help="seconds to attach before giving up")
        c.set_defaults(func=_cmd_control)
        return c

    st = control_parser("status", "the running tree: actors, strategies, positions, breakers")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)
    control_parser("pause", "pause a strategy").add_argument("strategy")
    sub.choices["pause"].add_argument("--reason", default="operator")
    control_parser("resume", "resume a paused strategy (refused until its probes pass and its venue is released)"
                   ).add_argument("strategy")
    sub.choices["resume"].add_argument("--reason", default="operator", help="why (written to the audit stream)")
    k = control_parser("kill", "kill switch: flag, cancel, wind down (all, or one strategy)")
    k.add_argument("reason")
    k.add_argument("--strategy", default=None)
    k.add_argument("--wait", action="store_true", help="return when flat (or stalled)")
    control_parser("reconcile", "reconcile one venue now").add_argument("venue")
    control_parser("restart", "restart one actor through its supervisor").add_argument("child")
    ck = control_parser("clear-kill", "clear the kill flag once the wind-down is over and probes pass")
    ck.add_argument("reason", help="why (written to the audit stream and alerted)")
    rb = control_parser("reset-breaker", "close a risk breaker (strategies it paused stay paused)")
    rb.add_argument("name", help="breaker name, as `status` lists it")
    rb.add_argument("reason", help="why (written to the audit stream and alerted)")
    rv = control_parser("release-venue", "lift a venue's pauses (fill gap, drift, operator) once its probes pass")
    rv.add_argument("venue")
    rv.add_argument("--reason", default="operator", help="why (written to the audit stream)")
    au = control_parser("audit", "the operator actions recorded in Redis: who, when, what, why")
    au.add_argument("-n", type=int, default=50)
    au.add_argument("--json", action="store_true")

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
