"""The process grid of a layout: DeepSpeed's topology in the rank order `tokensmith.planner.capability`
prescribes (`rank = (pp_rank x DP + dp_rank) x TP + tp_rank`; TP innermost so TP groups stay on a node)."""

from __future__ import annotations

from typing import Any

from tokensmith.planner.capability import Layout


def topology(layout: Layout) -> Any:
    """DeepSpeed's `PipeModelDataParallelTopology`: axes (pipe, data, model), the last varying fastest,
    which is exactly capability's rank formula (tests/trainer/test_parallel_units.py checks it)."""
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    return PipeModelDataParallelTopology(num_pp=layout.pipeline, num_mp=layout.tensor, num_dp=layout.data)


def grid(layout: Layout) -> Any:
    """The process groups of `layout` (collective: every rank calls it, in the same order).

    DeepSpeed's `PipelineParallelGrid` is also the `mpu` the engine takes: its data-parallel group is
    where gradients are averaged and ZeRO partitions, its model-parallel group (pipe x model) where the
    gradient norm and overflow checks are reduced, its slice group the tensor-parallel group."""
    from deepspeed.runtime.pipe.topology import PipelineParallelGrid

    return PipelineParallelGrid(topology=topology(layout))
