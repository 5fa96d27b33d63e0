"""The paper venue: one matching engine behind OKX v5 REST + WS on 127.0.0.1.

:class:`SimulatorServer` runs on an asyncio loop; :class:`SimulatorThread` runs
one in a daemon thread for synchronous callers (tests, the engine's embedded
default). ``serve_forever`` backs the ``tradetree sim`` CLI.

**Venue clock.** Market time starts at the wall clock and advances by the wall
time elapsed times ``time_scale`` at every market step (every
``tick_interval_ms`` of wall time); with ``stepped_clock`` it advances by
exactly ``tick_interval_ms * time_scale`` per step, so a replay meets its
points on a fixed grid whatever the step's wall-clock jitter. A replay's first
candle opens on a multiple of ``replay_align_ms`` (default: the candle
interval) at or before the wall clock, so epoch-aligned bars hold whole
candles. With ``hold_replay`` the stepped clock stands at the replay's first
point until :meth:`SimulatorServer.release_replay` (or ``POST
/admin/replay/release``): whoever compares the run with a backtest releases it
once the tree trades, so no candle passes while the tree is still starting.
While held the first point's tickers are re-pushed, unchanged, every step, so
the feed does not look dead to a client's freshness checks. A release for
``steps`` steps holds again after them: a caller can run the replay in
lockstep with the tree it feeds. Every timestamp the venue emits (orders,
fills, tickers, candles) is on this clock, so with ``time_scale`` > 1 they run
ahead of the wall clock. Signature checks and ``public/time`` use the wall
clock, because that is what clients sign with.

**Admin HTTP** (JSON, no auth, loopback only): ``GET /admin/faults``,
``POST /admin/faults`` (partial update), ``POST /admin/faults/clear``,
``POST /admin/ws/cut``, ``GET /admin/account``, ``GET /admin/health``,
``POST /admin/replay/release``.

**Threads.** The engine is guarded by ``lock`` (an RLock); everything in the
server takes it, and :meth:`SimulatorServer.account_truth` takes it too, so it
is safe from any thread. ``faults`` is thread-safe by itself. Calling
``engine`` methods directly from another thread while the server runs is not
safe unless you hold ``server.lock``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from tradetree.sim.config import DEFAULT_PASSPHRASE, DEFAULT_SECRET, SimulatorConfig
from tradetree.sim.faults import FaultInjector
from tradetree.sim.market_data import (
    CandleAggregator,
    CandleReplay,
    GeneratedMarket,
    MarketSource,
    MarketTick,
    PublicTrade,
    load_candle_source,
)
from tradetree.sim.matching import MatchingEngine, OrderEvent
from tradetree.sim.okx_rest import OkxRestApi
from tradetree.sim.okx_ws import OkxWsHub

__all__ = ["SimulatorServer", "SimulatorThread", "serve_forever", "banner"]

log = logging.getLogger(__name__)

_WARMUP_STEP_MS = 10_000
_TRADES_KEPT = 500
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _candle_interval_ms(data: dict[str, list]) -> int:
    """The smallest spacing between consecutive candles of any instrument (1 minute for single candles)."""
    gaps = [b.ts_ms - a.ts_ms for candles in data.values() for a, b in zip(candles, candles[1:])]
    return max(1, min((g for g in gaps if g > 0), default=60_000))


class SimulatorServer:
    """The simulator's HTTP/WS server and market loop.

    ``rest_url``, ``ws_url`` and ``admin_url`` are valid after :meth:`start`.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        cfg = self.config
        self.lock = threading.RLock()
        self.faults = FaultInjector(seed=cfg.seed)
        self.engine = MatchingEngine(
            cfg.instruments, fees=cfg.fees, initial_balances=cfg.initial_balances, leverage=cfg.leverage,
            book_levels=cfg.book_levels, latency_ms=cfg.latency_ms, seed=cfg.seed,
        )
        self.candles = CandleAggregator(cfg.instruments)
        self._trades: dict[str, deque[PublicTrade]] = {i.inst_id: deque(maxlen=_TRADES_KEPT) for i in cfg.instruments}
        self.source: MarketSource = self._build_source()
        self._replay_held = cfg.hold_replay
        self._steps_before_hold: int | None = None  # released for this many steps, then held again
        self._last_step_mono = time.monotonic()
        self._rest = OkxRestApi(self)
        self._hub = OkxWsHub(self)
        self._runner: web.AppRunner | None = None
        self._market_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead_man: asyncio.TimerHandle | None = None
        self._stopped = False
        self.rest_url = self.ws_url = self.admin_url = ""
        self.port = 0

    def _build_source(self) -> MarketSource:
        cfg = self.config
        now = self.wall_now_ms()
        if cfg.data_path is not None:
            data = load_candle_source(cfg.data_path, [i.inst_id for i in cfg.instruments])
            align = cfg.replay_align_ms or _candle_interval_ms(data)
            source: MarketSource = CandleReplay(data, cfg.instruments, start_ms=now - now % align)
            self._step(source.advance(1))
            return source
        warmup_ms = cfg.warmup_bars * 60_000
        gen = GeneratedMarket(cfg.instruments, seed=cfg.seed, start_ms=now - warmup_ms - 1)
        remaining = warmup_ms + 1
        last: dict[str, MarketTick] = {}
        while remaining > 0:
            dt = min(_WARMUP_STEP_MS, remaining)
            remaining -= dt
            for tick in gen.advance(dt):
                self.candles.on_tick(tick)
                self._trades[tick.inst_id].extend(tick.trades)
                last[tick.inst_id] = tick
        # Only the latest step matters to the engine (no orders exist yet).
        for tick in last.values():
            self.engine.on_market(tick)
        return gen

    # ------------------------------------------------------------ clocks

    @staticmethod
    def wall_now_ms() -> int:
        return time.time_ns() // 1_000_000

    def step_ms(self) -> int:
        """Venue time one market step advances by on a stepped clock."""
        return max(1, int(self.config.tick_interval_ms * self.config.time_scale))

    def venue_now_ms(self) -> int:
        """Venue time now: the last market step plus the scaled wall time since.

        On a stepped clock the time since is capped just short of the next
        step, so a request is always stamped before the market point that the
        next step brings (and after the one the last step brought).
        """
        since = int((time.monotonic() - self._last_step_mono) * 1000 * self.config.time_scale)
        if self.config.stepped_clock:
            since = min(since, self.step_ms() - 1)
        return max(self.source.now_ms + since, self.engine.now_ms)

    @property
    def replay_held(self) -> bool:
        """True while a ``hold_replay`` replay stands at its first point."""
        return self._replay_held

    def release_replay(self, steps: int | None = None) -> bool:
        """Let a held replay run from the next market step: for good, or for ``steps`` steps, after
        which it holds again (lockstep: a caller lets the tree catch up between releases).
        Safe from any thread.

        Returns True if the replay was held (False: it was running; ``steps`` then holds it after them).

        Raises:
            ValueError: ``steps`` is not positive.
        """
        if steps is not None and steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        with self.lock:
            released, self._replay_held = self._replay_held, False
            self._steps_before_hold = steps
        if released:
            log.info("replay released at venue time %d for %s", self.source.now_ms,
                     f"{steps} step(s)" if steps else "good")
        return released

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind ``config.host:config.port`` (0 = a free port) and start the market loop.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: the server was already started or stopped.
        """
        if self._runner is not None or self._stopped:
            raise RuntimeError("a SimulatorServer starts once; create a new one")
        self._loop = asyncio.get_running_loop()
        app = web.Application()
        self._rest.add_routes(app)
        self._hub.add_routes(app)
        self._add_admin_routes(app)
        # A short shutdown timeout: a request parked by the "timeout" fault must not hold up stop().
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        # aiohttp exposes the bound sockets only on its asyncio.Server (typed as AbstractServer)
        sockets = getattr(site._server, "sockets", None)
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        host = self.config.host
        self.rest_url = f"http://{host}:{self.port}"
        self.ws_url = f"ws://{host}:{self.port}/ws/v5"
        self.admin_url = f"http://{host}:{self.port}/admin"
        self.faults.add_cut_listener(self._on_cut)
        self._last_step_mono = time.monotonic()
        self._market_task = asyncio.create_task(self._market_loop(), name="sim-market-loop")

    async def stop(self) -> None:
        """Stop the market loop, close WS connections and the listener. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.faults.remove_cut_listener(self._on_cut)
        if self._dead_man is not None:
            self._dead_man.cancel()
            self._dead_man = None
        if self._market_task is not None:
            self._market_task.cancel()
            try:
                await self._market_task
            except asyncio.CancelledError:
                pass
        await self._hub.close_all(code=1001, message="server stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ market

    async def _market_loop(self) -> None:
        interval = self.config.tick_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self.config.stepped_clock:
                dt_ms = self.step_ms()
            else:
                dt_ms = max(1, int((now - self._last_step_mono) * 1000 * self.config.time_scale))
            try:
                with self.lock:
                    if self._replay_held:
                        # Venue time stands still: the replay meets its points at the times the file says.
                        self._hub.push_tickers(self.source.inst_ids, self.source.now_ms)
                        continue
                    if self._steps_before_hold is not None:
                        self._steps_before_hold -= 1
                        self._replay_held = self._steps_before_hold <= 0
                    self.source.freeze(self.faults.settings.freeze_market_data)
                    ticks = self.source.advance(dt_ms)
                    self._last_step_mono = now
                    events = self._step(ticks)
                    if not ticks:
                        events.extend(self.engine.process_due(self.source.now_ms))
                self._hub.on_market(ticks)
                self.publish(events)
            except Exception:  # keep the venue alive; the log says what broke
                log.exception("simulator market step failed")

    def _step(self, ticks: Sequence[MarketTick]) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        for tick in ticks:
            self.candles.on_tick(tick)
            self._trades[tick.inst_id].extend(tick.trades)
            events.extend(self.engine.on_market(tick))
        return events

    def recent_trades(self, inst_id: str, limit: int) -> list[PublicTrade]:
        """Latest public trades of ``inst_id``, newest first."""
        trades = self._trades.get(inst_id, deque())
        return list(trades)[-limit:][::-1]

    def publish(self, events: Sequence[OrderEvent]) -> None:
        """Push order events to WS subscribers (call on the server's loop)."""
        if events:
            self._hub.on_order_events(events)

    # ------------------------------------------------------------ dead-man switch

    def arm_cancel_all_after(self, timeout_secs: int) -> int:
        """(Re-)arm cancel-all-after; 0 disarms. Returns the trigger time (wall ms, 0 if disarmed)."""
        if self._dead_man is not None:
            self._dead_man.cancel()
            self._dead_man = None
        if timeout_secs <= 0:
            return 0
        loop = self._loop or asyncio.get_running_loop()
        self._dead_man = loop.call_later(timeout_secs, self._dead_man_fired)
        return self.wall_now_ms() + timeout_secs * 1000

    def _dead_man_fired(self) -> None:
        self._dead_man = None
        with self.lock:
            events = self.engine.cancel_all(self.venue_now_ms(), source="cancel_all_after")
        log.warning("cancel-all-after fired: %d order event(s)", len(events))
        self.publish(events)

    # ------------------------------------------------------------ faults, truth

    def _on_cut(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._hub.close_all()))

    @property
    def order_requests(self) -> int:
        """Order rows received over REST since start (placed or rejected; not those a fault dropped)."""
        return self._rest.order_requests

    def account_truth(self) -> dict[str, Any]:
        """Balances, net swap positions ``{instId: contracts}`` and every fill (JSON-able)."""
        with self.lock:
            return self.engine.account_truth()

    # ------------------------------------------------------------ admin

    def _add_admin_routes(self, app: web.Application) -> None:
        app.router.add_get("/admin/faults", self._admin_get_faults)
        app.router.add_post("/admin/faults", self._admin_set_faults)
        app.router.add_post("/admin/faults/clear", self._admin_clear_faults)
        app.router.add_post("/admin/ws/cut", self._admin_cut)
        app.router.add_get("/admin/account", self._admin_account)
        app.router.add_get("/admin/health", self._admin_health)
        app.router.add_post("/admin/replay/release", self._admin_release_replay)

    @staticmethod
    def _loopback_only(request: web.Request) -> None:
        if request.remote not in _LOOPBACK:
            raise web.HTTPForbidden(text="admin is loopback only")

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        return web.json_response(self.faults.settings.model_dump(mode="json"))

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            settings = self.faults.update(**body)
        except ValidationError as exc:
            return web.json_response({"error": exc.errors(include_url=False, include_context=False)}, status=400)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(settings.model_dump(mode="json"))

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        return web.json_response(self.faults.clear_all().model_dump(mode="json"))

    async def _admin_cut(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        closed = await self._hub.close_all()
        return web.json_response({"closed": closed})

    async def _admin_account(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        return web.json_response(self.account_truth())

    async def _admin_health(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        return web.json_response({
            "status": "ok", "venue_now_ms": self.venue_now_ms(), "ws_connections": self._hub.connection_count,
            "instruments": list(self.engine.instruments), "market_frozen": self.source.frozen,
            "replay_held": self.replay_held,
        })

    async def _admin_release_replay(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        try:
            body = await request.json() if request.can_read_body else {}
            steps = body.get("steps") if isinstance(body, dict) else None
            released = self.release_replay(None if steps is None else int(steps))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"released": released, "venue_now_ms": self.venue_now_ms()})


class SimulatorThread:
    """Runs a :class:`SimulatorServer` on its own event loop in a daemon thread.

    ``with SimulatorThread(cfg) as server: ...`` starts it (blocking until it
    listens) and stops it on exit; ``start()``/``stop()`` do the same by hand.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, start_timeout_secs: float = 30.0) -> None:
        self.server = SimulatorServer(config)
        self._timeout = start_timeout_secs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SimulatorServer:
        """Start the server thread; returns the listening server.

        Raises:
            RuntimeError: already started, or the server did not come up in time.
            OSError: the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("SimulatorThread already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="tradetree-sim", daemon=True)
        self._thread.start()
        if not ready.wait(self._timeout):
            raise RuntimeError("simulator did not start in time")
        if failure:
            raise failure[0]
        return self.server

    @property
    def running(self) -> bool:
        """True while the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop the server and its thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(), loop)
        try:
            future.result(timeout=self._timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self._timeout)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def banner(server: SimulatorServer) -> str:
    """The URLs and the accepted credentials (secrets shown only when they are the documented defaults)."""
    cfg = server.config
    secret = cfg.secret_key.get_secret_value()
    passphrase = cfg.passphrase.get_secret_value()
    shown_secret = secret if secret == DEFAULT_SECRET else "(as configured)"
    shown_pass = passphrase if passphrase == DEFAULT_PASSPHRASE else "(as configured)"
    insts = ", ".join(server.engine.instruments)
    return "\n".join([
        "tradetree venue simulator (OKX v5 compatible)",
        f"  REST   {server.rest_url}        (ccxt: ex.urls['api'] = {{'rest': ..., 'ws': ...}})",
        f"  WS     {server.ws_url}   (/public, /private, /business)",
        f"  admin  {server.admin_url}",
        f"  api key     {cfg.api_key}",
        f"  secret      {shown_secret}",
        f"  passphrase  {shown_pass}",
        f"  instruments {insts}",
        f"  market      {'replay of ' + str(cfg.data_path) if cfg.data_path else 'generated'}, seed {cfg.seed}, "
        f"time_scale {cfg.time_scale}",
    ])


async def serve_forever(config: SimulatorConfig) -> None:
    """Run the simulator until cancelled (Ctrl-C in the CLI)."""
    server = SimulatorServer(config)
    await server.start()
    print(banner(server), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
