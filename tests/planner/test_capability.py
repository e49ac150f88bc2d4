"""The trainer's capability description: the rules, their one-line reasons, the vectorised form the
planner uses, and the process-group layout."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tokensmith.planner.capability import (
    Layout,
    groups,
    problems,
    rank_coordinates,
    rank_of,
    supported,
)

# (layout, n_layers, n_heads, n_kv_heads, gpus_per_node, world, expected fragment or None)
CASES = [
    (Layout(1, 1, 2, 2), 2, 4, 4, 8, 2, None),
    (Layout(2, 1, 1, 1), 2, 4, 4, 8, 2, None),
    (Layout(1, 2, 1, 1), 2, 4, 4, 8, 2, None),
    (Layout(2, 2, 1, 1, "selective"), 2, 4, 4, 8, 4, None),
    (Layout(8, 4, 2, 1, "full"), 80, 64, 8, 8, 64, None),
    (Layout(3, 1, 1), 2, 4, 4, 8, 3, "must divide the attention heads"),
    (Layout(4, 1, 1), 2, 8, 2, 8, 4, "key/value"),
    (Layout(4, 1, 1), 2, 8, 8, 2, 4, "processes per node"),
    (Layout(2, 1, 1), 2, 8, 8, 6, 2, None),
    (Layout(4, 1, 1), 2, 8, 8, 6, 4, "processes per node"),
    (Layout(1, 3, 1), 2, 4, 4, 8, 3, "exceeds the model's 2 layers"),
    (Layout(1, 2, 1, 2), 2, 4, 4, 8, 2, "ZeRO stage 2 cannot be combined with pipeline"),
    (Layout(2, 1, 1, 3), 2, 4, 4, 8, 2, "ZeRO stage 3 cannot be combined with tensor"),
    (Layout(2, 1, 1, 2), 2, 4, 4, 8, 2, None),
    (Layout(1, 2, 1, 1, "none", 2), 4, 4, 4, 8, 2, "virtual pipeline stages"),
    (Layout(2, 2, 1), 2, 4, 4, 8, 6, "world size 6 is not a multiple"),
]


@pytest.mark.parametrize(("layout", "layers", "heads", "kv", "per_node", "world", "expect"), CASES)
def test_rules(layout, layers, heads, kv, per_node, world, expect):
    found = problems(layout, layers, heads, kv, gpus_per_node=per_node, world_size=world)
    if expect is None:
        assert found == []
    else:
        assert any(expect in line for line in found), found
        assert all("\n" not in line for line in found)


def test_vectorised_form_agrees_with_the_reasons():
    """The planner's numpy mask and the operator's/trainer's reasons are the same rules."""
    tp = np.array([1, 2, 3, 4, 8, 16]).reshape(-1, 1, 1, 1)
    pp = np.array([1, 2, 4, 8, 64]).reshape(1, -1, 1, 1)
    zero = np.array([0, 1, 2, 3]).reshape(1, 1, -1, 1)
    virtual = np.array([1, 2]).reshape(1, 1, 1, -1)
    for layers, heads, kv, per_node in [(32, 32, 8, 8), (12, 12, 12, 4), (2, 4, 4, 8)]:
        mask = supported(tp, pp, zero, virtual, layers, heads, kv, per_node)
        for i, j, k, m in itertools.product(*(range(n) for n in mask.shape)):
            layout = Layout(
                int(tp.flat[i]), int(pp.flat[j]), 1, int(zero.flat[k]), "none", int(virtual.flat[m])
            )
            scalar = supported(
                layout.tensor, layout.pipeline, layout.zero_stage, layout.virtual_stages,
                layers, heads, kv, per_node,
            )  # fmt: skip
            expect = not problems(layout, layers, heads, kv, gpus_per_node=per_node)
            assert bool(mask[i, j, k, m]) == bool(scalar) == expect, layout


@pytest.mark.parametrize(
    ("tp", "pp", "dp"), [(1, 1, 4), (2, 1, 2), (1, 2, 2), (2, 2, 1), (2, 2, 2), (4, 2, 3)]
)
def test_rank_layout_round_trips_and_keeps_tensor_groups_consecutive(tp, pp, dp):
    layout = Layout(tp, pp, dp)
    for rank in range(layout.world_size):
        assert rank_of(*rank_coordinates(rank, layout), layout) == rank
    g = groups(layout)
    for group in g["tensor"]:
        assert group == list(range(group[0], group[0] + tp))  # consecutive: one node when tp | nproc
    for name, size in (("tensor", tp), ("pipeline", pp), ("data", dp)):
        assert all(len(group) == size for group in g[name])
        assert sorted(r for group in g[name] for r in group) == list(range(layout.world_size))


def test_for_world_derives_data_degree():
    assert Layout.for_world(8, tensor=2, pipeline=2).data == 2
    assert Layout.for_world(6, tensor=4).data == 0
