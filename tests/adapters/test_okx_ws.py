"""OkxWsClient: against the simulator (login, tickers, reconnect after a cut, bad secret) and
against a scripted local server (garbled frames, failing callbacks, missing pongs)."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.server import serve

from tests.adapters.sim_helpers import credentials, eventually, venue_config
from tradetree.adapters.okx import OkxWsClient, WsState
from tradetree.core.config import VenueConfig
from tradetree.core.errors import VenueAuthError, VenueUnavailable

TICKERS = [{"channel": "tickers", "instId": "BTC-USDT"}]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message: dict) -> None:
        self.messages.append(message)

    def channel(self, name: str) -> list[dict]:
        return [m for m in self.messages if m["arg"].get("channel") == name]


async def test_public_tickers_arrive(sim):
    inbox = Inbox()
    client = OkxWsClient(f"{sim.ws_url}/public", venue=venue_config(sim), on_message=inbox)
    await client.subscribe(TICKERS)
    await client.start()
    try:
        assert client.state is WsState.CONNECTED and client.connected
        await eventually(lambda: len(inbox.channel("tickers")) >= 2, what="tickers")
        assert inbox.channel("tickers")[0]["data"][0]["instId"] == "BTC-USDT"
        assert client.last_message_ms is not None
        await client.unsubscribe(TICKERS)
        assert client.subscriptions == []
    finally:
        await client.stop()
    assert client.state is WsState.CLOSED
    await client.stop()  # idempotent


async def test_private_login_and_reconnect_after_cut(sim):
    venue = venue_config(sim)
    inbox = Inbox()
    client = OkxWsClient(f"{sim.ws_url}/private", venue=venue, on_message=inbox, credentials=credentials())
    await client.subscribe([{"channel": "orders", "instType": "ANY"}])
    await client.start()
    public_inbox = Inbox()
    public = OkxWsClient(f"{sim.ws_url}/public", venue=venue, on_message=public_inbox)
    await public.subscribe(TICKERS)
    await public.start()
    try:
        assert client.logged_in and client.connected
        await eventually(lambda: public_inbox.channel("tickers"), what="first tickers")
        sim.faults.cut_ws()
        await eventually(lambda: client.reconnects >= 1 and public.reconnects >= 1, what="reconnects")
        await eventually(lambda: client.logged_in and client.connected, what="re-login")
        seen = len(public_inbox.messages)
        await eventually(lambda: len(public_inbox.messages) > seen, what="tickers after reconnect")
        assert client.subscriptions == [{"channel": "orders", "instType": "ANY"}]
    finally:
        await client.stop()
        await public.stop()


async def test_wrong_secret_fails_login_and_is_not_retried(sim):
    client = OkxWsClient(f"{sim.ws_url}/private", venue=venue_config(sim), on_message=Inbox(),
                         credentials=credentials(secret="wrong-secret"))
    with pytest.raises(VenueAuthError) as info:
        await client.start()
    assert info.value.code == "60009"
    assert "wrong-secret" not in str(info.value)
    assert client.state is WsState.FAILED
    assert client.sessions == 0 and client.reconnects == 0
    assert isinstance(client.fatal_error, VenueAuthError)


async def test_nothing_listening_is_unavailable():
    venue = VenueConfig(name="okx", rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9/ws/v5",
                        ws_reconnect_min_secs=0.05, ws_reconnect_max_secs=0.1)
    client = OkxWsClient("ws://127.0.0.1:9/ws/v5/public", venue=venue, on_message=Inbox())
    with pytest.raises(VenueUnavailable):
        await client.start(timeout_secs=0.5)
    assert client.state is WsState.CLOSED


# -- a scripted server ---------------------------------------------------------------------


class ScriptedServer:
    """Answers subscribes, then sends ``frames``; answers ``ping`` unless ``mute_pings``."""

    def __init__(self, frames: list[str], *, mute_pings: bool = False) -> None:
        self.frames = frames
        self.mute_pings = mute_pings
        self.connections = 0
        self.received: list[str] = []

    async def handler(self, conn) -> None:
        self.connections += 1
        async for raw in conn:
            self.received.append(raw)
            if raw == "ping":
                if not self.mute_pings:
                    await conn.send("pong")
                continue
            message = json.loads(raw)
            if message.get("op") == "subscribe":
                for arg in message["args"]:
                    await conn.send(json.dumps({"event": "subscribe", "arg": arg, "connId": "x"}))
                for frame in self.frames:
                    await conn.send(frame)


@pytest.fixture
async def scripted():
    servers = []

    async def start(server: ScriptedServer) -> str:
        ws_server = await serve(server.handler, "127.0.0.1", 0)
        servers.append(ws_server)
        port = ws_server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws/v5/public"

    yield start
    for ws_server in servers:
        ws_server.close()
        await ws_server.wait_closed()


def _venue() -> VenueConfig:
    return VenueConfig(name="okx", rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5",
                       ws_reconnect_min_secs=0.05, ws_reconnect_max_secs=0.1, http_timeout_secs=2)


async def test_garbled_frames_and_failing_callbacks_are_counted_not_fatal(scripted):
    good = json.dumps({"arg": {"channel": "tickers", "instId": "BTC-USDT"}, "data": [{"n": 1}]})
    boom = json.dumps({"arg": {"channel": "tickers", "instId": "BOOM"}, "data": []})
    frames = ["{not json", "[1, 2]", json.dumps({"hello": "world"}), boom,
              json.dumps({"event": "error", "code": "60012", "msg": "bad arg"}), good]
    server = ScriptedServer(frames)
    url = await scripted(server)
    received = []

    async def on_message(message):
        if message["arg"]["instId"] == "BOOM":
            raise RuntimeError("subscriber bug")
        received.append(message)

    client = OkxWsClient(url, venue=_venue(), on_message=on_message)
    await client.subscribe(TICKERS)
    await client.start()
    try:
        await eventually(lambda: received, what="the good frame after the bad ones")
        assert client.garbled_messages == 3
        assert client.handler_errors == 1
        assert client.subscribe_errors == 1
        assert client.connected and client.reconnects == 0
    finally:
        await client.stop()


async def test_missing_pong_forces_a_reconnect(scripted):
    server = ScriptedServer([], mute_pings=True)
    url = await scripted(server)
    client = OkxWsClient(url, venue=_venue(), on_message=Inbox(), ping_interval_secs=0.05, pong_timeout_secs=0.1)
    await client.subscribe(TICKERS)
    await client.start()
    try:
        await eventually(lambda: client.pong_timeouts >= 1 and client.reconnects >= 1, what="pong timeout")
        assert server.connections >= 2
        # every new session re-sent the subscription (the new session's frame may still be in flight)
        await eventually(lambda: sum(1 for raw in server.received if raw != "ping") >= 2,
                         what="the subscription re-sent on the new session")
    finally:
        await client.stop()


async def test_pongs_keep_the_session(scripted):
    server = ScriptedServer([])
    url = await scripted(server)
    client = OkxWsClient(url, venue=_venue(), on_message=Inbox(), ping_interval_secs=0.02, pong_timeout_secs=1)
    await client.start()
    try:
        await eventually(lambda: server.received.count("ping") >= 3, what="three pings")
        assert client.pong_timeouts == 0 and client.reconnects == 0
    finally:
        await client.stop()


async def test_start_twice_is_refused(scripted):
    url = await scripted(ScriptedServer([]))
    client = OkxWsClient(url, venue=_venue(), on_message=Inbox())
    await client.start()
    try:
        with pytest.raises(RuntimeError):
            await client.start()
    finally:
        await client.stop()
