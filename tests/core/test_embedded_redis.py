"""EmbeddedRedis: a local redis-server or an in-process fakeredis, both running the store's Lua."""

from __future__ import annotations

import logging
import shutil
import socket
from decimal import Decimal
from pathlib import Path

import pytest

from tradetree.core.embedded_redis import EmbeddedRedis, resolve_redis_url
from tradetree.core.errors import StoreUnavailable
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Instrument, InstrumentKind, Side

HAS_REDIS_SERVER = shutil.which("redis-server") is not None
needs_redis_server = pytest.mark.skipif(not HAS_REDIS_SERVER, reason="no redis-server on PATH")

SPOT = Instrument(
    venue="okx",
    inst_id="BTC-USDT",
    kind=InstrumentKind.SPOT,
    base="BTC",
    quote="USDT",
    tick_size=Decimal("0.1"),
    lot_size=Decimal("0.00000001"),
    min_size=Decimal("0.00001"),
)


def _fill(trade_id: str, layer: FillLayer = FillLayer.WS) -> Fill:
    return Fill(
        venue="okx",
        inst_id="BTC-USDT",
        trade_id=trade_id,
        client_order_id="c1",
        side=Side.BUY,
        price=Decimal("100"),
        size=Decimal("0.5"),
        ts_ms=int(trade_id),
        layer=layer,
    )


async def _apply_twice_over_tcp(url: str) -> RedisStore:
    """Apply one fill twice through a real TCP client: EVALSHA and Lua must work."""
    store = await RedisStore.connect(url, "tt-embedded")
    first = await store.apply_fill(_fill("1"), SPOT)
    second = await store.apply_fill(_fill("1", FillLayer.POLL), SPOT)
    assert first.applied and not second.applied
    assert second.position.qty == Decimal("0.5")
    assert (await store.fill_layer_counts())["poll"] == {"delivered": 1, "applied": 0}
    return store


@needs_redis_server
async def test_redis_server_starts_answers_runs_the_lua_and_stops():
    with EmbeddedRedis(prefer="redis-server") as server:
        assert server.kind == "redis-server" and not server.persistent
        assert server.url.startswith("redis://127.0.0.1:")
        url = server.url
        store = await _apply_twice_over_tcp(url)
    with pytest.raises(StoreUnavailable):
        await store.ping()  # Redis is gone
    await store.close()
    with pytest.raises(StoreUnavailable, match="does not answer"):
        await RedisStore.connect(url, "tt-embedded", socket_timeout_secs=0.5)


@needs_redis_server
async def test_redis_server_with_a_data_dir_keeps_state_across_restarts(tmp_path):
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        assert server.persistent
        store = await _apply_twice_over_tcp(server.url)
        await store.close()
    assert (tmp_path / "redis" / "appendonlydir").is_dir()
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        store = await RedisStore.connect(server.url, "tt-embedded")
        position = await store.position("_unattributed", "okx", "BTC-USDT")
        assert (position.qty, position.fill_count) == (Decimal("0.5"), 1)
        assert not (await store.apply_fill(_fill("1"), SPOT)).applied  # still a duplicate
        await store.close()


@needs_redis_server
def test_an_explicit_port_is_used():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with EmbeddedRedis(port=port, prefer="redis-server") as server:
        assert server.port == port and server.url == f"redis://127.0.0.1:{port}/0"


async def test_the_fakeredis_fallback_runs_the_apply_fill_script_over_tcp():
    server = EmbeddedRedis(prefer="fakeredis").start()
    try:
        assert server.kind == "fakeredis" and not server.persistent
        store = await _apply_twice_over_tcp(server.url)
        assert len(await store.audit_entries()) == 1
        await store.close()
    finally:
        server.stop()
    with pytest.raises(RuntimeError, match="only while running"):
        _ = server.url
    server.stop()  # idempotent


def test_auto_prefers_redis_server_and_falls_back_to_fakeredis(monkeypatch, tmp_path, caplog):
    if HAS_REDIS_SERVER:
        with EmbeddedRedis() as server:
            assert server.kind == "redis-server"
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on this PATH
    with caplog.at_level(logging.WARNING, logger="tradetree.core.embedded_redis"):
        with EmbeddedRedis(data_dir=tmp_path / "data") as server:
            assert server.kind == "fakeredis" and not server.persistent
    assert "keeps nothing on disk" in caplog.text
    with pytest.raises(StoreUnavailable, match="no redis-server is on PATH"):
        EmbeddedRedis(prefer="redis-server").start()


def test_misuse_is_refused_with_the_rule():
    with pytest.raises(ValueError, match="prefer must be one of"):
        EmbeddedRedis(prefer="valkey")
    with pytest.raises(ValueError, match="cannot persist"):
        EmbeddedRedis(data_dir=".", prefer="fakeredis")
    server = EmbeddedRedis(prefer="fakeredis")
    with pytest.raises(RuntimeError, match="start\\(\\) first"):
        _ = server.kind
    with server:
        with pytest.raises(RuntimeError, match="started only once"):
            server.start()


def test_resolve_redis_url_prefers_config_then_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/0")
    assert resolve_redis_url("redis://cfg:6379/0") == "redis://cfg:6379/0"
    assert resolve_redis_url(None) == "redis://env:6379/0"
    assert resolve_redis_url("") == "redis://env:6379/0"
    monkeypatch.delenv("REDIS_URL")
    assert resolve_redis_url(None) is None
    monkeypatch.setenv("REDIS_URL", "")
    assert resolve_redis_url(None) is None


def test_relative_data_dir_works(tmp_path, monkeypatch):
    """`make run` passes .tradetree/redis, relative to the checkout."""
    import redis as _redis

    from tradetree.core.embedded_redis import EmbeddedRedis

    monkeypatch.chdir(tmp_path)
    with EmbeddedRedis(data_dir=Path("state/redis"), prefer="redis-server") as er:
        client = _redis.Redis.from_url(er.url)
        assert client.ping()
        client.close()
    assert (tmp_path / "state" / "redis").is_dir()
