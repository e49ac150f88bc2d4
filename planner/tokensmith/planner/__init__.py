"""Planner: scaling laws, model shapes, FLOPs, memory, cluster search, costs, energy and failures.

`from tokensmith.planner import plan` gives the `plan(...)` function (see `planning.py`); it and the
other public names load lazily so that importing this package (the CLI does) pulls in no numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokensmith.planner.planning import Plan, PlanError, plan, sweep

__all__ = ["Plan", "PlanError", "plan", "sweep"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tokensmith.planner import planning

        return getattr(planning, name)
    raise AttributeError(f"module 'tokensmith.planner' has no attribute {name!r}")
