"""No secret travels as a Ray argument, and a cluster whose nodes lack one is refused before anything starts."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from ray import cloudpickle

from tradetree.config import EngineConfig
from tradetree.core import ConfigError, resolve_redis_locator
from tradetree.core.secrets import DRIVER_REDIS_PASSWORD_ENV, redis_password_sources
from tradetree.node_secrets import NodeSecrets, check_here, judge
from tradetree.runner import EngineRuntime
from tradetree.tree import build_root_spec

REDIS_PW = "redis-pw-7f3a9c"
KEYS = {"api_key": "key-51ab90", "secret_key": "secret-c0ffee77", "passphrase": "phrase-99xx11"}


def live_config(tmp_path, **redis) -> EngineConfig:
    secrets = tmp_path / "okx.secrets.yaml"
    secrets.write_text("".join(f"{k}: {v}\n" for k, v in KEYS.items()))
    return EngineConfig.model_validate({
        "name": "tt-secrets", "state_dir": str(tmp_path / "state"),
        "redis": {"url": f"redis://:{REDIS_PW}@127.0.0.1:1/0", **redis},
        "venues": [{"name": "okx", "rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/ws/v5",
                    "secrets_file": str(secrets)}],
        "strategies": [{"class": "MeanReversion", "version": "v1", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
                        "params": {"window_bars": 4, "entry_z": 0.5, "exit_z": 0.2, "stop_z": 6.0, "size": "1"}}],
    })


def spec_bytes(runtime: EngineRuntime) -> bytes:
    runtime.redis_url = runtime.config.redis.url  # as _start_redis leaves it, without contacting Redis
    runtime._resolve_live_endpoints()
    runtime.actor_redis_url = runtime._redis_for_actors()
    spec = build_root_spec(runtime.config, redis_url=runtime.actor_redis_url, endpoints=runtime.endpoints,
                           ray_namespace="tt-secrets")
    return cloudpickle.dumps(spec)


def test_on_a_cluster_the_tree_spec_names_the_sources_and_carries_no_secret(tmp_path) -> None:
    pw_file = tmp_path / "redis-password"
    config = live_config(tmp_path, password_file=str(pw_file), password_env="REDIS_PASSWORD")
    runtime = EngineRuntime(config, ray_address="127.0.0.1:1")
    blob = spec_bytes(runtime)
    for secret in (REDIS_PW, *KEYS.values()):
        assert secret.encode() not in blob, f"{secret} would travel as a Ray argument"
    assert redis_password_sources(runtime.actor_redis_url)["password_file"] == str(pw_file)
    assert runtime.actor_redis_url.encode() in blob and b"okx.secrets.yaml" in blob, "the sources are named instead"
    # What an actor on a node does with it: the password from the mounted file.
    pw_file.write_text(REDIS_PW + "\n")
    assert urlsplit(resolve_redis_locator(runtime.actor_redis_url, environ={})).password == REDIS_PW


def test_locally_an_inline_password_reaches_the_workers_through_the_environment(tmp_path, monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # this runtime is about to start Ray
    monkeypatch.delenv(DRIVER_REDIS_PASSWORD_ENV, raising=False)
    runtime = EngineRuntime(live_config(tmp_path))
    try:
        blob = spec_bytes(runtime)
        assert REDIS_PW.encode() not in blob
        assert os.environ[DRIVER_REDIS_PASSWORD_ENV] == REDIS_PW  # inherited by the raylet Ray starts next
        assert urlsplit(resolve_redis_locator(runtime.actor_redis_url)).password == REDIS_PW
    finally:
        os.environ.pop(DRIVER_REDIS_PASSWORD_ENV, None)


def test_a_node_reports_each_source_it_lacks_by_name_never_by_value(tmp_path, monkeypatch) -> None:
    config = live_config(tmp_path).model_copy(update={"venues": (
        live_config(tmp_path).venues[0].model_copy(update={"secrets_file": None}),)})
    runtime = EngineRuntime(config, ray_address="127.0.0.1:1")
    runtime.redis_url = config.redis.url
    locator = runtime._redis_for_actors()
    for var in ("OKX_API_KEY", "OKX_SECRET_KEY", "OKX_PASSPHRASE", "REDIS_PASSWORD", "TRADETREE_SLACK_WEBHOOK_URL",
                "TRADETREE_SLACK_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    problems, slack = check_here(config, locator)
    assert set(problems) == {"redis password", "venue okx credentials"} and not slack
    assert "OKX_API_KEY" in problems["venue okx credentials"] and "REDIS_PASSWORD" in problems["redis password"]
    monkeypatch.setenv("OKX_API_KEY", KEYS["api_key"])
    monkeypatch.setenv("OKX_SECRET_KEY", KEYS["secret_key"])
    monkeypatch.setenv("OKX_PASSPHRASE", KEYS["passphrase"])
    monkeypatch.setenv("REDIS_PASSWORD", REDIS_PW)
    monkeypatch.setenv("TRADETREE_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/xyz")
    assert check_here(config, locator) == ({}, True)


def test_judge_refuses_a_gap_and_a_slack_that_only_this_shell_has() -> None:
    ok = NodeSecrets("node a", {}, slack=True)
    with pytest.raises(ConfigError, match=r"(?s)node b: venue okx credentials: \$OKX_API_KEY.*nothing was started"):
        judge([ok, NodeSecrets("node b", {"venue okx credentials": "$OKX_API_KEY is not set"}, True)],
              slack_here=True)
    with pytest.raises(ConfigError, match=r"Slack is set in this shell but not on node\(s\) node b"):
        judge([ok, NodeSecrets("node b", {}, slack=False)], slack_here=True)
    assert judge([ok, NodeSecrets("node b", {}, slack=True)], slack_here=True) == []
    assert "log-only" in judge([NodeSecrets("node a", {}, slack=False)], slack_here=False)[0]


def test_runtime_env_is_rays_own_and_carries_no_secret(tmp_path) -> None:
    from tradetree.config import load_engine_config

    base = "venues: [{name: okx}]\n"
    path = tmp_path / "engine.yaml"
    path.write_text(base + "ray: {runtime_env: {env_vars: {TZ: UTC}, pip: [requests]}}\n")
    assert load_engine_config(path).ray.runtime_env["env_vars"] == {"TZ": "UTC"}
    path.write_text(base + "ray: {runtime_env: {env_vars: {OKX_API_KEY: abc}}}\n")
    with pytest.raises(ConfigError, match=r"ray\.runtime_env.*OKX_API_KEY.*look like secrets"):
        load_engine_config(path)
    path.write_text(base + "ray: {runtime_env: {workdir: .}}\n")
    with pytest.raises(ConfigError, match=r"unknown runtime_env field.*workdir"):
        load_engine_config(path)


def test_the_job_runtime_env_goes_to_ray_when_attaching(tmp_path, monkeypatch) -> None:
    import ray

    import tradetree.supervisor as sup

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the suite's own Ray may be up
    seen = {}
    monkeypatch.setattr(sup, "attach_ray", lambda address, namespace, **kw: seen.update(kw, address=address))
    from tradetree.config import RayJobConfig

    config = live_config(tmp_path).model_copy(update={"ray": RayJobConfig(runtime_env={"env_vars": {"TZ": "UTC"}})})
    EngineRuntime(config, ray_address="10.0.0.1:6379")._start_ray()
    assert seen["address"] == "10.0.0.1:6379" and seen["runtime_env"] == {"env_vars": {"TZ": "UTC"}}
