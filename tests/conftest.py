"""Shared fixtures: a real Redis (integration), fakeredis (unit), one Ray per session.

The real Redis comes from ``$TRADETREE_TEST_REDIS_URL`` (``make test`` sets it,
starting a redis-server when none answers). Each test gets its own namespace,
so tests never see each other's keys and can share one server.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest

TEST_REDIS_URL = os.environ.get("TRADETREE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Engines the tests start take their state dir (the engine lock, engine.json) from here, not the
# checkout's .tradetree: a `make run` beside the suite, or two suites at once, must not collide.
os.environ.setdefault("TRADETREE_STATE_DIR", tempfile.mkdtemp(prefix="tradetree-test-state-"))


# The simulator fixture is shared by the adapter, actor and scenario tests.
pytest_plugins = ["tests.adapters.sim_helpers"]


@pytest.fixture
def namespace() -> str:
    return f"tt-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_url() -> str:
    """URL of a real Redis server; the test fails (not skips) if none answers."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"no Redis at {TEST_REDIS_URL} ({exc}); run the tests with `make test`")
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
async def real_redis(redis_url, namespace):
    """An async client on the real server; deletes the test's namespace afterwards."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    async for key in client.scan_iter(match=f"{namespace}:*", count=500):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def fake_redis():
    """An async fakeredis client with Lua support (fast unit tests)."""
    import fakeredis

    client = fakeredis.FakeAsyncRedis(decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session."""
    import ray

    from tradetree.runner import TREE_RAY_SYSTEM_CONFIG

    if not ray.is_initialized():
        ray.init(
            namespace=f"tradetree-test-{uuid.uuid4().hex[:6]}",
            include_dashboard=False,
            num_cpus=4,
            log_to_driver=False,
            configure_logging=False,
            _system_config=TREE_RAY_SYSTEM_CONFIG,  # the actors' priority, as `tradetree run` gives them
        )
    yield ray
    ray.shutdown()
