"""Mixture of experts, FP8, context parallelism, selective recomputation and the layout scope."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tokensmith.planner import arch, capability, memory, plan, search
from tokensmith.planner.arch import ModelConfig
from tokensmith.planner.gpus import get_gpu
from tokensmith.planner.performance import ModelScalars

# DeepSeek-AI 2024 (arXiv:2412.19437): 2.788M H800 GPU-hours in all, 2.664M for pre-training on 14.8T
# tokens (180K per trillion), FP8, 2,048 H800.
DEEPSEEK_V3_GPU_HOURS = 2.788e6
DEEPSEEK_V3 = dict(model="deepseek-v3", tokens=14.8e12, gpu="H800", gpus=2048, precision="fp8", layouts="any")


def test_mixtral_8x7b_counts_are_exact() -> None:
    """Jiang et al. 2024 / the released config: 46,702,792,704 total, 12,879,925,248 active."""
    counts = arch.param_counts(ModelConfig(preset="mixtral-8x7b"))
    assert counts.total == 46_702_792_704
    assert counts.active == 12_879_925_248
    same = ModelConfig(
        n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, ffn_hidden=14336, vocab_size=32000,
        tie_embeddings=False, experts=8, experts_per_token=2,
    )  # fmt: skip
    assert arch.param_counts(same) == counts


def test_moe_flops_follow_active_parameters() -> None:
    cfg = ModelConfig(preset="mixtral-8x7b")
    dense_equivalent = arch.param_counts(cfg).active
    # 6 x active matmul weights (+ the router) + attention; the embedding lookup is no matmul.
    matmul = arch.matmul_params(cfg)
    assert matmul == pytest.approx(dense_equivalent - 32000 * 4096 + 0, rel=0.001)
    assert arch.flops_per_token(cfg) == pytest.approx(6 * matmul + 12 * 32 * 4096 * 4096)


def test_deepseek_v3_preset_is_within_its_published_counts() -> None:
    counts = arch.param_counts(ModelConfig(preset="deepseek-v3"))
    assert counts.total == pytest.approx(671e9, rel=0.01)
    assert counts.active == pytest.approx(37e9, rel=0.05)


def test_deepseek_v3_gpu_hours_at_the_estimated_mfu() -> None:
    """The performance model alone (FP8 on 2,048 H800, MoE all-to-all, failures at Llama 3's rate):
    within 30% of the published 2.788M GPU-hours."""
    p = plan(**DEEPSEEK_V3)
    assert p.gpu_hours_total == pytest.approx(DEEPSEEK_V3_GPU_HOURS, rel=0.30)
    assert p.precision == "fp8" and p.mfu_bf16 == pytest.approx(p.mfu * 1979 / 989)
    assert p.active_params < p.params / 10


def test_deepseek_v3_gpu_hours_at_the_implied_mfu() -> None:
    p = plan(**DEEPSEEK_V3, gpu_hours=DEEPSEEK_V3_GPU_HOURS)
    assert p.gpu_hours_total == pytest.approx(DEEPSEEK_V3_GPU_HOURS, rel=0.05)
    assert p.mfu_source.startswith("implied by --gpu-hours")


def test_expert_parallelism_shards_the_experts() -> None:
    scal = ModelScalars.from_config(ModelConfig(preset="mixtral-8x7b"))
    one = memory.model_state_bytes(scal.params, 1, 1, 8, 1, scal.expert_params, 1)
    eight = memory.model_state_bytes(scal.params, 1, 1, 8, 1, scal.expert_params, 8)
    # Without EP every GPU holds every expert's weights and gradients; with EP 8 one expert each
    # (ZeRO-1 already shards the optimiser states over the 8 ranks either way).
    dense = scal.params - scal.expert_params
    assert float(one) == pytest.approx((4 + 12 / 8) * scal.params)
    assert float(eight) == pytest.approx((4 + 12 / 8) * dense + (4 + 12) * scal.expert_params / 8)


def test_cross_node_all_to_all_costs_time() -> None:
    """The same MoE step is slower when the experts' all-to-all leaves the node."""
    from tokensmith.planner.performance import GPUScalars, step_time

    scal = ModelScalars.from_config(ModelConfig(preset="mixtral-8x7b"))
    g = GPUScalars(989e12, 3.35e12, 450e9, 50e9, 8, 1979e12, 0.7)
    small_nodes = GPUScalars(989e12, 3.35e12, 450e9, 50e9, 2, 1979e12, 0.7)
    inside = step_time(scal, g, 64, 1, 1, 64, 1, 1, 4, 0, 1, 8, 1, 0)
    no_ep = step_time(scal, g, 64, 1, 1, 64, 1, 1, 4, 0, 1, 1, 1, 0)
    across = step_time(scal, small_nodes, 64, 1, 1, 64, 1, 1, 4, 0, 1, 8, 1, 0)
    assert float(no_ep) < float(inside)
    assert float(across) > float(inside)


def test_search_uses_expert_parallelism_for_moe_when_any_layout_is_allowed() -> None:
    p = plan(model="mixtral-8x7b", tokens=1e12, gpu="H100", gpus=64, layouts="any")
    assert p.cluster.expert_parallel > 1
    assert p.model["experts"] == 8 and p.active_params == 12_879_925_248


def test_fp8_is_faster_than_bf16_and_reports_both_mfus() -> None:
    args = dict(params="7B", tokens="1T", gpu="H100", gpus=64, layouts="any")
    bf16 = plan(**args)
    fp8 = plan(**args, precision="fp8")
    assert fp8.wall_clock_days < bf16.wall_clock_days
    assert fp8.mfu == pytest.approx(fp8.mfu_bf16 * 989 / 1979)  # against the FP8 and the BF16 peak
    assert bf16.mfu == pytest.approx(bf16.mfu_bf16)
    assert get_gpu("H800").fp8_tflops == 1979 and get_gpu("A100").fp8_tflops == 0


def test_context_parallelism_is_searched_for_long_context_and_splits_activations() -> None:
    p = plan(params="8B", tokens="100B", seq_len=131072, gpu="H100", gpus=64, layouts="any")
    assert p.cluster.context_parallel > 1
    args = dict(
        seq=131072, micro_batch=1, d_model=4096, n_layers=32, vocab=128256, tp=8, pp=1, microbatches=1
    )
    full = memory.activation_bytes(**args, recompute=0)
    split = memory.activation_bytes(**args, recompute=0, cp=8)
    assert float(split) == pytest.approx(float(full) / 8)


def test_selective_recomputation_is_chosen_where_it_pays() -> None:
    """Without FlashAttention (Megatron-LM 2022), selective recomputation frees the s x s scores for a
    fraction of full recomputation's time (Korthikanti et al. 2022, Table 4)."""
    from tokensmith.planner.calibration import VALIDATION, validate

    run = next(r for r in VALIDATION if r.name == "korthikanti 530B x280")
    free = {**run.layout, "recompute": (0, 1, 2)}
    import dataclasses

    result = validate(dataclasses.replace(run, layout=free))
    assert result.layout.endswith("rc-selective")


def test_trainable_scope_never_proposes_what_the_trainer_refuses() -> None:
    """Default scope: every fitting candidate passes capability.problems, so EP, CP, FP8, MoE and
    interleaving never appear; with --layouts any they do."""
    cfg = ModelConfig(preset="llama-7b")
    scal = ModelScalars.from_config(cfg)
    gpu = get_gpu("H100")
    econ = search.Economics(price_per_gpu_hour=3.0)
    res = search.evaluate(search.candidate_grid([8, 64, 512]), scal, gpu, 8, 1e12, 4e6, econ)
    for i in np.flatnonzero(res["fits"])[:: max(1, int(res["fits"].sum()) // 200)]:
        row = res.row(int(i))
        rc = memory.RECOMPUTE_NAMES[int(row["recompute"])]
        layout = capability.Layout(
            int(row["tp"]), int(row["pp"]), int(row["dp"]), int(row["zero"]), rc,  # type: ignore[arg-type]
            int(row["virtual"]), int(row["ep"]), int(row["cp"]),
        )  # fmt: skip
        assert capability.problems(layout, 32, 32, 32, gpus_per_node=8, world_size=int(row["gpus"])) == []
    anything = search.evaluate(
        search.candidate_grid([512], **search.axis_values("any", 0, 4096)), scal, gpu, 8, 1e12, 4e6, econ,
        layouts="any",
    )  # fmt: skip
    assert (anything["virtual"][anything["fits"]] > 1).any()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(expert=2), "expert parallelism"),
        (dict(context=2), "context parallelism"),
        (dict(precision="fp8"), "precision 'fp8'"),
    ],
)
def test_capability_reasons_for_the_new_dimensions(kwargs, fragment) -> None:
    found = capability.problems(capability.Layout(**kwargs), 2, 4, 4)
    assert any(fragment in line for line in found)
    assert not capability.supported(
        1, 1, 0, 1, 2, 4, 4, 8, kwargs.get("expert", 1), kwargs.get("context", 1),
        int(kwargs.get("precision") == "fp8"),
    )  # fmt: skip


def test_capability_refuses_moe_models() -> None:
    assert any(
        "mixture-of-experts" in p for p in capability.problems(capability.Layout(), 2, 4, 4, experts=8)
    )
    assert not capability.supported(1, 1, 0, 1, 2, 4, 4, 8, experts=8)
    assert capability.supported(1, 1, 0, 1, 2, 4, 4, 8)


def test_cli_moe_json_has_active_params_and_experts() -> None:
    from tokensmith.cli import cli as main

    out = CliRunner().invoke(
        main,
        ["plan", "--params", "47B", "--experts", "8", "--experts-per-token", "2", "--layouts", "any",
         "--gpu", "H100", "--gpus", "64", "--format", "json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["model"]["experts"] == 8 and d["model"]["experts_per_token"] == 2
    assert d["params"] == pytest.approx(47e9, rel=0.03)
    assert d["active_params"] < d["params"] / 3
    assert d["precision"] == "bf16" and d["layouts"] == "any" and "mfu_bf16" in d


def test_cli_emit_job_with_any_layouts_refuses_what_the_trainer_cannot_run(tmp_path) -> None:
    from tokensmith.cli import cli as main

    job = tmp_path / "job.yaml"
    out = CliRunner().invoke(
        main,
        ["plan", "--params", "7B", "--precision", "fp8", "--layouts", "any", "--gpu", "H100", "--gpus", "64",
         "--emit-job", str(job)],
    )  # fmt: skip
    assert out.exit_code == 2
    assert "precision 'fp8' is not implemented by tokensmith train" in out.output
    assert not job.exists()


def test_the_trainer_config_refuses_a_moe_model() -> None:
    """ModelConfig describes MoE models for the planner; the trainer, which builds dense models, says
    so in one line instead of silently training a dense one."""
    from pydantic import ValidationError

    from tokensmith.trainer.config import TrainerConfig

    with pytest.raises(ValidationError, match="mixture-of-experts"):
        TrainerConfig.model_validate({"model": {"preset": "tiny", "experts": 4}})
    TrainerConfig.model_validate({"model": {"preset": "tiny"}})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(params="1B", gpus=8),
        dict(params="7B", gpu="A100-80GB", gpus=64),
        dict(params="70B", gpu="H100", gpus=512),
        dict(params="13B", gpu="A100-40GB", budget_usd="500k"),
        dict(params="30B", gpu="H200", gpu_hours=200_000),
        dict(compute=1e23, gpu="H100"),
        dict(budget_usd="2M", gpu="B200"),
    ],
)
def test_default_scope_plans_emit_jobs_the_trainer_runs(kwargs) -> None:
    """Over a spread of budgets and GPUs, the default (trainable) scope's plans pass the trainer's rules
    and build into an LLMTrainingJob through the operator's models."""
    from tokensmith.operator.spec import effective_trainer_config, parse_manifest
    from tokensmith.planner.emit import build_job, untrainable

    p = plan(**kwargs)
    assert untrainable(p) == []
    manifest = build_job(p)
    _, spec = parse_manifest(manifest)
    trainer = effective_trainer_config(spec, manifest["metadata"]["name"])
    assert trainer.parallelism.recompute == p.cluster.recompute
    assert trainer.deepspeed.zero_stage == p.cluster.zero_stage


def test_table_names_the_experts_and_both_mfus() -> None:
    from tokensmith.cli import cli as main

    out = CliRunner().invoke(
        main, ["plan", "--model", "mixtral-8x7b", "--tokens", "1T", "--gpu", "H100", "--gpus", "64",
               "--layouts", "any", "--precision", "fp8"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "MoE 8 experts (2 per token) of FFN 14336" in out.output
    assert "12,879,925,248 active" in out.output and "against BF16" in out.output
