"""One lifecycle enum, with one spelling of "not started"."""

from __future__ import annotations

from tradetree.core.lifecycle import ComponentState


def test_values_are_what_stats_and_status_show():
    assert [s.value for s in ComponentState] == ["new", "starting", "running", "stopping", "stopped", "escalated"]
