"""Alerter against a local HTTP server standing in for Slack (webhook and Web API)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from pydantic import ValidationError

from tradetree.actors.alerter import Alerter, AlerterActor, Severity, resolve_slack_target
from tradetree.core.clock import ManualClock
from tradetree.core.errors import ConfigError
from tradetree.telemetry import AlerterConfig

SECRET_PATH = "T0SECRET/B0SECRET/xyzzyHOOKsecret"
TOKEN = "xoxb-1234-secret-token"


class FakeSlack:
    """Incoming-webhook and chat.postMessage endpoints on 127.0.0.1; answers can be steered."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.status = 200
        self.hang = False
        self.release = asyncio.Event()
        self.requests = 0
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(f"/services/{SECRET_PATH}", self._webhook)
        app.router.add_post("/api/chat.postMessage", self._chat)
        self._runner = web.AppRunner(app, access_log=None)  # the stand-in logs URLs; real Slack is not ours
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{SECRET_PATH}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def _gate(self) -> web.Response | None:
        self.requests += 1
        if self.hang:
            await self.release.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="internal_error")
        return None

    async def _webhook(self, request: web.Request) -> web.Response:
        failed = await self._gate()
        if failed is not None:
            return failed
        self.messages.append(await request.json())
        self.arrived.set()
        return web.Response(text="ok")

    async def _chat(self, request: web.Request) -> web.Response:
        failed = await self._gate()
        if failed is not None:
            return failed
        raw = await request.text()
        if request.content_type == "application/json":
            body = json.loads(raw)
        else:
            body = {k: v[0] for k, v in parse_qs(raw).items()}
        body["authorization"] = request.headers.get("Authorization", "")
        self.messages.append(body)
        self.arrived.set()
        return web.json_response({"ok": True, "channel": body.get("channel"), "ts": "1.0"})


@pytest.fixture
async def slack():
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()


def webhook_env(slack: FakeSlack) -> dict[str, str]:
    return {"TRADETREE_SLACK_WEBHOOK_URL": slack.webhook_url}


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def wait_for_stat(alerter: Alerter, name: str, value: int) -> None:
    for _ in range(2000):
        if alerter.stats()[name] >= value:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"stat {name} never reached {value}: {alerter.stats()}")


async def test_webhook_delivers_severity_and_text(slack):
    alerter = Alerter(AlerterConfig(), engine_name="paper", environ=webhook_env(slack))
    await alerter.start()
    try:
        record = alerter.alert("critical", "risk:kill", "Kill switch engaged", "strategy MR_v10 winding down")
        assert record.outcome == "queued"
        await wait_for_stat(alerter, "sent", 1)
        text = slack.messages[0]["text"]
        assert "[CRITICAL] paper: Kill switch engaged" in text and "strategy MR_v10 winding down" in text
        assert alerter.recent(1)[0].outcome == "sent"
    finally:
        await alerter.stop()


async def test_web_api_chat_post_message_with_token_and_channel(slack):
    config = AlerterConfig(slack_channel="#trading-alerts", slack_base_url=slack.api_url)
    alerter = Alerter(config, environ={"TRADETREE_SLACK_TOKEN": TOKEN})
    await alerter.start()
    try:
        alerter.alert(Severity.WARNING, "okx:drift", "Position drift", "BTC-USDT-SWAP off by 0.02")
        await wait_for_stat(alerter, "sent", 1)
        message = slack.messages[0]
        assert message["channel"] == "#trading-alerts"
        assert "[WARNING] tradetree: Position drift" in message["text"] and "off by 0.02" in message["text"]
        assert message["authorization"] == f"Bearer {TOKEN}"
    finally:
        await alerter.stop()


async def test_duplicates_within_the_window_are_suppressed():
    clock = ManualClock()
    alerter = Alerter(AlerterConfig(dedup_window_secs=60), environ={}, clock=clock)
    assert alerter.alert("warning", "okx:rejects", "Rejections", "5 in a row").outcome == "log_only"
    assert alerter.alert("warning", "okx:rejects", "Rejections", "6 in a row").outcome == "deduplicated"
    assert alerter.alert("info", "okx:rejects", "Rejections", "7 in a row").outcome == "deduplicated"
    assert alerter.alert("warning", "other", "Other", "").outcome == "log_only"  # another key is independent
    # a more severe alert for the same key is not swallowed
    assert alerter.alert("critical", "okx:rejects", "Rejections", "paused").outcome == "log_only"
    clock.advance(61)
    assert alerter.alert("critical", "okx:rejects", "Rejections", "still").outcome == "log_only"
    assert alerter.stats()["deduplicated"] == 2


async def test_suppressed_count_is_reported_in_the_next_message(slack):
    clock = ManualClock()
    alerter = Alerter(AlerterConfig(dedup_window_secs=60), environ=webhook_env(slack), clock=clock)
    await alerter.start()
    try:
        alerter.alert("warning", "k", "Fill gap", "")
        alerter.alert("warning", "k", "Fill gap", "")
        alerter.alert("warning", "k", "Fill gap", "")
        clock.advance(61)
        alerter.alert("warning", "k", "Fill gap", "")
        await wait_for_stat(alerter, "sent", 2)
        assert len(slack.messages) == 2
        assert "+2 similar alert(s) suppressed" in slack.messages[1]["text"]
    finally:
        await alerter.stop()


async def test_rate_limit_holds_and_critical_passes():
    clock = ManualClock()
    alerter = Alerter(AlerterConfig(rate_limit_per_min=3, dedup_window_secs=0), environ={}, clock=clock)
    outcomes = [alerter.alert("warning", f"k{i}", f"t{i}", "").outcome for i in range(5)]
    assert outcomes == ["log_only"] * 3 + ["rate_limited"] * 2
    assert alerter.alert("critical", "kc", "SAFE MODE", "").outcome == "log_only"
    clock.advance(19)  # 3/min = one token per 20s
    assert alerter.alert("warning", "k9", "t9", "").outcome == "rate_limited"
    clock.advance(1)
    assert alerter.alert("warning", "k10", "t10", "").outcome == "log_only"
    assert alerter.stats()["rate_limited"] == 3


async def test_rate_limited_alerts_are_announced_in_the_next_message(slack):
    clock = ManualClock()
    alerter = Alerter(AlerterConfig(rate_limit_per_min=1), environ=webhook_env(slack), clock=clock)
    await alerter.start()
    try:
        alerter.alert("info", "a", "first", "")
        alerter.alert("info", "b", "second", "")
        alerter.alert("info", "c", "third", "")
        clock.advance(60)
        alerter.alert("info", "d", "fourth", "")
        await wait_for_stat(alerter, "sent", 2)
        assert [m["text"].splitlines()[0] for m in slack.messages] == ["[INFO] tradetree: first",
                                                                       "[INFO] tradetree: fourth"]
        assert "2 alert(s) held back by the rate limit" in slack.messages[1]["text"]
    finally:
        await alerter.stop()


async def test_slack_500_is_retried_boundedly_and_counted(slack, caplog):
    slack.status = 500
    config = AlerterConfig(send_max_attempts=3, send_retry_delay_secs=0)
    alerter = Alerter(config, environ=webhook_env(slack), sleep=no_sleep)
    await alerter.start()
    try:
        with caplog.at_level(logging.DEBUG):
            assert alerter.alert("critical", "k", "Venue down", "").outcome == "queued"
            await wait_for_stat(alerter, "failed", 1)
        assert slack.requests == 3
        record = alerter.recent(1)[0]
        assert record.outcome == "failed" and record.attempts == 3 and "500" in record.error
        assert alerter.check_health().healthy  # Slack's outage is not the alerter's: no restart loop
        assert "last Slack error" in alerter.check_health().probes[0].detail
        assert "xyzzyHOOKsecret" not in caplog.text
        # Slack comes back: the next alert goes out
        slack.status = 200
        alerter.alert("info", "k2", "Venue up", "")
        await wait_for_stat(alerter, "sent", 1)
    finally:
        await alerter.stop()


async def test_hanging_slack_never_blocks_alert(slack):
    slack.hang = True
    config = AlerterConfig(send_timeout_secs=0.2, send_max_attempts=2, send_retry_delay_secs=0)
    alerter = Alerter(config, environ=webhook_env(slack), sleep=no_sleep)
    await alerter.start()
    try:
        alerter.alert("critical", "k1", "first", "")
        for _ in range(200):
            if slack.requests:
                break
            await asyncio.sleep(0.005)
        assert slack.requests == 1 and not slack.release.is_set()
        # while Slack holds the request open, alert() still returns at once with a decision
        records = [alerter.alert("warning", f"k{i}", f"t{i}", "") for i in range(2, 6)]
        assert [r.outcome for r in records] == ["queued"] * 4
        assert slack.messages == [] and not slack.release.is_set()
        await wait_for_stat(alerter, "failed", 1)
        assert "no answer within 0.2s" in alerter.recent(5)[0].error
    finally:
        await alerter.stop()


async def test_log_only_when_unconfigured(caplog):
    alerter = Alerter(AlerterConfig(), environ={})
    assert not alerter.slack_configured
    await alerter.start()
    with caplog.at_level(logging.INFO, logger="tradetree.alerts"):
        record = alerter.alert("critical", "root:escalated", "SAFE MODE", "root supervisor escalated")
    assert record.outcome == "log_only"
    crit = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert crit and "SAFE MODE" in crit[0].getMessage() and "root supervisor escalated" in crit[0].getMessage()
    assert alerter.check_health().healthy
    await alerter.stop()


async def test_unreachable_slack_fails_without_leaking_the_webhook(caplog):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/{SECRET_PATH}"
    alerter = Alerter(AlerterConfig(send_max_attempts=2, send_retry_delay_secs=0),
                      environ={"TRADETREE_SLACK_WEBHOOK_URL": url}, sleep=no_sleep)
    await alerter.start()
    try:
        with caplog.at_level(logging.DEBUG):
            alerter.alert("warning", "k", "t", "")
            await wait_for_stat(alerter, "failed", 1)
        record = alerter.recent(1)[0]
        assert record.error and "xyzzyHOOKsecret" not in record.error
        assert "xyzzyHOOKsecret" not in caplog.text
    finally:
        await alerter.stop()


async def test_secrets_stay_out_of_reprs():
    target = resolve_slack_target(AlerterConfig(), {"TRADETREE_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/" + SECRET_PATH})
    assert target is not None
    assert "xyzzyHOOKsecret" not in repr(target) and "xyzzyHOOKsecret" not in str(target.model_dump())
    token_target = resolve_slack_target(AlerterConfig(slack_channel="#a"), {"TRADETREE_SLACK_TOKEN": TOKEN})
    assert token_target is not None and TOKEN not in repr(token_target)


def test_token_without_channel_is_a_config_error():
    with pytest.raises(ConfigError, match="slack_channel"):
        resolve_slack_target(AlerterConfig(), {"TRADETREE_SLACK_TOKEN": TOKEN})


def test_config_is_frozen_and_strict():
    config = AlerterConfig()
    with pytest.raises(ValidationError):
        config.rate_limit_per_min = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        AlerterConfig(slack_token="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AlerterConfig(rate_limit_per_min=0)


def test_unknown_severity_is_refused():
    with pytest.raises(ValueError):
        Alerter(AlerterConfig(), environ={}).alert("fatal", "k", "t", "")


async def test_recent_returns_the_last_n_oldest_first():
    alerter = Alerter(AlerterConfig(recent_max=3, dedup_window_secs=0), environ={})
    for i in range(5):
        alerter.alert("info", f"k{i}", f"t{i}", "")
    assert [r.title for r in alerter.recent(2)] == ["t3", "t4"]
    assert [r.title for r in alerter.recent(10)] == ["t2", "t3", "t4"]
    assert alerter.recent(0) == []


async def test_queue_overflow_drops_the_oldest_pending(slack):
    slack.hang = True
    config = AlerterConfig(queue_max=2, dedup_window_secs=0, send_timeout_secs=30)
    alerter = Alerter(config, environ=webhook_env(slack))
    for i in range(4):  # not started: everything stays queued
        alerter.alert("critical", f"k{i}", f"t{i}", "")
    stats = alerter.stats()
    assert stats["dropped"] == 2 and stats["pending"] == 2
    assert [r.outcome for r in alerter.recent(4)] == ["dropped", "dropped", "queued", "queued"]
    assert not alerter.check_health().healthy  # a full queue is something a restart can fix


async def test_actor_shell_delegates(monkeypatch):
    monkeypatch.delenv("TRADETREE_SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("TRADETREE_SLACK_TOKEN", raising=False)
    actor = AlerterActor(AlerterConfig())
    await actor.start()
    record = await actor.alert("warning", "k", "title", "text")
    assert record.outcome == "log_only"
    assert [r.key for r in await actor.recent(5)] == ["k"]
    assert (await actor.stats())["log_only"] == 1
    assert (await actor.check_health()).healthy
    await actor.stop()


# -- Block Kit and redaction, as the loopback Slack receives them --------------------------------


def block_texts(message: dict) -> list[str]:
    """Every text of a Block Kit message's blocks, in order (header, fields, sections, context)."""
    out = []
    for block in message["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e["text"] for e in block.get("elements", [])]
    return out


def field(message: dict, label: str) -> str:
    for block in message["blocks"]:
        for f in block.get("fields", []):
            head, _, value = f["text"].partition("\n")
            if head == f"*{label}*":
                return value
    raise AssertionError(f"no field {label!r} in {message['blocks']}")


async def test_webhook_sends_block_kit_with_engine_severity_component_and_what_to_do(slack):
    alerter = Alerter(AlerterConfig(), engine_name="paper-eu", environ=webhook_env(slack))
    await alerter.start()
    try:
        alerter.alert("critical", "okx:drift:BTC-USDT-SWAP", "okx: position drift", "Redis -3, venue -2")
        await wait_for_stat(alerter, "sent", 1)
        message = slack.messages[0]
        header = message["blocks"][0]
        assert header["type"] == "header"
        assert "CRITICAL" in header["text"]["text"] and "paper-eu" in header["text"]["text"]
        assert "okx: position drift" in header["text"]["text"]
        assert field(message, "Engine") == "paper-eu" and field(message, "Severity") == "CRITICAL"
        assert field(message, "Component") == "`FillReconciler[okx]`"
        assert field(message, "Key") == "`okx:drift:BTC-USDT-SWAP`"
        texts = block_texts(message)
        assert "Redis -3, venue -2" in texts
        what = [t for t in texts if t.startswith("*What to do:*")]
        assert len(what) == 1 and "tradetree reconcile okx" in what[0] and "BTC-USDT-SWAP" in what[0]
        # the notification fallback carries the same facts, for clients that show no blocks
        assert message["text"].startswith("[CRITICAL] paper-eu: okx: position drift")
        assert "component: FillReconciler[okx]" in message["text"] and "what to do:" in message["text"]
        assert alerter.recent(1)[0].component == "FillReconciler[okx]"
    finally:
        await alerter.stop()


async def test_chat_post_message_sends_block_kit_and_a_named_component_wins(slack):
    config = AlerterConfig(slack_channel="#ops", slack_base_url=slack.api_url)
    alerter = Alerter(config, engine_name="live", environ={"TRADETREE_SLACK_TOKEN": TOKEN})
    await alerter.start()
    try:
        alerter.alert("warning", "operator:something_new", "Odd thing", "details", component="VenueGateway[okx]")
        alerter.alert("critical", "RootSupervisor:escalated", "supervisor RootSupervisor escalated", "3 restarts")
        await wait_for_stat(alerter, "sent", 2)
        first, second = slack.messages
        assert first["channel"] == "#ops" and isinstance(first["blocks"], list) and first["text"]
        assert field(first, "Engine") == "live" and field(first, "Severity") == "WARNING"
        assert field(first, "Component") == "`VenueGateway[okx]`"
        # a key of no known shape still tells the operator something to do
        assert any(t.startswith("*What to do:* Read the text above") for t in block_texts(first))
        assert field(second, "Component") == "`RootSupervisor`"
        assert any("SAFE MODE" in t and "clear-kill" in t for t in block_texts(second))
    finally:
        await alerter.stop()


async def test_alert_text_cannot_mention_or_link_in_slack(slack):
    alerter = Alerter(AlerterConfig(), environ=webhook_env(slack))
    await alerter.start()
    try:
        alerter.alert("warning", "k", "t", "<!channel> see <https://evil.example|docs>")
        await wait_for_stat(alerter, "sent", 1)
        body = [b for b in slack.messages[0]["blocks"] if b.get("text", {}).get("text", "").startswith("<!channel>")]
        assert body and body[0]["text"]["type"] == "plain_text"  # Slack reads no markup in plain text
    finally:
        await alerter.stop()


REDIS_PW, API_SECRET, SIGN, BEARER, BARE_KEY = "r3dis-Pa55", "sk-b84a1c55e9", "c2lnbmF0dXJl+/=", "eyJhbGciOi.x", \
    "ak-7f3c91d0e2"
LEAKY_TEXT = (f"connect redis://:{REDIS_PW}@127.0.0.1:6379/0 failed; GET /api/v5/account?apiKey={BARE_KEY}&"
              f"secret={API_SECRET} headers {{'OK-ACCESS-SIGN': '{SIGN}', 'Authorization': 'Bearer {BEARER}'}}; "
              f"login with {BARE_KEY} refused")


@pytest.mark.parametrize("transport", ["webhook", "chat"])
async def test_a_credential_in_an_alert_never_reaches_slack_the_log_or_recent(slack, caplog, transport):
    env = {"OKX_API_KEY": BARE_KEY}  # the venue key, known by value (redact_env): even bare it goes
    if transport == "webhook":
        config, env = AlerterConfig(), {**env, **webhook_env(slack)}
    else:
        config, env = AlerterConfig(slack_channel="#ops", slack_base_url=slack.api_url), \
            {**env, "TRADETREE_SLACK_TOKEN": TOKEN}
    alerter = Alerter(config, environ=env)
    await alerter.start()
    try:
        with caplog.at_level(logging.DEBUG):
            record = alerter.alert("critical", f"okx:poll_failing:{BARE_KEY}", f"okx: login as {BARE_KEY} failed",
                                   LEAKY_TEXT)
            await wait_for_stat(alerter, "sent", 1)
        sent = json.dumps(slack.messages)
        seen = {"slack": sent, "log": caplog.text, "recent": json.dumps([r.model_dump() for r in alerter.recent()]),
                "record": record.model_dump_json()}
        for where, what in seen.items():
            for secret in (REDIS_PW, API_SECRET, SIGN, BEARER, BARE_KEY):
                assert secret not in what, f"{secret!r} reached {where}"
        # what is left still says what happened
        assert "redis://***@127.0.0.1:6379/0" in record.text and "apiKey=***" in record.text
        assert "OK-ACCESS-SIGN" in sent and "login with *** refused" in sent
    finally:
        await alerter.stop()


def test_the_tree_hands_the_engine_name_to_the_alerter(monkeypatch):
    from types import SimpleNamespace

    from tradetree.config import EngineConfig
    from tradetree.core import ALERTER_ID
    from tradetree.supervisor.spec import iter_tree
    from tradetree.tree import build_root_spec

    monkeypatch.delenv("TRADETREE_SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("TRADETREE_SLACK_TOKEN", raising=False)
    endpoints = {"okx": SimpleNamespace(rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5",
                                        credentials=None)}
    config = EngineConfig.model_validate({"name": "paper-eu", "venues": [{"name": "okx"}]})
    spec = build_root_spec(config, redis_url="redis://127.0.0.1:1/0", endpoints=endpoints, ray_namespace="t")
    child = next(c for c in iter_tree(spec) if c.id == ALERTER_ID)
    actor = AlerterActor(*child.args, **child.kwargs)  # as the supervisor builds it
    assert actor._impl.engine_name == "paper-eu"


async def test_a_message_that_cannot_be_built_still_goes_out_as_text(slack, monkeypatch):
    import tradetree.actors.alerter as alerter_module

    def broken(*args, **kwargs):
        raise ValueError("no blocks today")

    monkeypatch.setattr(alerter_module, "slack_message", broken)
    alerter = Alerter(AlerterConfig(), engine_name="paper", environ=webhook_env(slack))
    await alerter.start()
    try:
        assert alerter.alert("critical", "okx:venue_paused", "okx paused", "drift").outcome == "queued"
        await wait_for_stat(alerter, "sent", 1)
        assert slack.messages[0]["text"].startswith("[CRITICAL] paper: okx paused")
        assert "blocks" not in slack.messages[0]
    finally:
        await alerter.stop()
