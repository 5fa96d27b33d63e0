"""Small actor classes for the real-Ray supervision tests (imported by Ray workers by path).

Health is steered through files in a control directory shared with the test:
``<dir>/<name>.unhealthy`` makes every incarnation of ``name`` fail its probe.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tradetree.core.types import HealthReport, ProbeResult


class Worker:
    """Implements the children contract and does 'work' (a counter) while not paused.

    Like any ``start_paused`` child it comes up paused when told so: the
    supervisor's ``pause()`` after ``start()`` is only a backstop.
    """

    def __init__(self, name: str, control_dir: str, start_paused: bool = False) -> None:
        self._name = name
        self._control = Path(control_dir)
        self._events: list[str] = []
        self._paused = start_paused
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._events.append("start")
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        self._events.append("stop")
        if self._task is not None:
            self._task.cancel()

    async def pause(self, reason: str) -> None:
        self._events.append("pause")
        self._paused = True

    async def resume(self) -> None:
        self._events.append("resume")
        self._paused = False

    async def check_health(self) -> HealthReport:
        ok = not (self._control / f"{self._name}.unhealthy").exists()
        self._events.append("probe:ok" if ok else "probe:fail")
        return HealthReport(
            component=self._name, ts_ms=0, probes=(ProbeResult(name="mechanism", ok=ok, detail="" if ok else "marked"),)
        )

    async def work_count(self) -> int:
        return self._count

    async def events(self) -> list[str]:
        return list(self._events)

    async def _work(self) -> None:
        while True:
            if not self._paused:
                self._count += 1
            await asyncio.sleep(0.02)


def write_marker(path: str, reason: str) -> None:
    """An on_escalate hook the test can observe from outside the actor."""
    Path(path).write_text(reason)
