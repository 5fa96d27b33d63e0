"""The one backoff policy: exponential, capped, with a declared kind of jitter.

Attempts are 0-based: ``delay(0, rng)`` is the wait before the first retry.
The un-jittered delay of attempt ``n`` is ``c(n) = min(cap_secs, base_secs * 2**n)``;
then, by ``jitter``:

- ``"none"``: ``c(n)``.
- ``"proportional"``: ``c(n) * (1 + fraction * (2u - 1))``, clamped to ``[0, cap_secs]``
  (the supervisor's restarts: spread around the nominal delay).
- ``"equal"``: uniform in ``[max(floor_secs, c(n)/2), c(n)]`` (reconnects and
  the kill switch: half fixed, half random, so clients dropped together do not
  come back in lockstep).

``u`` is one ``rng.random()`` draw per delay (none for ``"none"``), so a seeded
RNG gives the same delays every run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["BackoffPolicy", "Jitter"]

Jitter = Literal["none", "proportional", "equal"]

# 2.0**64 times any sane base exceeds any cap; beyond it, float math would overflow to inf.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class BackoffPolicy:
    """Delays before successive retries. See the module docstring for the formula.

    Raises (on construction):
        ValueError: a negative base, cap or floor, a fraction outside [0, 1],
            or an unknown jitter kind. A cap below the base is allowed: every delay is the cap.
    """

    base_secs: float
    cap_secs: float = math.inf
    jitter: Jitter = "none"
    fraction: float = 0.0  # only for "proportional"
    floor_secs: float = 0.0  # only for "equal"

    def __post_init__(self) -> None:
        if self.base_secs < 0 or self.cap_secs < 0 or self.floor_secs < 0:
            raise ValueError("backoff base_secs, cap_secs and floor_secs must be >= 0")
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"backoff fraction must be within [0, 1], got {self.fraction}")
        if self.jitter not in ("none", "proportional", "equal"):
            raise ValueError(f"unknown backoff jitter {self.jitter!r}")

    def ceiling(self, attempt: int) -> float:
        """``min(cap_secs, base_secs * 2**attempt)``, the un-jittered delay of ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0 (attempts are 0-based)")
        return min(self.cap_secs, self.base_secs * (2.0 ** min(attempt, _MAX_EXPONENT)))

    def delay_at(self, attempt: int, unit_random: float) -> float:
        """The delay of ``attempt`` (0-based) for a draw ``unit_random`` in [0, 1)."""
        ceiling = self.ceiling(attempt)
        if self.jitter == "proportional":
            delay = ceiling * (1.0 + self.fraction * (2.0 * unit_random - 1.0))
            return min(max(delay, 0.0), self.cap_secs)
        if self.jitter == "equal":
            low = max(self.floor_secs, ceiling / 2)
            return low + (ceiling - low) * unit_random
        return ceiling

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay of ``attempt`` (0-based), drawing from ``rng`` once when the policy jitters.

        Raises:
            ValueError: ``attempt`` < 0, or a jittering policy without ``rng``.
        """
        if self.jitter == "none":
            return self.delay_at(attempt, 0.0)
        if rng is None:
            raise ValueError(f"a backoff with {self.jitter} jitter needs an rng")
        return self.delay_at(attempt, rng.random())
