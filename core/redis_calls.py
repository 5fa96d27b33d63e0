"""One translation of redis-py errors into the project's store errors, for code outside ``RedisStore``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tradetree.core.errors import StoreError, StoreUnavailable

__all__ = ["redis_call"]

T = TypeVar("T")


async def redis_call(awaitable: Awaitable[T], what: str = "") -> T:
    """Await a redis-py call and return its result.

    Raises:
        StoreUnavailable: Redis did not answer (connection refused or lost, timeout).
        StoreError: any other Redis error.
    """
    where = f" ({what})" if what else ""
    try:
        return await awaitable
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis unavailable{where}: {exc}") from None
    except RedisError as exc:
        raise StoreError(f"Redis error{where}: {exc}") from None
