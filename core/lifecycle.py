"""The one lifecycle of a component (gateway, supervisor, model server, embedded Redis, ...).

    NEW ──start()──▶ STARTING ──▶ RUNNING ──stop()──▶ STOPPING ──▶ STOPPED
     │                  │            │                               ▲
     └──────────────────┴────────────┴── stop() before it ran ───────┘
                                     └──▶ ESCALATED   gave up (a supervisor past its restart intensity)

"Not started" is spelled ``NEW`` everywhere. A component keeps its own
rules about which calls each state allows (its messages name them); this
module only fixes the names, the values seen in stats and status, and
``check_transition`` for components that want the table enforced.
"""

from __future__ import annotations

import enum

from tradetree.core.errors import TradetreeError

__all__ = ["ComponentState", "InvalidComponentTransition", "ALLOWED_TRANSITIONS", "check_transition"]


class ComponentState(str, enum.Enum):
    NEW = "new"  # built, not started
    STARTING = "starting"  # start() in progress
    RUNNING = "running"  # at work
    STOPPING = "stopping"  # stop() in progress
    STOPPED = "stopped"  # stopped, or never ran and was stopped; final unless restarted
    ESCALATED = "escalated"  # gave up: its failures exceeded what it may handle itself


class InvalidComponentTransition(TradetreeError):
    """A lifecycle change ``ALLOWED_TRANSITIONS`` does not contain."""


ALLOWED_TRANSITIONS: dict[ComponentState, frozenset[ComponentState]] = {
    ComponentState.NEW: frozenset({ComponentState.STARTING, ComponentState.STOPPED}),
    ComponentState.STARTING: frozenset(
        {ComponentState.RUNNING, ComponentState.STOPPING, ComponentState.STOPPED, ComponentState.ESCALATED}
    ),
    ComponentState.RUNNING: frozenset({ComponentState.STOPPING, ComponentState.STOPPED, ComponentState.ESCALATED}),
    ComponentState.STOPPING: frozenset({ComponentState.STOPPED}),
    # A supervisor may be started again after a stop or an escalation.
    ComponentState.STOPPED: frozenset({ComponentState.STARTING}),
    ComponentState.ESCALATED: frozenset({ComponentState.STARTING, ComponentState.STOPPING, ComponentState.STOPPED}),
}


def check_transition(component: str, current: ComponentState, target: ComponentState) -> ComponentState:
    """``target`` if ``current -> target`` is allowed.

    Raises:
        InvalidComponentTransition: it is not; the message names the component and the states allowed.
    """
    allowed = ALLOWED_TRANSITIONS[current]
    if target not in allowed:
        names = ", ".join(sorted(s.value for s in allowed)) or "none"
        raise InvalidComponentTransition(
            f"{component}: cannot go from {current.value} to {target.value} (allowed: {names})"
        )
    return target
