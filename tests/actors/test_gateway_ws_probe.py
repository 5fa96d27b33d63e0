"""The gateway's WS probes: a client reconnecting by itself is not ready, but not a reason to restart."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tradetree.actors.gateway import _probe_ws
from tradetree.adapters.okx import WsState


def _ws(state: WsState, *, connected: bool = False, logged_in: bool = False):
    return SimpleNamespace(state=state, connected=connected, logged_in=logged_in, reconnects=3, last_error="cut")


def test_connected_passes():
    assert _probe_ws("ws_public", _ws(WsState.CONNECTED, connected=True)).ok
    assert _probe_ws("ws_private", _ws(WsState.CONNECTED, connected=True, logged_in=True)).ok


@pytest.mark.parametrize("state", [WsState.BACKOFF, WsState.CONNECTING])
def test_reconnecting_fails_readiness_only(state):
    probe = _probe_ws("ws_private", _ws(state))
    assert not probe.ok and not probe.liveness and "reconnects 3" in probe.detail


@pytest.mark.parametrize("state", [WsState.FAILED, WsState.CLOSED, WsState.IDLE])
def test_a_client_whose_loop_ended_fails_liveness(state):
    probe = _probe_ws("ws_private", _ws(state))
    assert not probe.ok and probe.liveness


def test_private_session_without_login_is_not_ready():
    assert not _probe_ws("ws_private", _ws(WsState.CONNECTED, connected=True, logged_in=False)).ok
    assert not _probe_ws("ws_private", None).ok
