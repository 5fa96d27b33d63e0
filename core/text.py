"""The one decoder for values that come back from Redis as bytes or str."""

from __future__ import annotations

from typing import Any, overload

__all__ = ["as_text", "as_opt_text"]


def as_text(value: Any) -> str:
    """``value`` as text: bytes decoded as UTF-8, anything else through ``str``.

    Redis clients return bytes or str depending on ``decode_responses``; every
    reader goes through this so both kinds of client read the same.

    Raises:
        UnicodeDecodeError: bytes that are not UTF-8.
    """
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


@overload
def as_opt_text(value: None) -> None: ...
@overload
def as_opt_text(value: Any) -> str | None: ...
def as_opt_text(value: Any) -> str | None:
    """``as_text(value)``, or None for None (a missing hash field or key)."""
    return None if value is None else as_text(value)
