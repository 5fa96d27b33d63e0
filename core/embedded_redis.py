"""An embedded Redis so that ``make run`` needs nothing installed.

``EmbeddedRedis`` runs, on 127.0.0.1 only, either a local ``redis-server``
binary (when one is on PATH) or an in-process ``fakeredis`` TCP server in a
thread. Both run the store's Lua scripts (fakeredis through lupa).

Persistence: with ``data_dir``, a redis-server keeps an append-only file there
(fsync on every write), so a restart resumes from it. fakeredis keeps nothing
on disk: ``persistent`` is False and a warning is logged when ``data_dir`` was
asked for but only fakeredis is available.

``resolve_redis_url`` decides whether an embedded Redis is needed at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tradetree.core.errors import StoreUnavailable
from tradetree.core.lifecycle import ComponentState

__all__ = ["EmbeddedRedis", "resolve_redis_url"]

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_PREFER = ("auto", "redis-server", "fakeredis")
_START_TIMEOUT_SECS = 10.0
_STOP_TIMEOUT_SECS = 10.0
# A free port found by binding port 0 can be taken by someone else before
# redis-server binds it; try again with a new one.
_PORT_ATTEMPTS = 3


def resolve_redis_url(configured: str | None) -> str | None:
    """The Redis to use: ``configured``, else ``$REDIS_URL``, else None (= embedded).

    Empty strings count as unset.
    """
    if configured:
        return configured
    return os.environ.get("REDIS_URL") or None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _client(port: int, timeout_secs: float) -> redis.Redis:
    # No retries: callers here poll or expect the connection to drop (SHUTDOWN).
    return redis.Redis(
        host=_HOST,
        port=port,
        socket_timeout=timeout_secs,
        socket_connect_timeout=timeout_secs,
        retry=Retry(NoBackoff(), 0),
    )


def _answers_ping(port: int) -> bool:
    client = _client(port, 0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class EmbeddedRedis:
    """A Redis on 127.0.0.1 owned by this process. Start once, stop once.

    Args:
        data_dir: directory for the append-only file (redis-server only);
            None = no persistence.
        port: TCP port, 0 = a free one.
        prefer: ``"auto"`` (redis-server if on PATH, else fakeredis),
            ``"redis-server"`` or ``"fakeredis"``.

    Raises:
        ValueError: ``prefer`` is unknown, or ``prefer="fakeredis"`` with a
            ``data_dir`` (fakeredis cannot persist).
    """

    def __init__(self, data_dir: Path | None = None, port: int = 0, prefer: str = "auto") -> None:
        if prefer not in _PREFER:
            raise ValueError(f"prefer must be one of {', '.join(_PREFER)}, not {prefer!r}")
        if prefer == "fakeredis" and data_dir is not None:
            raise ValueError("fakeredis cannot persist: pass data_dir only with redis-server")
        # absolute: redis-server chdirs to --dir before it opens --logfile
        self._data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._requested_port = port
        self._prefer = prefer
        self._state = ComponentState.NEW
        self._port = 0
        self._kind = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._scratch_dir: tempfile.TemporaryDirectory[str] | None = None
        self._fake_server: object | None = None
        self._fake_thread: threading.Thread | None = None

    # -- public surface ------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``. Raises RuntimeError unless running."""
        self._require_running("url")
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def port(self) -> int:
        self._require_running("port")
        return self._port

    @property
    def kind(self) -> str:
        """``"redis-server"`` or ``"fakeredis"``. Raises RuntimeError unless running."""
        self._require_running("kind")
        return self._kind

    @property
    def persistent(self) -> bool:
        """True when writes survive a restart (redis-server with a data_dir)."""
        self._require_running("persistent")
        return self._kind == "redis-server" and self._data_dir is not None

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; return self.

        Raises:
            RuntimeError: already started (an EmbeddedRedis starts once).
            StoreUnavailable: ``prefer="redis-server"`` and none is on PATH, or
                the server did not answer within 10 s (the message includes the
                tail of its log).
        """
        if self._state is not ComponentState.NEW:
            raise RuntimeError(f"EmbeddedRedis is {self._state.value}; it can be started only once")
        binary = shutil.which("redis-server")
        if self._prefer == "redis-server" and binary is None:
            raise StoreUnavailable("prefer='redis-server' but no redis-server is on PATH")
        if binary is not None and self._prefer != "fakeredis":
            self._start_redis_server(binary)
        else:
            if self._data_dir is not None:
                log.warning(
                    "no redis-server on PATH: embedded fakeredis keeps nothing on disk, "
                    "state in %s will not be written and is lost on exit",
                    self._data_dir,
                )
            self._start_fakeredis()
        self._state = ComponentState.RUNNING
        log.info("embedded Redis (%s) listening on %s:%d", self._kind, _HOST, self._port)
        return self

    def stop(self) -> None:
        """Stop the server (redis-server: SHUTDOWN, which flushes the AOF). Idempotent."""
        if self._state is not ComponentState.RUNNING:
            self._state = ComponentState.STOPPED
            return
        self._state = ComponentState.STOPPED
        if self._process is not None:
            self._stop_redis_server()
        else:
            self._stop_fakeredis()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- redis-server ----------------------------------------------------------

    def _start_redis_server(self, binary: str) -> None:
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            work_dir = self._data_dir
        else:
            self._scratch_dir = tempfile.TemporaryDirectory(prefix="tradetree-redis-")
            work_dir = Path(self._scratch_dir.name)
        log_path = work_dir / "redis-server.log"
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        last_error = ""
        for _ in range(attempts):
            port = self._requested_port or _free_port()
            args = [
                binary,
                "--port", str(port),
                "--bind", _HOST,
                "--protected-mode", "yes",
                "--daemonize", "no",
                "--dir", str(work_dir),
                "--logfile", str(log_path),
                "--save", "",
            ]
            if self._data_dir is not None:
                args += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                args += ["--appendonly", "no"]
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._wait_until_answering(port, process):
                self._process = process
                self._port = port
                self._kind = "redis-server"
                return
            self._terminate(process)
            last_error = self._log_tail(log_path)
        self._cleanup_scratch()
        raise StoreUnavailable(
            f"redis-server did not answer PING on {_HOST} within {_START_TIMEOUT_SECS:.0f} s; "
            f"last log lines: {last_error or '(none)'}"
        )

    @staticmethod
    def _wait_until_answering(port: int, process: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + _START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if _answers_ping(port):
                return True
            time.sleep(0.02)
        return False

    def _stop_redis_server(self) -> None:
        assert self._process is not None
        client = _client(self._port, 5.0)
        try:
            client.shutdown()
        except redis.RedisError as exc:
            log.warning("embedded redis-server did not accept SHUTDOWN (%s); terminating it", exc)
        finally:
            client.close()
        try:
            self._process.wait(timeout=_STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            self._terminate(self._process)
        self._process = None
        self._cleanup_scratch()

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @staticmethod
    def _log_tail(path: Path, lines: int = 5) -> str:
        try:
            return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _cleanup_scratch(self) -> None:
        if self._scratch_dir is not None:
            self._scratch_dir.cleanup()
            self._scratch_dir = None

    # -- fakeredis ----------------------------------------------------------------

    def _start_fakeredis(self) -> None:
        from fakeredis import TcpFakeServer

        server = TcpFakeServer((_HOST, self._requested_port), server_type="redis")
        port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"embedded-fakeredis-{port}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECS
        while not _answers_ping(port):
            if time.monotonic() > deadline:
                server.shutdown()
                server.server_close()
                raise StoreUnavailable(f"embedded fakeredis did not answer PING on {_HOST}:{port}")
            time.sleep(0.02)
        self._fake_server = server
        self._fake_thread = thread
        self._port = port
        self._kind = "fakeredis"

    def _stop_fakeredis(self) -> None:
        server = self._fake_server
        assert server is not None and self._fake_thread is not None
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]  # joins the connection threads
        self._fake_thread.join(timeout=_STOP_TIMEOUT_SECS)
        self._fake_server = None
        self._fake_thread = None

    # -- helpers ------------------------------------------------------------------

    def _require_running(self, what: str) -> None:
        if self._state is not ComponentState.RUNNING:
            raise RuntimeError(f"EmbeddedRedis.{what} is known only while running (start() first)")
