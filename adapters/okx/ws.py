"""OKX v5 WebSocket client on the ``websockets`` library: one connection, kept alive.

One ``OkxWsClient`` owns one connection to one URL (``.../public``,
``.../private`` or ``.../business``). It logs in when given credentials,
(re)sends every subscription on each new connection, keeps the connection
alive with OKX's text ``ping``/``pong``, and reconnects with exponential
backoff and jitter after any drop. Each data push (``{"arg":..,"data":[..]}``)
is handed, in arrival order, to one async callback.

What is fatal and what is not:
- a rejected login (60005/60007/60009/60024 and friends) is fatal: the loop
  stops, ``fatal_error`` holds the ``VenueAuthError`` and ``start()`` raises
  it; credentials that are wrong stay wrong, so it is never retried;
- drops, refused connections, timeouts, a missing pong: reconnect. The
  backoff grows with every attempt that fails *and* every session that ends
  before it was up ``stable_session_secs`` (a venue that accepts and drops at
  once gets no faster retries than one that refuses); only a session that
  stayed up that long starts the backoff over. Every delay is recorded
  (``backoff_history``) for probes and tests;
- a garbled message or a callback that raises: logged and counted, never
  fatal. OKX does not replay what was pushed during a gap; closing that gap
  is the REST poller's job, not this client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from tradetree.adapters.okx.signing import ws_login_request
from tradetree.core import (
    BackoffPolicy,
    Clock,
    VenueAuthError,
    VenueConfig,
    VenueCredentials,
    VenueUnavailable,
    WallClock,
)

__all__ = ["OkxWsClient", "WsState", "MessageHandler", "FATAL_LOGIN_CODES"]

log = logging.getLogger(__name__)

MessageHandler = Callable[[dict[str, Any]], Awaitable[None]]

# Login rejections that a retry cannot fix: bad timestamp format, bad key,
# bad signature, generic login failure, bad passphrase.
FATAL_LOGIN_CODES = frozenset({"60004", "60005", "60007", "60009", "60024"})
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_MAX_MESSAGE_BYTES = 1 << 22
_STOP_TIMEOUT_SECS = 5.0
_BACKOFF_HISTORY = 64  # reconnect delays kept for stats


class WsState(str, enum.Enum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # opening, logging in, subscribing
    CONNECTED = "connected"  # session up: logged in (private) and subscriptions sent
    BACKOFF = "backoff"  # waiting before the next attempt
    FAILED = "failed"  # stopped on a fatal error (see ``fatal_error``)
    CLOSED = "closed"  # stopped by ``stop()``


def _subscription_key(arg: dict[str, Any]) -> str:
    return json.dumps(arg, sort_keys=True, separators=(",", ":"))


class OkxWsClient:
    """A self-healing connection to one OKX WS endpoint.

    The callback is awaited inline, so pushes are handled strictly in order;
    it must be quick (write to Redis, hand off to subscribers without waiting).

    Counters and state for health probes: ``state``, ``connected``,
    ``logged_in``, ``reconnects`` (sessions established after the first),
    ``last_message_ms`` (any frame, pongs included), ``data_messages``,
    ``garbled_messages``, ``handler_errors``, ``subscribe_errors``,
    ``pong_timeouts``, ``last_error``, ``fatal_error``, and
    ``backoff_history``: the latest reconnect waits as ``(attempt, delay_secs)``,
    oldest first (``attempt`` 0 is the first wait after a stable session).

    ``backoff`` is the reconnect policy: the ceiling is
    ``min(ws_reconnect_max_secs, ws_reconnect_min_secs * 2**attempt)`` and the
    wait is drawn uniformly from ``[ceiling/2, ceiling]`` (``core.backoff``,
    jitter "equal"), so many clients dropped at once do not reconnect in lockstep.

    ``stable_session_secs`` (default: the venue's ``ws_reconnect_max_secs``,
    at most 5 s) is how long a session must stay up before the backoff starts
    over.
    """

    def __init__(
        self,
        url: str,
        *,
        venue: VenueConfig,
        on_message: MessageHandler,
        credentials: VenueCredentials | None = None,
        clock: Clock | None = None,
        ping_interval_secs: float = 15.0,
        pong_timeout_secs: float = 10.0,
        rng: random.Random | None = None,
        stable_session_secs: float | None = None,
    ) -> None:
        self._url = url
        self._name = f"{venue.name} ws {urlsplit(url).path.rsplit('/', 1)[-1] or url}"
        self._venue = venue
        self._on_message = on_message
        self._credentials = credentials
        self._clock = clock or WallClock()
        self._ping_interval_secs = ping_interval_secs
        self._pong_timeout_secs = pong_timeout_secs
        self._rng = rng or random.Random()
        self.backoff = BackoffPolicy(
            base_secs=venue.ws_reconnect_min_secs, cap_secs=venue.ws_reconnect_max_secs, jitter="equal"
        )
        self._stable_session_secs = (
            min(venue.ws_reconnect_max_secs, 5.0) if stable_session_secs is None else stable_session_secs
        )
        self._proxy: Any = None if (urlsplit(url).hostname or "") in _LOOPBACK_HOSTS else True
        self._subscriptions: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._conn: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._pong = asyncio.Event()
        self._stopping = False
        self._session_up = False
        self.state = WsState.IDLE
        self.logged_in = False
        self.reconnects = 0
        self.sessions = 0
        self.last_message_ms: int | None = None
        self.data_messages = 0
        self.garbled_messages = 0
        self.handler_errors = 0
        self.subscribe_errors = 0
        self.pong_timeouts = 0
        self.last_error = ""
        self.fatal_error: VenueAuthError | None = None
        self.backoff_history: deque[tuple[int, float]] = deque(maxlen=_BACKOFF_HISTORY)

    @property
    def url(self) -> str:
        return self._url

    @property
    def connected(self) -> bool:
        """True while a session is up (and, for a private endpoint, logged in)."""
        return self._session_up

    @property
    def subscriptions(self) -> list[dict[str, Any]]:
        return list(self._subscriptions.values())

    async def start(self, timeout_secs: float | None = None) -> None:
        """Open the first session and keep it alive in the background.

        Returns once connected (logged in and subscriptions sent).

        Raises:
            VenueAuthError: the venue rejected the login (nothing keeps running).
            VenueUnavailable: no session within ``timeout_secs`` (default: the
                venue's ``http_timeout_secs``); nothing keeps running.
            RuntimeError: already started.
        """
        if self._task is not None:
            raise RuntimeError(f"{self._name}: start() called twice")
        self._task = asyncio.create_task(self._run(), name=self._name)
        timeout = timeout_secs if timeout_secs is not None else self._venue.http_timeout_secs
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            last = self.last_error
            await self.stop()
            raise VenueUnavailable(
                f"{self._name}: no session within {timeout:g}s ({last or 'no answer'})", venue=self._venue.name
            ) from None
        if self.fatal_error is not None:
            await self.stop()
            self.state = WsState.FAILED
            raise self.fatal_error

    async def stop(self) -> None:
        """Close the connection and end the reconnect loop. Idempotent."""
        self._stopping = True
        conn, task = self._conn, self._task
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        if task is not None and not task.done():
            task.cancel()
            # The loop also watches ``_stopping``: even if a library swallows the
            # cancellation, it ends; stop() never waits on it for ever.
            done, _ = await asyncio.wait({task}, timeout=_STOP_TIMEOUT_SECS)
            if not done:
                log.error("%s: connection loop did not stop", self._name)
        self._session_up = False
        self.logged_in = False
        if self.state is not WsState.FAILED:
            self.state = WsState.CLOSED

    async def subscribe(self, args: list[dict[str, Any]]) -> None:
        """Subscribe to ``args`` now (if connected) and on every future connection.

        Already-held subscriptions are not sent again.
        """
        await self._change_subscriptions("subscribe", args)

    async def unsubscribe(self, args: list[dict[str, Any]]) -> None:
        """Drop ``args`` from the subscriptions (and tell the venue if connected)."""
        await self._change_subscriptions("unsubscribe", args)

    async def _change_subscriptions(self, op: str, args: list[dict[str, Any]]) -> None:
        async with self._lock:
            changed = []
            for arg in args:
                key = _subscription_key(arg)
                if op == "subscribe" and key not in self._subscriptions:
                    self._subscriptions[key] = dict(arg)
                    changed.append(arg)
                elif op == "unsubscribe" and self._subscriptions.pop(key, None) is not None:
                    changed.append(arg)
            if changed and self._session_up and self._conn is not None:
                # A send on a dying connection is harmless: the next session resubscribes.
                with contextlib.suppress(websockets.ConnectionClosed):
                    await self._conn.send(json.dumps({"op": op, "args": changed}))

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            self.state = WsState.CONNECTING
            session_up_at: float | None = None
            try:
                async with connect(
                    self._url,
                    open_timeout=self._venue.http_timeout_secs,
                    ping_interval=None,  # OKX keepalive is the text "ping", sent by _ping_loop
                    close_timeout=2,
                    max_size=_MAX_MESSAGE_BYTES,
                    proxy=self._proxy,
                ) as conn:
                    self._conn = conn
                    if self._credentials is not None:
                        await self._login(conn)
                    async with self._lock:
                        if self._subscriptions:
                            await conn.send(json.dumps({"op": "subscribe", "args": self.subscriptions}))
                        self._session_up = True
                    if self.sessions > 0:
                        self.reconnects += 1
                    self.sessions += 1
                    session_up_at = time.monotonic()
                    self.state = WsState.CONNECTED
                    self._ready.set()
                    log.info("%s: session up (reconnects=%d)", self._name, self.reconnects)
                    await self._session(conn)
                    self.last_error = f"closed by venue ({conn.close_code})"
            except VenueAuthError as exc:
                self.fatal_error = exc
                self.last_error = str(exc)
                self.state = WsState.FAILED
                log.error("%s: %s; not retrying", self._name, exc)
                self._ready.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any transport or protocol failure: reconnect
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: connection lost: %s", self._name, self.last_error)
            finally:
                self._session_up = False
                self.logged_in = False
                self._conn = None
            if self._stopping:
                break
            if session_up_at is not None and time.monotonic() - session_up_at >= self._stable_session_secs:
                attempt = 0  # a session that held: the trouble is over, reconnect quickly
            self.state = WsState.BACKOFF
            delay = self.backoff.delay(attempt, self._rng)
            self.backoff_history.append((attempt, delay))
            attempt += 1
            await asyncio.sleep(delay)

    async def _login(self, conn: ClientConnection) -> None:
        """Send the login and wait for its answer. Raises VenueAuthError or VenueUnavailable."""
        assert self._credentials is not None
        # The signature timestamp is checked against the venue's wall clock,
        # so it is wall time even when the engine runs on an injected clock.
        await conn.send(json.dumps(ws_login_request(self._credentials, int(time.time()))))
        deadline = time.monotonic() + self._venue.http_timeout_secs
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VenueUnavailable(f"{self._name}: login not answered", venue=self._venue.name)
            try:
                raw = await asyncio.wait_for(conn.recv(), remaining)
            except TimeoutError:
                raise VenueUnavailable(f"{self._name}: login not answered", venue=self._venue.name) from None
            self.last_message_ms = self._clock.now_ms()
            message = self._decode(raw)
            if message is None or message.get("event") not in ("login", "error"):
                continue
            code = str(message.get("code", ""))
            if message.get("event") == "login" and code == "0":
                self.logged_in = True
                return
            detail = f"{self._name}: login rejected: {code} {message.get('msg', '')}".strip()
            if code in FATAL_LOGIN_CODES:
                raise VenueAuthError(detail, venue=self._venue.name, code=code)
            raise VenueUnavailable(detail, venue=self._venue.name, code=code)

    async def _session(self, conn: ClientConnection) -> None:
        pinger = asyncio.create_task(self._ping_loop(conn))
        try:
            async for raw in conn:
                await self._dispatch(raw)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pinger

    async def _ping_loop(self, conn: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self._ping_interval_secs)
            self._pong.clear()
            await conn.send("ping")
            try:
                await asyncio.wait_for(self._pong.wait(), self._pong_timeout_secs)
            except TimeoutError:
                self.pong_timeouts += 1
                log.warning("%s: no pong within %gs; reconnecting", self._name, self._pong_timeout_secs)
                await conn.close(code=4000, reason="pong timeout")
                return

    def _decode(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            message = None
        if not isinstance(message, dict):
            self.garbled_messages += 1
            log.warning("%s: garbled message ignored: %.120r", self._name, raw)
            return None
        return message

    async def _dispatch(self, raw: str | bytes) -> None:
        self.last_message_ms = self._clock.now_ms()
        if raw == "pong":
            self._pong.set()
            return
        message = self._decode(raw)
        if message is None:
            return
        event = message.get("event")
        if event is not None:
            self._on_event(message)
            return
        if isinstance(message.get("arg"), dict) and isinstance(message.get("data"), list):
            self.data_messages += 1
            try:
                await self._on_message(message)
            except Exception:  # one bad message must not take the stream down
                self.handler_errors += 1
                log.exception("%s: message handler failed", self._name)
            return
        self.garbled_messages += 1
        log.warning("%s: message without event or data ignored: %.120r", self._name, raw)

    def _on_event(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "error":
            self.subscribe_errors += 1
            self.last_error = f"venue error {message.get('code')}: {message.get('msg', '')}"
            log.error("%s: %s", self._name, self.last_error)
        elif event == "notice":
            # 64008: service upgrade; the venue will drop us and we reconnect then.
            log.warning("%s: venue notice %s: %s", self._name, message.get("code"), message.get("msg", ""))
        # subscribe / unsubscribe acks, login echoes and channel-conn-count need no action.
