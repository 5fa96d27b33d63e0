"""How a running engine is found, and the lock that keeps a second engine off its state dir."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tradetree.core import (
    EngineLock,
    EngineLocked,
    EngineRecord,
    RedisStore,
    clear_engine_record,
    port_free,
    read_engine_record,
    read_local_record,
    write_engine_record,
)


def record(**overrides) -> EngineRecord:
    base = dict(name="eng", version="0.1.0", ray_address="10.0.0.5:6379", ray_namespace="eng",
                ray_auth_mode="token", redis_namespace="paper", started_ms=1, pid=os.getpid(), host="h",
                config_path="configs/paper.yaml", embedded_redis_url="redis://127.0.0.1:5555/0")
    return EngineRecord(**{**base, **overrides})


def test_a_second_lock_on_the_state_dir_is_refused_naming_the_holder_and_the_fields(tmp_path):
    first = EngineLock(tmp_path)
    first.acquire()
    first.write_local(record())
    try:
        with pytest.raises(EngineLocked) as refused:
            EngineLock(tmp_path).acquire()
        text = str(refused.value)
        assert f"pid {os.getpid()}" in text and "Ray 10.0.0.5:6379" in text
        assert "`state_dir:`" in text and "`dashboard_port:`" in text
        assert read_local_record(tmp_path) == record()
    finally:
        first.release()
    assert read_local_record(tmp_path) is None and not (tmp_path / "engine.json").exists()
    again = EngineLock(tmp_path)
    again.acquire()  # free once released
    again.release()


def test_a_record_left_by_a_dead_engine_is_not_believed(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from tradetree.core import EngineLock, EngineRecord
        lock = EngineLock(Path({str(tmp_path)!r}))
        lock.acquire()
        lock.write_local(EngineRecord(name="dead", version="0", ray_address="x:1", ray_namespace="n",
                                      ray_auth_mode="token", redis_namespace="paper", started_ms=1,
                                      pid=os.getpid(), host="h"))
        os._exit(0)  # dies without releasing: the kernel drops the flock
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert (tmp_path / "engine.json").exists()
    assert read_local_record(tmp_path) is None
    lock = EngineLock(tmp_path)
    lock.acquire()
    lock.release()


async def test_the_redis_record_round_trips_and_only_its_owner_removes_it(real_redis, namespace):
    store = RedisStore(real_redis, namespace)
    assert await read_engine_record(store.client, namespace) is None
    mine = record()
    await write_engine_record(store.client, namespace, mine)
    assert await read_engine_record(store.client, namespace) == mine
    await clear_engine_record(store.client, namespace, pid=mine.pid + 1)  # a newer engine's is kept
    assert await read_engine_record(store.client, namespace) == mine
    await clear_engine_record(store.client, namespace, pid=mine.pid)
    assert await read_engine_record(store.client, namespace) is None


def test_port_free_sees_a_bound_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_free("127.0.0.1", s.getsockname()[1])
    assert port_free("127.0.0.1", 0)
