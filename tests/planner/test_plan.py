"""The `plan(...)` library function: resolution of inputs, cluster rules, budgets and sweeps."""

from __future__ import annotations

import pytest

from tokensmith.planner import Plan, PlanError, plan, sweep
from tokensmith.planner.arch import ModelConfig, param_counts
from tokensmith.planner.scaling import CHINCHILLA, CHINCHILLA_REFIT, KAPLAN


def test_compute_alone_gives_the_laws_optimum() -> None:
    p = plan(compute=1e22)
    opt = CHINCHILLA.optimal(1e22)
    assert isinstance(p, Plan)
    assert p.params == pytest.approx(opt.params, rel=0.03)
    assert p.flops == pytest.approx(1e22, rel=1e-9)  # tokens follow from the shaped model's exact count
    assert p.predicted_loss == pytest.approx(opt.loss, abs=2e-3)


def test_refit_law_prefers_fewer_tokens_per_param_at_large_compute() -> None:
    p = plan(compute=1e24, law="chinchilla-refit")
    assert p.params == pytest.approx(CHINCHILLA_REFIT.optimal(1e24).params, rel=0.03)
    assert 15 < p.tokens_per_param < 22


def test_kaplan_counts_non_embedding_parameters() -> None:
    p = plan(compute=1e21, law="kaplan")
    assert p.non_embedding_params == pytest.approx(KAPLAN.optimal(1e21).params, rel=0.03)
    assert p.law_flops == pytest.approx(1e21, rel=1e-9)
    assert p.params > p.non_embedding_params


def test_params_alone_gives_the_laws_tokens() -> None:
    p = plan(params="7B")
    assert p.tokens == pytest.approx(CHINCHILLA.optimal_tokens(p.params), rel=1e-9)
    t = plan(params="7B", law="tokens-per-param")
    assert t.tokens_per_param == pytest.approx(20.0)
    k = plan(params="7B", tokens_per_param=30)
    assert k.law == "tokens-per-param" and k.tokens_per_param == pytest.approx(30.0)


def test_two_of_params_tokens_compute_give_the_third() -> None:
    p = plan(params=7e9, compute=8.4e22)
    assert p.flops == pytest.approx(8.4e22, rel=1e-9)
    t = plan(tokens=1e12, compute=4.2e22)
    assert 6 * t.params * t.tokens == pytest.approx(4.2e22, rel=0.03)
    ok = plan(params=7e9, tokens=1e12, compute=4.2e22)  # consistent within 5%
    assert ok.tokens == 1e12


def test_tokens_alone_gives_the_optimal_size() -> None:
    p = plan(tokens="1T")
    assert p.params == pytest.approx(CHINCHILLA.optimal_params_for_tokens(1e12), rel=0.03)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(params="7B", tokens="1T", compute=1e20), "contradictory"),
        (dict(params=-1), "positive"),
        (dict(params=0), "positive"),
        (dict(gpu="Z100"), "unknown GPU"),
        (dict(law="nope"), "unknown scaling law"),
        (dict(mfu=1.5), "fraction"),
        (dict(pue=0.9), "at least 1"),
        (dict(params="7B", budget_usd=1e-5), "does not buy one optimizer step"),
        (dict(params="70B", gpus=64, deadline_days=1e-9), "does not buy one optimizer step"),
        (dict(params="7B", tokens="1T", gpus=8, deadline_days=0.5), "deadline"),
        (dict(params="7B", experts=8), "--layouts any"),
        (dict(params="7B", precision="fp8"), "--layouts any"),
        (dict(params="7B", precision="fp8", gpu="A100-80GB", layouts="any"), "no FP8 tensor cores"),
        (dict(params="7B", experts=8, experts_per_token=9, layouts="any"), "exceeds"),
        (dict(params="7B", shared_experts=1, layouts="any"), "need --experts"),
        (dict(params="7B", layouts="some"), "--layouts"),
        (dict(params="1T", gpu="L40S", gpus=8), "no cluster shape fits"),
        (dict(params="7B", law="kaplan", tokens_per_param=20), "tokens-per-param"),
        (dict(params="seven"), "not a number"),
        (dict(gpus=8), "give a size"),
        (dict(params="7B", gpus=12), "whole number of 8-GPU nodes"),
        (dict(params="7B", tokens="2T", gpu_hours=10_000), "MFU of"),
        (dict(params="7B", gpus=1024, mtbf_gpu_hours=1), "failures would dominate"),
        (dict(params="7B", checkpoint_minutes=0.001), "failures would dominate"),
        (dict(params="100T"), "no decoder shape"),
        (dict(params="7B", gpus=3.5), "--gpus"),
        (dict(params="7B", bogus=1), "--bogus"),
        (dict(params="7B", inference_tokens=1e12), "--compute"),
    ],
)
def test_bad_inputs_raise_one_line(kwargs, message) -> None:
    with pytest.raises(PlanError, match=message) as err:
        plan(**kwargs)
    assert "\n" not in str(err.value)


def test_json_keys_required_by_the_issue() -> None:
    d = plan(params="7B", gpu="A100-80GB").to_dict()
    for key in (
        "law",
        "params",
        "non_embedding_params",
        "tokens",
        "tokens_per_param",
        "flops",
        "predicted_loss",
        "model",
        "cluster",
        "mfu",
        "memory_per_gpu_gb",
        "gpu_hours",
        "wall_clock_days",
        "cost_usd",
        "energy_mwh",
        "co2_tonnes",
        "checkpoint_interval_minutes",
        "expected_interruptions",
        "goodput",
        "assumptions",
    ):
        assert key in d, key
    for key in ("n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size", "seq_len"):
        assert key in d["model"]
    for key in (
        "gpu",
        "gpus",
        "nodes",
        "gpus_per_node",
        "tensor_parallel",
        "pipeline_parallel",
        "data_parallel",
        "zero_stage",
        "micro_batch",
        "recompute",
    ):
        assert key in d["cluster"]
    # The model section is a valid ModelConfig with the exact count the plan reports.
    assert param_counts(ModelConfig(**d["model"])).total == d["params"]
    assert all("source" in v and "value" in v for v in d["assumptions"].values())


def test_deadline_gives_the_cheapest_shape_that_meets_it() -> None:
    p = plan(params="7B", tokens="1T", gpu="H100-SXM", deadline_days=10)
    assert p.wall_clock_days <= 10
    slower = plan(params="7B", tokens="1T", gpu="H100-SXM", deadline_days=40)
    assert slower.cost_usd <= p.cost_usd and slower.wall_clock_days > p.wall_clock_days


def test_fixed_gpus_and_memory_fit() -> None:
    p = plan(params="70B", tokens="1T", gpu="A100-80GB", gpus=512)
    assert p.cluster.gpus == 512
    c = p.cluster
    assert c.tensor_parallel * c.pipeline_parallel * c.data_parallel == 512
    assert p.memory_per_gpu_gb <= 80


def test_budget_buys_compute_and_is_spent() -> None:
    # The budget is a cap; discrete shapes make cost a step function of compute, so the plan spends
    # between 95% and 100% of it.
    p = plan(budget_usd="250k", gpu="H100-SXM")
    assert 0.95 * 250_000 <= p.cost_usd <= 250_000
    bigger = plan(budget_usd="1M", gpu="H100-SXM")
    assert bigger.params > p.params and bigger.predicted_loss < p.predicted_loss
    hours = plan(gpu_hours=50_000, gpu="A100-80GB")
    assert 0.95 * 50_000 <= hours.gpu_hours_total <= 50_000
    deadline = plan(gpus=64, deadline_days=14, gpu="H100-SXM")
    assert 0.95 * 14 <= deadline.wall_clock_days <= 14


def test_owned_hardware_costs_amortisation_plus_energy() -> None:
    p = plan(params="7B", tokens="1T", gpu="H100-SXM", gpus=256, owned=True, purchase_price=40_000)
    hw = p.gpu_hours_total * 40_000 / (4 * 8760)
    assert p.cost_usd == pytest.approx(hw + p.energy_cost_usd, rel=1e-9)
    assert set(p.cost_breakdown) == {"hardware_usd", "energy_usd"}


def test_failures_lengthen_the_run_and_checkpoint_interval_follows_mtbf() -> None:
    base = dict(params="70B", tokens="2T", gpu="H100-SXM", gpus=4096)
    reliable = plan(**base, mtbf_gpu_hours=1e9)
    flaky = plan(**base, mtbf_gpu_hours=10_000)
    assert flaky.goodput < reliable.goodput <= 1.0
    assert flaky.wall_clock_days > reliable.wall_clock_days
    assert flaky.checkpoint_interval_minutes < reliable.checkpoint_interval_minutes
    assert flaky.expected_interruptions > 10
    fixed = plan(**base, checkpoint_minutes=30)
    assert fixed.checkpoint_interval_minutes == pytest.approx(30)


def test_llama3_scale_interruptions() -> None:
    """16,384 H100s for 54 days at Llama 3's failure rate: about 419 interruptions (Dubey et al. 2024)."""
    p = plan(gpus=16_384, deadline_days=54, gpu="H100-SXM")
    assert p.expected_interruptions == pytest.approx(419 * p.wall_clock_days / 54, rel=0.01)
    assert 0.95 * 419 <= p.expected_interruptions <= 419 * 1.001
    assert p.checkpoint_interval_minutes < 60  # a job that fails every 3 h checkpoints often


def test_alternatives_bracket_the_optimum() -> None:
    p = plan(compute=1e23, gpu="H100-SXM")
    rows = {a["variant"]: a for a in p.alternatives}
    assert set(rows) == {"half size", "chosen", "double size"}
    assert rows["chosen"]["predicted_loss"] < rows["half size"]["predicted_loss"]
    assert rows["chosen"]["predicted_loss"] < rows["double size"]["predicted_loss"]


def test_inference_aware_plan_is_smaller() -> None:
    base = plan(compute=1e23)
    served = plan(compute=1e23, inference_tokens=5e13)
    assert served.params < base.params and served.tokens > base.tokens


def test_frame_and_sweep() -> None:
    frame = plan(params="1B").to_frame()
    assert frame.shape[0] == 1 and "cluster.gpus" in frame.columns
    df = sweep("compute", [1e20, 1e21, 1e22])
    assert list(df["sweep.compute"]) == [1e20, 1e21, 1e22]
    assert df["params"].is_monotonic_increasing
    assert df["predicted_loss"].is_monotonic_decreasing


def test_default_plan_states_its_defaults() -> None:
    p = plan()
    assert p.assumptions["budget_usd"]["value"] == 100_000
    assert 95_000 <= p.cost_usd <= 100_000
    assert p.notes and "default" in p.notes[0]


def test_plot_page_has_the_three_figures() -> None:
    from tokensmith.planner.plots import isoflop_points, render_html

    p = plan(compute=1e22, gpu="H100-SXM")
    sizes, losses = isoflop_points(p)
    best = min(range(len(losses)), key=losses.__getitem__)
    # The IsoFLOP minimum sits at the law's optimum (within the grid spacing).
    assert sizes[best] == pytest.approx(CHINCHILLA.optimal(p.law_flops).params, rel=0.07)
    page = render_html(p)
    for title in ("IsoFLOP", "Pareto front", "Cost and energy"):
        assert title in page


def test_parallelism_limits_give_data_parallel_plans() -> None:
    p = plan(
        params="13B", tokens="300B", gpu="H100-SXM", gpus=64, max_tensor_parallel=1, max_pipeline_parallel=1
    )
    assert p.cluster.tensor_parallel == 1 and p.cluster.pipeline_parallel == 1
    assert p.cluster.data_parallel == 64
    with pytest.raises(PlanError, match="no cluster shape fits"):
        plan(params="175B", gpu="A100-40GB", gpus=8, max_tensor_parallel=1, max_pipeline_parallel=1)
