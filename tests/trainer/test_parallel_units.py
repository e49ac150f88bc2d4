"""Pure parts of tensor/pipeline parallelism: the process grid follows capability's rank layout, stages
are balanced by FLOPs, DeepSpeed's 1F1B schedule idles exactly the planner's bubble, and the per-rank
model-state accounting is the planner's formula."""

from __future__ import annotations

import itertools

import pytest

from tokensmith.planner import capability
from tokensmith.planner.arch import ModelConfig, param_counts
from tokensmith.planner.memory import model_state_bytes
from tokensmith.trainer.config import TrainerConfig
from tokensmith.trainer.parallel import accounting, groups, pipeline


@pytest.mark.parametrize(
    ("tp", "pp", "dp"), [(2, 1, 1), (1, 2, 1), (2, 2, 1), (2, 2, 2), (4, 2, 3), (8, 4, 2)]
)
def test_deepspeed_topology_is_capabilitys_rank_layout(tp: int, pp: int, dp: int) -> None:
    layout = capability.Layout(tensor=tp, pipeline=pp, data=dp)
    topo = groups.topology(layout)
    for rank in range(layout.world_size):
        c = topo.get_coord(rank)
        assert (c.pipe, c.data, c.model) == capability.rank_coordinates(rank, layout)
    # TP groups are consecutive ranks (one node when TP divides the processes per node).
    assert topo.get_axis_comm_lists("model") == capability.groups(layout)["tensor"]
    assert sorted(map(sorted, topo.get_axis_comm_lists("data"))) == sorted(capability.groups(layout)["data"])


def test_stages_balance_flops_with_embedding_and_head_counted() -> None:
    cfg = ModelConfig(preset="gpt2-124m")
    costs = pipeline.layer_costs(cfg)
    assert len(costs) == cfg.n_layers + 3
    for stages in (2, 3, 4, 6):
        bounds = pipeline.stage_bounds(costs, stages)
        assert bounds[0] == 0 and bounds[-1] == len(costs) and len(bounds) == stages + 1
        loads = [sum(costs[a:b]) for a, b in itertools.pairwise(bounds)]
        # No contiguous cut does better than the most loaded stage by more than one block.
        assert max(loads) <= sum(costs) / stages + max(costs)
    # The head (2 d V FLOPs/token, ~2.2 blocks of GPT-2 small) takes the place of blocks on the last stage.
    two = pipeline.stage_bounds(costs, 2)
    assert two[1] > (cfg.n_layers + 3) // 2


@pytest.mark.parametrize(("m", "p"), [(1, 2), (2, 2), (4, 2), (8, 4), (3, 3)])
def test_deepspeed_1f1b_schedule_idles_the_planners_bubble(m: int, p: int) -> None:
    """Every stage of DeepSpeed's TrainSchedule computes in 2m of its 2(m + p - 1) slots: the idle
    fraction is the (p - 1) / (m + p - 1) the planner charges (Narayanan et al. 2021, §2.2)."""
    from deepspeed.runtime.pipe.schedule import BackwardPass, ForwardPass, TrainSchedule

    for stage in range(p):
        steps = list(TrainSchedule(micro_batches=m, stages=p, stage_id=stage).steps())
        busy = sum(any(isinstance(c, ForwardPass | BackwardPass) for c in step) for step in steps)
        assert busy == 2 * m
        assert 1 - busy / len(steps) == pytest.approx((p - 1) / (m + p - 1))


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
@pytest.mark.parametrize(("tp", "pp", "dp"), [(1, 1, 8), (2, 1, 4), (2, 4, 2), (8, 8, 16)])
def test_state_bytes_is_the_planners_formula_at_mixed_precision(zero: int, tp: int, pp: int, dp: int) -> None:
    params = param_counts(ModelConfig(preset="llama-7b")).total
    ours = accounting.state_bytes("bf16", zero, params / (tp * pp), dp)
    assert sum(ours.values()) == pytest.approx(model_state_bytes(params, tp, pp, dp, zero), rel=1e-12)
    fp32 = accounting.state_bytes("fp32", zero, params / (tp * pp), dp)
    assert fp32["params"] == 2 * ours["params"] and fp32["grads"] == 2 * ours["grads"]


def _cfg(**model: object) -> TrainerConfig:
    base = {"preset": "tiny", "vocab_size": 512, "d_model": 32, "n_heads": 2, "n_kv_heads": 2, "seq_len": 32}
    return TrainerConfig.model_validate({"model": {**base, **model}})


@pytest.mark.parametrize("tied", [True, False])
def test_local_parameters_add_up_to_the_model(tied: bool) -> None:
    cfg = _cfg(tie_embeddings=tied)
    total = param_counts(cfg.model).total
    emb = cfg.model.vocab_size * cfg.model.d_model
    one = capability.Layout(1, 1, 1)
    assert accounting.local_parameters(cfg, one, 0) == total
    pp2 = capability.Layout(1, 2, 1)
    stages = [accounting.local_parameters(cfg, pp2, s) for s in range(2)]
    assert sum(stages) == total + (emb if tied else 0)  # the tied table lives on both end stages
    tp2 = capability.Layout(2, 1, 1)
    replicated = total - sum(
        n
        for name, n in _sizes(cfg).items()
        if name.endswith(accounting.SHARDED_SUFFIXES)  # sharded halves
    )
    assert accounting.local_parameters(cfg, tp2, 0) == replicated + (total - replicated) // 2


def _sizes(cfg: TrainerConfig) -> dict[str, int]:
    import torch

    from tokensmith.trainer.model import Transformer

    with torch.device("meta"):
        return {n: p.numel() for n, p in Transformer(cfg.model).named_parameters()}


@pytest.mark.parametrize(
    ("saved", "now", "zero", "portable", "route"),
    [
        ({"world_size": 2}, (2, 1, 1), 2, False, "native"),
        ({"world_size": 2, "tensor": 2}, (2, 2, 1), 1, True, "native"),
        ({"world_size": 2}, (1, 1, 1), 2, False, "universal"),
        ({"world_size": 2}, (1, 1, 1), 0, False, "native"),  # ZeRO-0 state is whole
        ({"world_size": 2, "tensor": 2}, (1, 1, 1), 1, True, "portable"),
        ({"world_size": 2, "pipeline": 2}, (2, 1, 1), 1, True, "portable"),
        ({"world_size": 2}, (2, 1, 2), 1, False, "universal-portable"),
        ({"world_size": 4, "tensor": 2, "pipeline": 2}, (4, 1, 2), 0, True, "portable"),
    ],
)
def test_resume_route(
    saved: dict[str, int], now: tuple[int, int, int], zero: int, portable: bool, route: str
) -> None:
    from tokensmith.trainer.parallel.portable import resume_route

    assert resume_route(saved, now, zero, portable) == route


def test_resume_route_refuses_a_zero0_data_parallel_checkpoint_under_pipeline() -> None:
    from tokensmith.core.errors import ConfigError
    from tokensmith.trainer.parallel.portable import resume_route

    with pytest.raises(ConfigError, match=r"parallelism\.tensor=1 and parallelism\.pipeline=1"):
        resume_route({"world_size": 2}, (2, 1, 2), 0, False)
