"""``hold_replay``: a stepped replay stands at its first point until released, with its feed kept alive."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from pydantic import ValidationError

from tests.sim.conftest import FAST
from tradetree.sim.config import SimulatorConfig
from tradetree.sim.server import SimulatorServer


def _csv(tmp_path, candles: int = 4):
    path = tmp_path / "btc.csv"
    rows = ["timestamp_ms,open,high,low,close,volume"]
    for i in range(candles):
        base = 100 + i
        rows.append(f"{1_700_000_000_000 + i * 8_000},{base},{base + 2},{base - 2},{base + 1},40")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_hold_needs_a_stepped_replay(tmp_path):
    with pytest.raises(ValidationError, match="hold_replay"):
        SimulatorConfig(hold_replay=True, stepped_clock=True)  # no data: nothing to hold
    with pytest.raises(ValidationError, match="hold_replay"):
        SimulatorConfig(hold_replay=True, data_path=_csv(tmp_path))  # venue time follows the wall clock
    assert SimulatorConfig(hold_replay=True, stepped_clock=True, data_path=_csv(tmp_path)).hold_replay


async def _wait_for(predicate, timeout_secs: float = 10.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout_secs)


async def test_held_replay_stands_at_its_first_point_until_released(tmp_path):
    """While held: venue time stands at the first point however many steps pass, and the first point's
    ticker is re-pushed unchanged (its feed stays fresh). Released over admin HTTP: the replay runs on
    the stepped grid from where it stood, to its end."""
    cfg = SimulatorConfig(**{**FAST, "tick_interval_ms": 20, "time_scale": 100.0}, data_path=_csv(tmp_path),
                          stepped_clock=True, hold_replay=True)
    server = SimulatorServer(cfg)
    start = server.source.now_ms
    await server.start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url + "/public") as ws:
            await ws.send_str(json.dumps({"op": "subscribe",
                                          "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}))
            tickers = []
            while len(tickers) < 6:  # the subscribe snapshot, then a re-push per step
                msg = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                if msg.get("arg", {}).get("channel") == "tickers" and "data" in msg:
                    tickers.append(msg["data"][0])
            with server.lock:
                assert server.source.now_ms == start and server.replay_held
                assert start <= server.venue_now_ms() < start + server.step_ms()
            assert {t["last"] for t in tickers} == {"100"}  # the first candle's open
            assert {int(t["ts"]) for t in tickers[1:]} == {start}
            async with http.get(server.admin_url + "/health") as r:
                assert (await r.json())["replay_held"] is True

            async with http.post(server.admin_url + "/replay/release") as r:
                assert (await r.json())["released"] is True
            assert not server.replay_held and server.release_replay() is False
            seen = []

            def step_seen():
                with server.lock:
                    seen.append(server.source.now_ms)
                    return server.source.exhausted

            await _wait_for(step_seen)
            assert all((t - start) % server.step_ms() == 0 for t in seen)
            assert server.engine.mark_price("BTC-USDT") == 104  # the last candle's close
    finally:
        await server.stop()


async def test_replay_without_hold_starts_at_once(tmp_path):
    cfg = SimulatorConfig(**{**FAST, "tick_interval_ms": 20, "time_scale": 100.0}, data_path=_csv(tmp_path),
                          stepped_clock=True)
    server = SimulatorServer(cfg)
    start = server.source.now_ms
    assert not server.replay_held
    await server.start()
    try:
        await _wait_for(lambda: server.source.now_ms > start)
    finally:
        await server.stop()


async def test_a_release_for_some_steps_holds_again_after_them(tmp_path):
    cfg = SimulatorConfig(**{**FAST, "tick_interval_ms": 20, "time_scale": 100.0}, data_path=_csv(tmp_path),
                          stepped_clock=True, hold_replay=True)
    server = SimulatorServer(cfg)
    start = server.source.now_ms
    with pytest.raises(ValueError, match="positive"):
        server.release_replay(steps=0)
    await server.start()
    try:
        assert server.release_replay(steps=2)
        await _wait_for(lambda: server.replay_held)
        await asyncio.sleep(0.1)  # five more steps' time: it stays where the two steps left it
        with server.lock:
            assert server.source.now_ms == start + 2 * server.step_ms()
        async with aiohttp.ClientSession() as http:
            async with http.post(server.admin_url + "/replay/release", json={"steps": 3}) as r:
                assert (await r.json())["released"] is True
        await _wait_for(lambda: server.replay_held)
        with server.lock:
            assert server.source.now_ms == start + 5 * server.step_ms()
    finally:
        await server.stop()
