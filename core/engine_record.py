"""How to reach a running engine, and the lock that keeps two engines off one state dir.

A running tree writes an ``EngineRecord`` (Ray address, namespace, whether Ray
wants a token, dashboard and metrics URLs, start time, version, pid) to two
places:

- ``{namespace}:engine`` in Redis, so any process that can reach the engine's
  Redis (the config names it) finds the cluster the tree runs on without
  guessing among the Ray clusters of a host;
- ``{state_dir}/engine.json`` beside ``engine.lock``, for local mode, where the
  Redis itself is embedded on a port chosen at start and only the state dir
  says where it is.

``EngineLock`` is an ``flock`` on ``{state_dir}/engine.lock``, held for the
engine's lifetime: a second engine on the same state dir is refused before it
starts a Redis on the first one's append-only file. The kernel drops the lock
when the process dies, however it dies, so a stale file never blocks a start.

Nothing secret is recorded: the Redis URL is written only for an embedded
Redis (loopback, no password), never a configured one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError

from tradetree.core.errors import ConfigError, StoreError
from tradetree.core.redis_calls import redis_call
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.text import as_text

__all__ = ["EngineRecord", "EngineLock", "EngineLocked", "read_local_record", "write_engine_record",
           "read_engine_record", "clear_engine_record", "port_free"]

_LOCK_FILE = "engine.lock"
_RECORD_FILE = "engine.json"


class EngineRecord(BaseModel):
    """Where a running engine is and how to attach to it (no secrets)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: str
    ray_address: str  # the GCS address, host:port
    ray_namespace: str
    ray_auth_mode: str  # "token" or "disabled": what a client must set RAY_AUTH_MODE to
    redis_namespace: str
    started_ms: int
    pid: int
    host: str
    config_path: str = ""
    dashboard_url: str | None = None
    metrics_url: str | None = None
    simulator_url: str | None = None
    state_dir: str = ""
    embedded_redis_url: str | None = None  # only a loopback, password-less embedded Redis

    def lines(self) -> list[str]:
        """What ``tradetree run`` prints so an operator can attach from another shell."""
        out = [f"Ray: {self.ray_address}  namespace {self.ray_namespace!r}  auth {self.ray_auth_mode}",
               f"attach: tradetree status --config {self.config_path or '<config>'}   "
               f"(or --address {self.ray_address} --namespace {self.ray_namespace})"]
        if self.dashboard_url:
            out.append(f"Ray dashboard: {self.dashboard_url}")
        if self.metrics_url:
            out.append(f"metrics: {self.metrics_url}")
        return out


class EngineLocked(ConfigError):
    """Another engine holds the state dir."""


class EngineLock:
    """An exclusive ``flock`` on ``{state_dir}/engine.lock`` for this process's engine."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> None:
        """Take the lock or refuse, naming the engine that holds it and what to change.

        Raises:
            EngineLocked: another live process holds it.
        """
        if self._fh is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.state_dir / _LOCK_FILE, "a+")  # held open for the engine's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            other = read_local_record(self.state_dir)
            who = (f"engine {other.name!r} (pid {other.pid}, config {other.config_path or '?'}, "
                   f"Ray {other.ray_address})" if other else "another engine")
            raise EngineLocked(
                f"{who} already runs from state dir {self.state_dir}/ (its Redis keeps its append-only "
                f"file there). Stop it first (Ctrl-C in its shell), or give this engine its own "
                f"`state_dir:` and ports (`dashboard_port:`, `metrics.port:`, `simulator.port:`) in its "
                f"config.") from None
        self._fh = fh

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            (self.state_dir / _RECORD_FILE).unlink(missing_ok=True)
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None

    def write_local(self, record: EngineRecord) -> None:
        """Write ``engine.json`` (the lock must be held: only the holder describes the engine)."""
        if self._fh is None:
            raise RuntimeError("write_local without the engine lock")
        tmp = self.state_dir / (_RECORD_FILE + ".tmp")
        tmp.write_text(record.model_dump_json(indent=2))
        os.replace(tmp, self.state_dir / _RECORD_FILE)


def _locked_by_someone(state_dir: Path) -> bool:
    path = state_dir / _LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def read_local_record(state_dir: Path) -> EngineRecord | None:
    """The record of the engine running from ``state_dir``; None when none runs there.

    A record left by an engine that died (its lock is free) is not returned:
    what it points at is gone.
    """
    path = Path(state_dir) / _RECORD_FILE
    if not path.exists() or not _locked_by_someone(Path(state_dir)):
        return None
    try:
        return EngineRecord.model_validate_json(path.read_text())
    except (OSError, ValidationError):
        return None


async def write_engine_record(client: aioredis.Redis, namespace: str, record: EngineRecord) -> None:
    await redis_call(client.set(RedisKeys(namespace).engine, record.model_dump_json()))


async def read_engine_record(client: aioredis.Redis, namespace: str) -> EngineRecord | None:
    """The record a running engine wrote in ``namespace``; None if there is none.

    Raises:
        StoreUnavailable: Redis could not be reached.
        StoreError: the record is there but garbled.
    """
    raw = await redis_call(client.get(RedisKeys(namespace).engine))
    if raw is None:
        return None
    try:
        return EngineRecord.model_validate(json.loads(as_text(raw)))
    except (ValueError, ValidationError) as exc:
        raise StoreError(f"the engine record {RedisKeys(namespace).engine} is garbled: {exc}") from None


async def clear_engine_record(client: aioredis.Redis, namespace: str, pid: int) -> None:
    """Remove the record if it is still this process's (a newer engine's is left alone)."""
    key = RedisKeys(namespace).engine
    script = ("local v = redis.call('GET', KEYS[1]) if v and cjson.decode(v)['pid'] == tonumber(ARGV[1]) "
              "then redis.call('DEL', KEYS[1]) end return 1")
    await redis_call(client.eval(script, 1, key, str(pid)))


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (0 is always free)."""
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
