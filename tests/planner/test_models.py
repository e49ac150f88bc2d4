"""Reliability, memory, energy, shapes and the vectorised search, against published figures."""

from __future__ import annotations

import numpy as np
import pytest

from tokensmith.planner import arch, energy, memory, performance, reliability, search
from tokensmith.planner.arch import ModelConfig
from tokensmith.planner.gpus import CATALOGUE, get_gpu
from tokensmith.planner.shapes import shape_for_params


@pytest.mark.parametrize(
    ("mtbf_min", "delta_min", "daly_min", "young_min"),
    [(24 * 60, 5, 116.7, 120.0), (6 * 60, 5, 56.7, 60.0), (15, 5, 9.1, 12.2)],
)
def test_daly_and_young_match_dalys_figure_captions(mtbf_min, delta_min, daly_min, young_min) -> None:
    assert float(reliability.daly_interval(delta_min, mtbf_min)) == pytest.approx(daly_min, abs=0.05)
    assert reliability.young_interval(delta_min, mtbf_min) == pytest.approx(young_min, abs=0.05)


def test_daly_interval_is_mtbf_when_checkpoints_take_longer_than_two_mtbf() -> None:
    assert float(reliability.daly_interval(30.0, 10.0)) == 10.0


def test_wall_time_without_failures_is_solve_plus_checkpoints() -> None:
    solve, tau, delta = 100.0, 2.0, 0.1
    got = float(reliability.wall_time(solve, tau, delta, 0.2, 1e12))
    assert got == pytest.approx(solve * (1 + delta / tau), rel=1e-6)


def test_wall_time_grows_with_failures() -> None:
    slow = float(reliability.wall_time(100.0, 2.0, 0.1, 0.2, 5.0))
    assert slow > float(reliability.wall_time(100.0, 2.0, 0.1, 0.2, 50.0)) > 100.0


def test_llama3_failure_rate() -> None:
    # 419 interruptions in 54 days on 16,384 GPUs: one every 3.09 h for the job.
    assert pytest.approx(50_700, rel=1e-3) == reliability.LLAMA3_GPU_HOURS_PER_FAILURE
    assert float(
        reliability.job_mtbf_hours(reliability.LLAMA3_GPU_HOURS_PER_FAILURE, 16_384)
    ) == pytest.approx(3.09, abs=0.01)


@pytest.mark.parametrize(("zero", "gb"), [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_model_states_match_the_paper_example(zero, gb) -> None:
    # Rajbhandari et al. 2019, Fig. 1: 7.5B parameters, N_d = 64.
    got = memory.model_state_bytes(7.5e9, 1, 1, 64, zero) / 1e9
    assert got == pytest.approx(gb, abs=0.06)


def test_zero_shards_over_data_parallel_degree_not_world_size() -> None:
    # TP 8 x DP 8 = 64 GPUs: ZeRO-3 divides by 8 x 8, not 64 x 64 or 64 alone on the full count.
    assert memory.model_state_bytes(64e9, 8, 1, 8, 3) == pytest.approx(16 * 64e9 / 64)


def test_recomputation_cuts_activation_memory() -> None:
    args = dict(seq=4096, micro_batch=4, d_model=4096, n_layers=32, vocab=32000, tp=1, pp=1, microbatches=8)
    full = memory.activation_bytes(**args, recompute=0)
    kept = memory.activation_bytes(**args, recompute=1)
    # Korthikanti et al. 2022: 34 sbh per layer without, 2 sbh with full recomputation; fp32 logits
    # (their gradient written in place).
    assert full == pytest.approx(32 * 34 * 4096 * 4 * 4096 + 4 * 4096 * 4 * 32000)
    assert kept < full / 5


@pytest.mark.parametrize(("params", "layers", "d_model"), [(6.74e9, 32, 4096), (13.0e9, 40, 5120)])
def test_shapes_recover_llama2_architectures(params, layers, d_model) -> None:
    cfg = shape_for_params(params)
    assert (cfg.n_layers, cfg.d_model, cfg.ffn_hidden) == (
        layers,
        d_model,
        ModelConfig(preset=f"llama-{round(params / 1e9)}b").ffn_hidden,
    )
    assert (
        arch.param_counts(cfg).total
        == arch.param_counts(ModelConfig(preset=f"llama-{round(params / 1e9)}b")).total
    )


@pytest.mark.parametrize("params", [2e8, 1e9, 3e9, 7e9, 34e9, 70e9, 175e9, 405e9, 1e12])
def test_shapes_hit_the_target_and_are_valid(params) -> None:
    cfg = shape_for_params(params)
    total = arch.param_counts(cfg).total
    assert total == pytest.approx(params, rel=0.02)
    assert cfg.d_model % cfg.n_heads == 0 and cfg.n_heads % cfg.kv_heads == 0
    assert 40 <= cfg.d_model / cfg.n_layers <= 200  # published aspect ratios
    non_emb = shape_for_params(params, non_embedding=True)
    assert arch.param_counts(non_emb).non_embedding == pytest.approx(params, rel=0.02)


def test_gpu_catalogue_has_the_required_gpus_and_names_are_case_insensitive() -> None:
    for name in ("A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIE", "H200", "B200", "MI300X", "L40S"):
        assert get_gpu(name.lower()).name == name
    assert get_gpu("h100").name == "H100-SXM"
    assert get_gpu("A100-80GB").peak_tflops == 312
    with pytest.raises(ValueError, match="unknown GPU"):
        get_gpu("Z100")
    assert len(CATALOGUE) >= 8


def test_gpu_draw_reaches_tdp_at_training_utilisation() -> None:
    assert float(energy.gpu_draw_watts(400, 0.39)) == 400
    assert float(energy.gpu_draw_watts(400, 0.0)) == pytest.approx(100)


def _model(cfg: ModelConfig) -> performance.ModelScalars:
    return performance.ModelScalars(
        float(arch.param_counts(cfg).total),
        arch.forward_flops_per_token(cfg),
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.kv_heads,
        cfg.seq_len,
        cfg.vocab_size,
    )


def test_vectorised_search_equals_one_by_one_evaluation() -> None:
    cfg = ModelConfig(preset="llama-7b")
    gpu = get_gpu("A100-80GB")
    econ = search.Economics(price_per_gpu_hour=2.0)
    grid = search.candidate_grid([8, 64, 256])
    res = search.evaluate(grid, _model(cfg), gpu, 8, 1e11, 4e6, econ)
    flat = search.flat_grid(grid)
    assert len(res["fits"]) == search.grid_size(grid) == len(flat["gpus"])
    rng = np.random.default_rng(0)
    for i in rng.choice(search.grid_size(grid), 25, replace=False):
        one = {k: flat[k][i : i + 1] for k in search.AXES}
        assert all(res[k][i] == flat[k][i] for k in search.AXES)
        row = res.row(int(i))
        assert all(row[k] == res[k][i].item() for k in res)
        single = search.evaluate(one, _model(cfg), gpu, 8, 1e11, 4e6, econ)
        for key in ("fits", "memory_gb", "step_seconds", "cost_usd", "wall_hours", "energy_mwh"):
            assert single[key][0] == pytest.approx(res[key][i], rel=1e-12), key


def test_pareto_front_is_monotone_and_undominated() -> None:
    cfg = ModelConfig(preset="llama-7b")
    res = search.evaluate(
        search.candidate_grid(search.gpu_count_grid(8)),
        _model(cfg),
        get_gpu("H100-SXM"),
        8,
        2e12,
        4e6,
        search.Economics(price_per_gpu_hour=3.0),
    )
    front = search.pareto_front(res)
    assert front.size >= 3
    assert np.all(np.diff(res["wall_hours"][front]) >= 0)
    assert np.all(np.diff(res["cost_usd"][front]) < 0)
    fits = np.flatnonzero(res["fits"])
    for i in front:
        dominated = (res["wall_hours"][fits] < res["wall_hours"][i]) & (
            res["cost_usd"][fits] < res["cost_usd"][i]
        )
        assert not dominated.any()


def test_70b_does_not_fit_one_node_and_needs_sharding_on_eight() -> None:
    cfg = ModelConfig(preset="llama-70b")
    one_node = search.evaluate(
        search.candidate_grid([8]), _model(cfg), get_gpu("A100-80GB"), 8, 1e12, 4e6, search.Economics(2.0)
    )
    assert not one_node["fits"].any()  # 70e9 x 16 bytes = 1.1 TB > 8 x 80 GB
    res = search.evaluate(
        search.candidate_grid([64]), _model(cfg), get_gpu("A100-80GB"), 8, 1e12, 4e6, search.Economics(2.0)
    )
    fitting = np.flatnonzero(res["fits"])
    assert fitting.size > 0
    # No unsharded (TP=PP=1, ZeRO<3) shape holds 70B x 16 bytes in 80 GB.
    assert not any(res["tp"][i] == 1 and res["pp"][i] == 1 and res["zero"][i] < 3 for i in fitting)
