"""Run a benchmark's child process on an earlier source tree, and prove it ran that tree.

``PYTHONPATH=TREE`` alone is not enough: the project venv's editable install
maps every ``tradetree.*`` name to this checkout, so on a tree from before the
one-package layout (``core/``, ``sim/`` imported bare, no ``tradetree/core``)
``import tradetree.sim...`` silently loads *this* checkout's code and the
"previous" column measures the current tree twice. A child started with
:func:`child_env` imports through :func:`module`, which picks the tree's own
layout, and refuses to run when a module did not come from the tree.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["child_env", "module", "tree_layout_prefix"]

_ENV = "TRADETREE_BENCH_TREE"


def child_env(tree: Path | None) -> dict[str, str]:
    """The environment of a child that runs ``tree`` (None: this checkout, as installed)."""
    env = dict(os.environ)
    env.pop(_ENV, None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        env[_ENV] = str(tree)
    return env


def tree_layout_prefix() -> str:
    """``"tradetree."`` for the one-package layout, ``""`` for a tree whose packages import bare."""
    tree = os.environ.get(_ENV)
    if tree is None or (Path(tree) / "tradetree" / "core").exists():
        return "tradetree."
    if tree not in sys.path:
        sys.path.insert(0, tree)
    return ""


def module(name: str) -> ModuleType:
    """``name`` (e.g. ``"sim.backtest.engine"``) from the tree this child runs.

    Raises:
        RuntimeError: the module was loaded from somewhere else than that tree.
    """
    mod = importlib.import_module(tree_layout_prefix() + name)
    tree = os.environ.get(_ENV)
    if tree is not None:
        where = Path(mod.__file__ or "").resolve()
        if not where.is_relative_to(Path(tree).resolve()):
            raise RuntimeError(f"{mod.__name__} came from {where}, not from the tree {tree}")
    return mod
