"""The one backoff policy reproduces each caller's former formula exactly."""

from __future__ import annotations

import math
import random

import pytest

from tradetree.core.backoff import BackoffPolicy


def test_ceiling_doubles_from_attempt_zero_and_stops_at_the_cap():
    p = BackoffPolicy(base_secs=0.5, cap_secs=3.0)
    assert [p.ceiling(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.ceiling(10_000) == 3.0  # a huge attempt neither overflows nor passes the cap


def test_no_jitter_needs_no_rng_and_has_no_cap_by_default():
    p = BackoffPolicy(base_secs=1.5)
    assert [p.delay(n) for n in range(4)] == [1.5, 3.0, 6.0, 12.0]
    assert p.cap_secs == math.inf


def test_jitter_without_rng_is_refused():
    with pytest.raises(ValueError, match="needs an rng"):
        BackoffPolicy(base_secs=1, cap_secs=2, jitter="equal").delay(0)


def test_negative_attempt_is_refused():
    with pytest.raises(ValueError, match="0-based"):
        BackoffPolicy(base_secs=1).delay(-1)


@pytest.mark.parametrize("kwargs", [
    {"base_secs": -1}, {"base_secs": 1, "cap_secs": -1}, {"base_secs": 1, "fraction": 1.5},
    {"base_secs": 1, "floor_secs": -0.1}, {"base_secs": 1, "jitter": "full"},
])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_proportional_matches_the_supervisors_former_formula():
    p = BackoffPolicy(base_secs=0.5, cap_secs=30.0, jitter="proportional", fraction=0.2)
    for attempt in range(12):
        for u in (0.0, 0.25, 0.5, 0.999):
            base = min(30.0, 0.5 * 2.0 ** attempt)
            former = min(max(base * (1.0 + 0.2 * (2.0 * u - 1.0)), 0.0), 30.0)
            assert p.delay_at(attempt, u) == former


def test_equal_jitter_matches_the_ws_clients_former_formula_draw_for_draw():
    p = BackoffPolicy(base_secs=0.25, cap_secs=8.0, jitter="equal")
    mine, theirs = random.Random(7), random.Random(7)
    for attempt in range(10):
        ceiling = min(8.0, 0.25 * 2 ** attempt)
        assert p.delay(attempt, mine) == theirs.uniform(ceiling / 2, ceiling)


def test_equal_jitter_with_a_floor_matches_the_kill_switchs_one_based_formula():
    # kill switch, attempt k >= 1: uniform(max(min, c/2), c) with c = min(max, min * 2**k).
    lo, hi = 0.5, 30.0
    p = BackoffPolicy(base_secs=2 * lo, cap_secs=hi, jitter="equal", floor_secs=lo)
    mine, theirs = random.Random(3), random.Random(3)
    for k in range(1, 10):
        c = min(hi, lo * 2.0 ** k)
        assert p.delay(k - 1, mine) == theirs.uniform(max(lo, c / 2), c)


def test_a_seeded_rng_gives_the_same_delays():
    p = BackoffPolicy(base_secs=1, cap_secs=60, jitter="proportional", fraction=0.5)
    a = [p.delay(n, random.Random(11)) for n in range(6)]
    b = [p.delay(n, random.Random(11)) for n in range(6)]
    assert a == b and all(0 <= d <= 60 for d in a)
