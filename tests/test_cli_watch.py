"""The run loop's watcher and the control API's attach preparation (pure parts, no tree)."""

from __future__ import annotations

import pytest

from tradetree.cli import _Watch
from tradetree.control import ControlError, connect, find_engine
from tradetree.core import StoreUnavailable
from tradetree.supervisor import prepare_ray_auth as _prepare_auth


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def test_the_watcher_shows_an_outage_with_its_start_and_goes_on():
    clock = Clock()
    watch = _Watch(clock)
    snap = {"strategies": {"A": "RUNNING"}}
    assert watch.read(lambda: snap) == (snap, "")

    def down():
        raise StoreUnavailable("Redis at redis://127.0.0.1:1/0 does not answer")

    last, banner = watch.read(down)
    assert last == snap and "unreachable since" in banner and "(0s)" in banner and "StoreUnavailable" in banner
    clock.t += 7
    last, banner = watch.read(down)
    assert last == snap and "(7s)" in banner, "the outage keeps its start"
    assert watch.read(lambda: {"strategies": {}}) == ({"strategies": {}}, ""), "and clears when Redis is back"


def test_any_failure_of_a_read_is_shown_not_raised():
    watch = _Watch(Clock())

    def broken():
        raise RuntimeError("actor died")

    assert watch.read(broken)[0] is None and "RuntimeError: actor died" in watch.read(broken)[1]


def test_token_auth_is_turned_on_when_the_engine_records_it(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_text("t" * 32)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert "token" in _prepare_auth("token")
    import os

    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_token_auth_without_a_token_is_a_clear_refusal(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ControlError, match="ray get-auth-token"):
        _prepare_auth("token")


def test_an_explicit_auth_mode_is_respected(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "from the environment" in _prepare_auth("token")


def test_no_address_and_no_engine_is_a_clear_error(monkeypatch, tmp_path):
    import ray

    from tradetree.config import EngineConfig

    if ray.is_initialized():
        pytest.skip("this process is attached to Ray already")
    with pytest.raises(ControlError, match="no Ray address"):
        connect(None, "tradetree")
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = EngineConfig.model_validate({"venues": [{"name": "okx"}], "state_dir": str(tmp_path)})
    with pytest.raises(ControlError, match="no running engine found") as err:
        find_engine(config)
    assert str(tmp_path) in str(err.value) and "--address" in str(err.value)


def test_positions_without_a_running_engine_starts_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    from tradetree.cli import main

    monkeypatch.delenv("REDIS_URL", raising=False)
    started = []
    monkeypatch.setattr("tradetree.core.EmbeddedRedis.start", lambda self: started.append("redis"))
    cfg = tmp_path / "engine.yaml"
    cfg.write_text(f"venues: [{{name: okx}}]\nstate_dir: {tmp_path / 'state'}\n")
    assert main(["positions", "--config", str(cfg)]) == 3
    err = capsys.readouterr().err
    assert "no Redis to read" in err and "--redis-url" in err
    assert started == [] and not (tmp_path / "state").exists()


def test_a_busy_port_is_refused_naming_its_config_field_before_anything_starts(tmp_path, monkeypatch):
    import socket

    from tradetree.config import EngineConfig
    from tradetree.core import ConfigError
    from tradetree.runner import EngineRuntime

    started = []
    monkeypatch.setattr("tradetree.core.EmbeddedRedis.start", lambda self: started.append("redis"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = EngineConfig.model_validate({"venues": [{"name": "okx"}], "state_dir": str(tmp_path),
                                              "metrics": {"enabled": True, "port": port}})
        runtime = EngineRuntime(config, include_dashboard=False)
        with pytest.raises(ConfigError, match=f"metrics.port {port}"):
            runtime.start()
    assert started == []
    second = EngineRuntime(config, include_dashboard=False)
    second._lock.acquire()  # the refused start released the state dir
    second._lock.release()
