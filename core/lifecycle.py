"""The state names of a component (gateway, supervisor, model server, embedded Redis, ...).

    NEW ──start()──▶ STARTING ──▶ RUNNING ──stop()──▶ STOPPING ──▶ STOPPED
     │                  └── start failed ──────────────────────────────▶ ▲
     └── stop() before it ran ───────────────────────────────────────────┘
    RUNNING ──▶ ESCALATED   gave up (a supervisor past its restart intensity)

"Not started" is spelled ``NEW`` everywhere. This module fixes only the
names and the values seen in stats and status; each component keeps its
own rules about which changes and calls each state allows (its messages
name them). Not every component passes through every state: the gateway
and the reconciler go STARTING -> RUNNING -> STOPPED, the risk monitor,
the model server and embedded Redis go NEW -> RUNNING -> STOPPED, and only
a supervisor is STOPPING, ESCALATED, or started again once stopped or
escalated.
"""

from __future__ import annotations

import enum

__all__ = ["ComponentState"]


class ComponentState(str, enum.Enum):
    NEW = "new"  # built, not started
    STARTING = "starting"  # start() in progress
    RUNNING = "running"  # at work
    STOPPING = "stopping"  # stop() in progress
    STOPPED = "stopped"  # stopped, or never ran and was stopped; final unless restarted
    ESCALATED = "escalated"  # gave up: its failures exceeded what it may handle itself
