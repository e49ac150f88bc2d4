"""`plan(...)`: from any consistent subset of budget inputs to a complete, typed training plan.

Pure functions over typed data: nothing here reads or writes files (the CLI does that).

Resolution of the model size N and token budget D (the law's convention: total parameters for the
Chinchilla fits, non-embedding for Kaplan; for mixture-of-experts models the *active* parameters, as
the MoE literature compares models, while --params stays the total count):
- params and tokens given: used as they are (with compute too, 6ND must agree within 5%); with a
  GPU-hour or dollar figure as well and no --mfu, the MFU is the derived input (`_implied_mfu`);
- two of (params, tokens, compute): the third from C = 6ND;
- params alone: the law's compute-optimal tokens for that size; tokens alone: the optimal size;
- params and a budget (dollars, GPU-hours, or GPUs x deadline) without tokens: the tokens the budget
  buys on the best shape for it, with the law's optimum at that compute and the predicted-loss penalty
  (`Plan.token_budget`); PlanError only when not even one optimizer step fits;
- compute alone: the law's compute-optimal (N, D) (inference-aware with `inference_tokens`);
- none of them: the compute that a budget buys (dollars, GPU-hours, or GPUs x deadline) on the chosen
  cluster, found by a fixed-point iteration (compute -> model -> cluster shape -> cost -> compute);
- nothing at all: the default budget `DEFAULT_BUDGET_USD` (stated in the plan's assumptions).

Cluster choice among the shapes that fit (search.py): with a deadline, the cheapest that meets it; with
a cost or GPU-hour cap, the fastest under it; with a fixed GPU count, the fastest on it; otherwise the
cheapest that finishes within `DEFAULT_WINDOW_DAYS` (or the fastest when none does). A choice whose
goodput is under `MIN_GOODPUT` is refused: failures would be the run.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from tokensmith.planner import arch, memory, scaling, search
from tokensmith.planner.arch import ModelConfig
from tokensmith.planner.context import Context as _Ctx
from tokensmith.planner.performance import ModelScalars
from tokensmith.planner.schema import ClusterPlan, Plan, PlanError, Request
from tokensmith.planner.shapes import Count, shape_for_params

__all__ = ["Plan", "PlanError", "Request", "default_global_batch_tokens", "plan", "sweep"]

DEFAULT_BUDGET_USD = 100_000.0
DEFAULT_WINDOW_DAYS = 30.0
CONSISTENCY = 0.05  # relative tolerance when params, tokens and compute are all given
MAX_GLOBAL_BATCH_TOKENS = 16 * 2**20  # Llama 3 405B's final batch (Dubey et al. 2024, §3.4.1)


# ---------------------------------------------------------------------------------------------------
# Evaluation of one (N, D) on the cluster search space


def _scalars(cfg: ModelConfig) -> ModelScalars:
    return ModelScalars.from_config(cfg)


def _peak(ctx: _Ctx) -> float:
    return ctx.gpu.peak_for(ctx.precision)


def default_global_batch_tokens(compute: float, seq_len: int) -> float:
    """DeepSeek LLM's batch-size law B_opt = 0.2920 C^0.3271 tokens (Bi et al. 2024, arXiv:2401.02954,
    eq. 1), capped at 16M tokens and at least one sequence."""
    return float(min(max(0.2920 * compute**0.3271, seq_len), MAX_GLOBAL_BATCH_TOKENS))


def _law_params(law: scaling.Law, cfg: ModelConfig) -> float:
    counts = arch.param_counts(cfg)
    if cfg.is_moe:
        return float(counts.active - counts.embedding if law.non_embedding else counts.active)
    return float(counts.non_embedding if law.non_embedding else counts.total)


def _shape(ctx: _Ctx, law_params: float, total: bool = False) -> ModelConfig:
    """The architecture with `law_params` in the law's convention, or `total` parameters."""
    count: Count
    if total:
        count = "total"
    elif ctx.moe:
        count = "active"
    else:
        count = "non_embedding" if ctx.law.non_embedding else "total"
    try:
        return shape_for_params(
            law_params, vocab_size=ctx.vocab, seq_len=ctx.seq_len, moe=ctx.moe, count=count
        )
    except ValueError as err:
        raise PlanError(str(err)) from None


def _shape_total(ctx: _Ctx, total: float) -> ModelConfig:
    """--params (a total count) -> the architecture (Kaplan's law shapes on the non-embedding count
    of that model)."""
    if ctx.law.non_embedding and not ctx.moe:
        return _shape(ctx, _non_embedding_target(ctx, total))
    return _shape(ctx, total, total=True)


def _gpu_counts(ctx: _Ctx) -> list[int]:
    if ctx.req.gpus is not None:
        return [ctx.req.gpus]
    return search.gpu_count_grid(ctx.gpus_per_node)


def _run_search(ctx: _Ctx, cfg: ModelConfig, tokens: float) -> search.Candidates:
    scal = _scalars(cfg)
    gbt = ctx.req.global_batch_tokens or default_global_batch_tokens(6.0 * scal.active * tokens, cfg.seq_len)
    axes = search.axis_values(ctx.layouts, cfg.experts, cfg.seq_len)
    grid = search.candidate_grid(_gpu_counts(ctx), **axes)
    return search.evaluate(
        grid,
        scal,
        ctx.gpu,
        ctx.gpus_per_node,
        tokens,
        gbt,
        ctx.econ,
        ctx.req.mfu,
        max_tp=ctx.req.max_tensor_parallel or max(search.TP_DEGREES),
        max_pp=ctx.req.max_pipeline_parallel or max(search.PP_DEGREES),
        layouts=ctx.layouts,
        precision=ctx.precision,
    )


MIN_GOODPUT = 0.05  # below this, failures and checkpoints are the run: refuse rather than plan it


def _select(ctx: _Ctx, res: search.Candidates, budget_derived: bool) -> int:
    """Index of the chosen candidate; PlanError when none fits or failures would dominate it."""
    idx = _choose(ctx, res, budget_derived)
    row = res.row(idx)
    if not row["goodput"] >= MIN_GOODPUT:
        raise PlanError(
            f"failures would dominate this run (goodput {row['goodput']:.2g}: "
            f"the {int(row['gpus'])}-GPU job fails "
            f"every {row['job_mtbf_hours'] * 60:.3g} min, checkpoints take {row['checkpoint_seconds']:.0f} s "
            f"every {row['checkpoint_interval_minutes']:.3g} min); use fewer GPUs, a higher --mtbf-gpu-hours "
            "or a longer --checkpoint-minutes"
        )
    return idx


def _choose(ctx: _Ctx, res: search.Candidates, budget_derived: bool) -> int:
    """Index of the chosen candidate (rules in the module docstring); PlanError names the conflict."""
    import numpy as np

    req = ctx.req
    fits = res["fits"]
    if not fits.any():
        biggest = ctx.gpu.memory_gb
        raise PlanError(
            f"no cluster shape fits this model in {biggest:g} GB per GPU"
            + (f" on {req.gpus} GPUs" if req.gpus else "")
            + "; use more GPUs, a GPU with more memory, or a smaller model"
        )
    cap = np.ones_like(fits)
    if not budget_derived:
        if req.budget_usd is not None:
            cap &= res["cost_usd"] <= req.budget_usd
        if req.gpu_hours is not None:
            cap &= res["gpu_hours_total"] <= req.gpu_hours
    if req.deadline_days is not None:
        deadline = res["wall_hours"] <= req.deadline_days * 24.0
        idx = search.pick(res, deadline & cap, "cost_usd", "wall_hours")
        if idx is None:
            fastest = search.pick(res, cap, "wall_hours", "cost_usd")
            if fastest is None:
                raise PlanError(_budget_conflict(ctx, res))
            raise PlanError(
                f"no shape meets --deadline-days {req.deadline_days:g}: the fastest "
                f"({int(res['gpus'][fastest])} x {ctx.gpu.name}) takes "
                f"{res['wall_hours'][fastest] / 24:.1f} days; "
                "allow more GPUs, a later deadline, or a smaller model/token budget"
            )
        return idx
    if not budget_derived and (req.budget_usd is not None or req.gpu_hours is not None):
        idx = search.pick(res, cap, "wall_hours", "cost_usd")
        if idx is None:
            raise PlanError(_budget_conflict(ctx, res))
        return idx
    if req.gpus is not None:
        idx = search.pick(res, cap, "wall_hours", "cost_usd")
        assert idx is not None
        return idx
    window = res["wall_hours"] <= DEFAULT_WINDOW_DAYS * 24.0
    idx = search.pick(res, window, "cost_usd", "wall_hours")
    if idx is None:
        idx = search.pick(res, cap, "wall_hours", "cost_usd")
        ctx.notes.append(f"no shape finishes within {DEFAULT_WINDOW_DAYS:g} days; the fastest is shown")
    assert idx is not None
    return idx


def _budget_conflict(ctx: _Ctx, res: search.Candidates) -> str:
    cheapest = search.pick(res, res["fits"], "cost_usd", "wall_hours")
    assert cheapest is not None
    what = []
    if ctx.req.budget_usd is not None:
        what.append(f"--budget-usd {ctx.req.budget_usd:,.0f}")
    if ctx.req.gpu_hours is not None:
        what.append(f"--gpu-hours {ctx.req.gpu_hours:,.0f}")
    # The MFU that would make the cheapest shape fit the tightest cap (cost is inversely proportional).
    over = max(
        res["cost_usd"][cheapest] / (ctx.req.budget_usd or float("inf")),
        res["gpu_hours_total"][cheapest] / (ctx.req.gpu_hours or float("inf")),
    )
    needed = res["mfu"][cheapest] * over
    hint = f" (or an MFU of {needed:.3f} instead of {res['mfu'][cheapest]:.3f}: --mfu)" if needed < 1 else ""
    return (
        f"this model and token budget need at least ${res['cost_usd'][cheapest]:,.0f} "
        f"({res['gpu_hours_total'][cheapest]:,.0f} GPU-hours) but {' and '.join(what)} allow less; "
        f"raise the budget or lower --params/--tokens{hint}"
    )


# ---------------------------------------------------------------------------------------------------
# Resolution of (N, D)


def _check_inputs(req: Request) -> None:
    positive = (
        "params",
        "tokens",
        "compute",
        "budget_usd",
        "gpu_hours",
        "deadline_days",
        "gpus",
        "gpus_per_node",
        "mfu",
        "tokens_per_param",
        "price_per_gpu_hour",
        "purchase_price",
        "lifetime_years",
        "pue",
        "mtbf_gpu_hours",
        "checkpoint_minutes",
        "seq_len",
        "vocab_size",
        "global_batch_tokens",
        "gpu_power_w",
        "max_tensor_parallel",
        "max_pipeline_parallel",
        "experts",
        "experts_per_token",
    )
    for name in positive:
        value = getattr(req, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise PlanError(f"--{name.replace('_', '-')} must be a positive number, got {value:g}")
    for name in (
        "carbon_intensity",
        "energy_price",
        "inference_tokens",
        "node_overhead",
        "restart_minutes",
        "shared_experts",
    ):
        value = getattr(req, name)
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise PlanError(f"--{name.replace('_', '-')} must be zero or positive, got {value:g}")
    if req.mfu is not None and req.mfu > 1:
        raise PlanError(f"--mfu is a fraction of peak (0 to 1], got {req.mfu:g}")
    if req.pue is not None and req.pue < 1:
        raise PlanError(f"--pue is at least 1 (total facility power / IT power), got {req.pue:g}")
    if req.vocab_size is not None and req.vocab_size < 2:
        raise PlanError("--vocab-size must be at least 2")
    if req.purchase_price is not None and not req.owned:
        raise PlanError("--purchase-price applies to owned hardware; add --owned or drop it")
    if req.owned and req.price_per_gpu_hour is not None:
        raise PlanError(
            "--price-per-gpu-hour is a cloud price; it conflicts with --owned (use --purchase-price)"
        )
    if (
        req.gpus is not None
        and req.gpus_per_node is not None
        and req.gpus > req.gpus_per_node
        and req.gpus % req.gpus_per_node
    ):
        raise PlanError(
            f"--gpus {req.gpus} is not a whole number of nodes of --gpus-per-node {req.gpus_per_node}"
        )
    given = [n for n in ("params", "tokens", "compute") if getattr(req, n) is not None]
    if req.inference_tokens and "compute" not in given:
        raise PlanError("--inference-tokens needs --compute (the training budget the optimum is taken at)")
    if req.inference_tokens and len(given) > 1:
        raise PlanError("--inference-tokens chooses params and tokens itself; give --compute alone with it")


def _resolve(ctx: _Ctx, compute: float | None) -> tuple[ModelConfig, float]:
    """(architecture, tokens) from the request, or from `compute` when the budget set it."""
    req, law = ctx.req, ctx.law
    if compute is not None:
        if req.inference_tokens:
            opt = scaling.inference_aware_optimum(law, compute, req.inference_tokens)
            ctx.record("inference_tokens", req.inference_tokens, "given: Sardana et al. 2023 optimum")
        else:
            opt = law.optimal(compute)
        cfg = _shape(ctx, opt.params)
        tokens = opt.tokens if req.inference_tokens else compute / (6.0 * _law_params(law, cfg))
        return cfg, tokens
    if req.params is not None:
        cfg = _shape_total(ctx, req.params)
        n = _law_params(law, cfg)
        tokens = req.tokens if req.tokens is not None else law.optimal_tokens(n)
        return cfg, tokens
    assert req.tokens is not None
    n_target = law.optimal_params_for_tokens(req.tokens)
    return _shape(ctx, n_target), req.tokens


def _non_embedding_target(ctx: _Ctx, total: float) -> float:
    """--params is a total count; Kaplan's law shapes on the non-embedding count of that model."""
    cfg = shape_for_params(total, vocab_size=ctx.vocab, seq_len=ctx.seq_len)
    return float(arch.param_counts(cfg).non_embedding)


def _given_compute(req: Request) -> float | None:
    """The compute the request pins down (compute itself, or the third of params/tokens/compute)."""
    if req.compute is not None and req.params is not None and req.tokens is not None:
        implied = 6.0 * req.params * req.tokens
        if abs(implied / req.compute - 1.0) > CONSISTENCY:
            raise PlanError(
                f"contradictory inputs: 6 x --params x --tokens = {implied:.3g} FLOPs but --compute is "
                f"{req.compute:.3g}; give any two of --params, --tokens and --compute"
            )
        return None
    if req.compute is not None and req.params is not None:
        return None
    if req.compute is not None and req.tokens is not None:
        return None
    return req.compute


def plan(**kwargs: Any) -> Plan:
    """Plan a pretraining run. Keyword arguments are `Request`'s fields (numbers or strings like "7B")."""
    from tokensmith.core.units import parse_number

    clean: dict[str, Any] = {}
    for key, value in kwargs.items():
        if (
            isinstance(value, str)
            and key in Request.model_fields
            and key not in ("gpu", "law", "precision", "layouts", "model")
        ):
            try:
                value = parse_number(value)
            except ValueError as err:
                raise PlanError(f"--{key.replace('_', '-')}: {err}") from None
        clean[key] = value
    try:
        req = Request(**clean)
    except ValidationError as err:  # one line: the first problem, named as the CLI flag
        first = err.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "input"
        raise PlanError(f"{flag}: {first['msg']}") from None
    for key in (
        "gpus",
        "gpus_per_node",
        "seq_len",
        "vocab_size",
        "max_tensor_parallel",
        "max_pipeline_parallel",
        "experts",
        "experts_per_token",
        "shared_experts",
    ):
        value = getattr(req, key)
        if value is not None and float(value) != int(value):
            raise PlanError(f"--{key.replace('_', '-')} must be a whole number, got {value}")
    return _plan(req)


def _plan(req: Request) -> Plan:
    _check_inputs(req)
    ctx = _Ctx(req)
    if req.model is not None:
        return _for_preset(ctx)
    # Two of params/tokens/compute -> the third.
    compute = _given_compute(req)
    if req.compute is not None and compute is None and req.params is not None and req.tokens is None:
        cfg = _shape_total(ctx, req.params)
        tokens = req.compute / (6.0 * _law_params(ctx.law, cfg))
    elif req.compute is not None and compute is None and req.tokens is not None and req.params is None:
        cfg, tokens = _shape(ctx, req.compute / (6.0 * req.tokens)), req.tokens
    elif (
        req.params is not None
        and req.tokens is None
        and compute is None
        and (req.budget_usd is not None or req.gpu_hours is not None or (req.gpus and req.deadline_days))
    ):
        return _budget_tokens(ctx, _shape_total(ctx, req.params))
    elif compute is not None or req.params is not None or req.tokens is not None:
        cfg, tokens = _resolve(ctx, compute)
    else:
        return _from_budget(ctx)
    explicit_size = sum(x is not None for x in (req.params, req.tokens, req.compute)) >= 2
    if explicit_size and req.mfu is None and (req.gpu_hours is not None or req.budget_usd is not None):
        return _implied_mfu(ctx, cfg, tokens)
    return _finish(ctx, cfg, tokens, budget_derived=False)


def _for_preset(ctx: _Ctx) -> Plan:
    """--model PRESET: the architecture is given (its own context and vocabulary unless --seq-len or
    --vocab-size override them); tokens as for --params (given, from --compute, bought by a budget,
    or the law's optimum for its size)."""
    req = ctx.req
    assert req.model is not None
    overrides = {k: v for k, v in (("seq_len", req.seq_len), ("vocab_size", req.vocab_size)) if v}
    try:
        cfg = ModelConfig(preset=req.model.lower(), **overrides)
    except ValidationError as err:
        raise PlanError(f"--model {req.model}: {err.errors()[0]['msg']}") from None
    ctx.record("model", cfg.preset, "given: arch.PRESETS")
    ctx.record("seq_len", cfg.seq_len, "given" if req.seq_len else f"the {cfg.preset} preset's")
    ctx.record("vocab_size", cfg.vocab_size, "given" if req.vocab_size else f"the {cfg.preset} preset's")
    n_law = _law_params(ctx.law, cfg)
    if req.tokens is not None:
        tokens = req.tokens
        if req.mfu is None and (req.gpu_hours is not None or req.budget_usd is not None):
            return _implied_mfu(ctx, cfg, tokens)
    elif req.compute is not None:
        tokens = req.compute / (6.0 * n_law)
    elif req.budget_usd is not None or req.gpu_hours is not None or (req.gpus and req.deadline_days):
        return _budget_tokens(ctx, cfg)
    else:
        tokens = ctx.law.optimal_tokens(n_law)
    return _finish(ctx, cfg, tokens, budget_derived=False)


def _implied_mfu(ctx: _Ctx, cfg: ModelConfig, tokens: float) -> Plan:
    """Model, tokens and a GPU-hour or dollar figure all given: the MFU is the missing input. It is
    solved so that the plan uses exactly that budget (failures included), which is how a published
    run's GPU-hours become its energy and carbon; the performance model's estimate is noted beside it."""
    req = ctx.req
    modelled = _finish(ctx, cfg, tokens, budget_derived=True, alternatives=False)
    what = "--gpu-hours" if req.gpu_hours is not None else "--budget-usd"
    mfu = modelled.mfu * _spent(req, modelled)
    for _ in range(6):
        if mfu > 1.0:
            raise PlanError(
                f"contradictory inputs: {what} is too small for this model and token budget "
                f"(it would take an MFU of {mfu:.2f} > 1); raise the budget or lower --params/--tokens"
            )
        ctx.req = req.model_copy(update={"mfu": mfu})
        result = _finish(ctx, cfg, tokens, budget_derived=True, alternatives=False)
        ratio = _spent(req, result)
        if abs(ratio - 1.0) < 1e-4:
            break
        mfu *= ratio
    ctx.mfu_source = f"implied by {what} (the performance model estimates {modelled.mfu:.3f} for this model)"
    ctx.record("mfu", round(mfu, 4), f"implied by {what}")
    if mfu > 1.25 * modelled.mfu:
        ctx.notes.append(
            f"{what} implies an MFU of {mfu:.3f}, well above the {modelled.mfu:.3f} the performance model "
            f"expects on {ctx.gpu.name}: at that MFU the run needs {modelled.gpu_hours_total:,.0f} GPU-hours "
            f"(${modelled.cost_usd:,.0f})"
        )
    return _finish(ctx, cfg, tokens, budget_derived=True)


def _from_budget(ctx: _Ctx) -> Plan:
    """No model size or compute given: the compute a budget buys, by fixed-point iteration."""
    req = ctx.req
    if req.budget_usd is None and req.gpu_hours is None and not (req.gpus and req.deadline_days):
        if req.deadline_days is not None or req.gpus is not None:
            raise PlanError(
                "give a size (--params/--tokens/--compute) or a budget (--budget-usd/--gpu-hours), "
                "or both --gpus and --deadline-days"
            )
        ctx.req = req = req.model_copy(update={"budget_usd": DEFAULT_BUDGET_USD})
        ctx.record("budget_usd", DEFAULT_BUDGET_USD, "default: no size or budget was given")
        ctx.notes.append(
            f"no size or budget given: planned for the default budget of ${DEFAULT_BUDGET_USD:,.0f} "
            f"on {ctx.gpu.name} (give --params, --compute, --budget-usd, ... to plan your own)"
        )
    peak = _peak(ctx)
    mfu0 = req.mfu or 0.4
    if req.gpu_hours is not None:
        hours = req.gpu_hours
    elif req.budget_usd is not None:
        hours = req.budget_usd / ctx.econ.price_per_gpu_hour
    else:
        assert req.gpus and req.deadline_days
        hours = req.gpus * req.deadline_days * 24.0
    compute = hours * 3600.0 * peak * mfu0 * 0.95
    # Discrete choices (layers, GPU counts) make cost a step function of compute: keep the largest
    # compute found under the cap, damping the updates so that the iteration does not oscillate.
    best: tuple[float, float] | None = None  # (ratio, compute)
    for step in range(16):
        cfg, tokens = _resolve(ctx, compute)
        try:
            ratio = _spent(req, _finish(ctx, cfg, tokens, budget_derived=True, alternatives=False))
        except PlanError:
            # Too much for the cap (e.g. no shape meets the deadline): back off towards the best so far.
            compute = 0.5 * compute if best is None else 0.5 * (compute + best[1])
            continue
        if ratio <= 1.0 and (best is None or ratio > best[0]):
            best = (ratio, compute)
        if 0.99 <= ratio <= 1.0:
            break
        compute *= (0.995 / ratio) ** (1.0 if step < 4 else 0.5)
    if best is None:
        raise PlanError("the budget does not buy any model on this cluster; raise it or change --gpu")
    cfg, tokens = _resolve(ctx, best[1])
    return _finish(ctx, cfg, tokens, budget_derived=True)


def _budget_tokens(ctx: _Ctx, cfg: ModelConfig) -> Plan:
    """Model size and a budget, no tokens: the most tokens the budget buys. Every candidate's cost,
    GPU-hours and wall time are proportional to the tokens (failures stretch time by a factor that
    depends on the GPU count only), so one search at the law's optimal tokens gives each candidate's
    affordable tokens; the best candidate's are planned, under the same caps."""
    import numpy as np

    req, law = ctx.req, ctx.law
    n_law = _law_params(law, cfg)
    reference = law.optimal_tokens(n_law)
    tokens = reference
    # The default global batch follows the compute, hence the tokens: iterate to the fixed point.
    for _ in range(4):
        res = _run_search(ctx, cfg, tokens)
        fits = res["fits"]
        if not fits.any():
            _choose(ctx, res, budget_derived=True)  # raises the memory error
        factor = np.full(fits.shape, np.inf)
        if req.budget_usd is not None:
            factor = np.minimum(factor, req.budget_usd / res["cost_usd"])
        if req.gpu_hours is not None:
            factor = np.minimum(factor, req.gpu_hours / res["gpu_hours_total"])
        if req.deadline_days is not None:
            factor = np.minimum(factor, req.deadline_days * 24.0 / res["wall_hours"])
        affordable = np.where(fits, tokens * factor, 0.0)
        best = int(np.argmax(affordable))
        previous, tokens = tokens, float(affordable[best]) * (1.0 - 1e-4)  # inside the caps
        if abs(tokens / previous - 1.0) < 1e-3:
            break
    step_tokens = float(res["global_batch_tokens"][best])
    if tokens < step_tokens:
        raise PlanError(
            f"the budget does not buy one optimizer step of this model ({step_tokens:,.0f} tokens, "
            f"{res['gpu_hours_total'][best] * step_tokens / previous:,.2f} GPU-hours on "
            f"{int(res['gpus'][best])} x {ctx.gpu.name}); raise the budget or lower --params"
        )
    ctx.notes.append(
        f"no --tokens given: the budget buys {tokens:.3g} tokens for this {cfg_total(cfg):.3g}-parameter "
        f"model ({tokens / n_law:.1f} per parameter; the law's optimum for this size is {reference:.3g})"
    )
    result = _finish(ctx, cfg, tokens, budget_derived=False)
    compute = 6.0 * n_law * tokens
    opt = law.optimal(compute)
    result.token_budget = {
        "tokens": tokens,
        "optimal_tokens_for_params": reference,
        "tokens_vs_optimal": tokens / reference,
        "compute_optimal_params": opt.params,
        "compute_optimal_tokens": opt.tokens,
        "compute_optimal_loss": law.loss(opt.params, opt.tokens),
        "loss_penalty": result.predicted_loss - law.loss(opt.params, opt.tokens),
    }
    return result


def cfg_total(cfg: ModelConfig) -> float:
    return float(arch.param_counts(cfg).total)


def _spent(req: Request, p: Plan) -> float:
    """The budgeted quantity the plan uses, relative to the tightest cap (see `_cap`)."""
    ratios = []
    if req.budget_usd is not None:
        ratios.append(p.cost_usd / req.budget_usd)
    if req.gpu_hours is not None:
        ratios.append(p.gpu_hours_total / req.gpu_hours)
    if not ratios:  # GPUs x deadline
        assert req.deadline_days is not None
        ratios.append(p.wall_clock_days / req.deadline_days)
    return max(ratios)


def _finish(
    ctx: _Ctx, cfg: ModelConfig, tokens: float, budget_derived: bool, alternatives: bool = True
) -> Plan:
    """The plan for this architecture and token budget; `alternatives=False` (inner evaluations of the
    budget iteration and of the half/double-size rows) skips the alternatives and the Pareto front."""
    if not (tokens > 0 and math.isfinite(tokens)):
        raise PlanError(f"the inputs give a token budget of {tokens:g}; check --params/--tokens/--compute")
    res = _run_search(ctx, cfg, tokens)
    idx = _select(ctx, res, budget_derived)
    counts = arch.param_counts(cfg)
    law = ctx.law
    n_law = _law_params(law, cfg)
    flops = 6.0 * counts.active * tokens
    model_flops = arch.training_flops(cfg, tokens)
    val = res.row(idx)
    mfu = float(val["mfu"])
    cluster = ClusterPlan(
        gpu=ctx.gpu.name,
        gpus=int(val["gpus"]),
        nodes=int(val["nodes"]),
        gpus_per_node=min(ctx.gpus_per_node, int(val["gpus"])),
        tensor_parallel=int(val["tp"]),
        pipeline_parallel=int(val["pp"]),
        data_parallel=int(val["dp"]),
        zero_stage=int(val["zero"]),
        micro_batch=int(val["micro_batch"]),
        gradient_accumulation=int(val["microbatches"]),
        global_batch_tokens=int(val["global_batch_tokens"]),
        recompute=memory.RECOMPUTE_NAMES[int(val["recompute"])],
        virtual_stages=int(val["virtual"]),
        expert_parallel=int(val["ep"]),
        context_parallel=int(val["cp"]),
    )
    if ctx.econ.owned:
        hardware = val["gpu_hours_total"] * ctx.econ.purchase_usd / (ctx.econ.lifetime_years * 8760.0)
        breakdown = {"hardware_usd": hardware, "energy_usd": val["energy_usd"]}
    else:
        compute_cost = val["gpu_hours"] * ctx.econ.price_per_gpu_hour
        breakdown = {
            "compute_usd": compute_cost,
            "failures_and_checkpoints_usd": val["cost_usd"] - compute_cost,
        }
    model = cfg.model_dump(exclude={"preset"})
    if law.name == "kaplan":
        n_f, d_f, _ = scaling.kaplan_frontier(6.0 * n_law * tokens)
        ctx.notes.append(
            f"Kaplan et al.'s fitted compute-efficient frontier (N = 1.3e9 C^0.73, which stops training well "
            f"before convergence) would put this compute at {n_f:.3g} non-embedding parameters and "
            f"{d_f:.3g} tokens; the plan uses the optimum of their L(N, D) on C = 6ND"
        )
    plan_obj = Plan(
        law=law.name,
        law_source=law.source,
        params=counts.total,
        active_params=counts.active,
        non_embedding_params=counts.non_embedding,
        embedding_params=counts.embedding,
        precision=ctx.precision,
        layouts=ctx.layouts,
        tokens=float(tokens),
        tokens_per_param=tokens / counts.total,
        flops=flops,
        law_flops=6.0 * n_law * tokens,
        model_flops=model_flops,
        predicted_loss=law.loss(n_law, tokens),
        model=model,
        cluster=cluster,
        mfu=mfu,
        mfu_bf16=float(val["mfu_bf16"]),
        mfu_source=ctx.mfu_source
        or ("given (--mfu)" if ctx.req.mfu is not None else "performance model (performance.py)"),
        mfu_palm=mfu * model_flops / flops,
        hfu=mfu * model_flops / flops * (4.0 / 3.0 if cluster.recompute == "full" else 1.0),
        tokens_per_second=tokens / (float(val["solve_hours"]) * 3600.0),
        tokens_per_gpu_second=tokens / (float(val["solve_hours"]) * 3600.0 * cluster.gpus),
        memory_per_gpu_gb=float(val["memory_gb"]),
        step_seconds=float(val["step_seconds"])
        if ctx.req.mfu is None
        else float(6.0 * counts.active * val["global_batch_tokens"] / (val["gpus"] * _peak(ctx) * mfu)),
        steps=math.ceil(tokens / val["global_batch_tokens"]),
        gpu_hours=float(val["gpu_hours"]),
        gpu_hours_total=float(val["gpu_hours_total"]),
        compute_days=float(val["solve_hours"]) / 24.0,
        wall_clock_days=float(val["wall_hours"]) / 24.0,
        cost_usd=float(val["cost_usd"]),
        cost_breakdown=breakdown,
        energy_mwh=float(val["energy_mwh"]),
        energy_cost_usd=float(val["energy_usd"]),
        gpu_power_w=float(val["gpu_watts"]),
        co2_tonnes=float(val["co2_tonnes"]),
        checkpoint_interval_minutes=float(val["checkpoint_interval_minutes"]),
        checkpoint_write_seconds=float(val["checkpoint_seconds"]),
        job_mtbf_hours=float(val["job_mtbf_hours"]),
        expected_interruptions=float(val["expected_interruptions"]),
        goodput=float(val["goodput"]),
        alternatives=[],
        pareto_front=_pareto_rows(res) if alternatives else [],
        assumptions=dict(ctx.assumptions),
        notes=list(dict.fromkeys(ctx.notes)),
    )
    if alternatives:
        plan_obj.alternatives = _alternatives(ctx, plan_obj, budget_derived)
    return plan_obj


def _pareto_rows(res: search.Candidates, limit: int = 40) -> list[dict[str, Any]]:
    idx = search.pareto_front(res)
    if idx.size > limit:  # keep the ends and an even spread between them
        import numpy as np

        idx = idx[np.unique(np.linspace(0, idx.size - 1, limit).round().astype(int))]
    keys = {
        "gpus": "gpus",
        "tp": "tensor_parallel",
        "pp": "pipeline_parallel",
        "dp": "data_parallel",
        "zero": "zero_stage",
        "micro_batch": "micro_batch",
        "recompute": "recompute",
        "virtual": "virtual_stages",
        "ep": "expert_parallel",
        "cp": "context_parallel",
        "mfu": "mfu",
        "wall_hours": "wall_clock_hours",
        "cost_usd": "cost_usd",
        "memory_gb": "memory_per_gpu_gb",
    }
    rows = [{out: res[k][i].item() for k, out in keys.items()} for i in idx]
    for row in rows:
        row["recompute"] = memory.RECOMPUTE_NAMES[int(row["recompute"])]
    return rows


def _alternatives(ctx: _Ctx, base: Plan, budget_derived: bool) -> list[dict[str, Any]]:
    """Half and double the model at the same compute (tokens scaled inversely), same cluster rules."""
    rows: list[dict[str, Any]] = []
    law = ctx.law
    n_law = base.law_flops / (6.0 * base.tokens)
    for factor, label in ((0.5, "half size"), (1.0, "chosen"), (2.0, "double size")):
        if factor == 1.0:
            p = base
        else:
            try:
                cfg = _shape(ctx, n_law * factor)
                tokens = base.law_flops / (6.0 * _law_params(law, cfg))
                p = _finish(ctx, cfg, tokens, budget_derived=True, alternatives=False)
            except PlanError as err:
                rows.append({"variant": label, "error": str(err)})
                continue
        rows.append(
            {
                "variant": label,
                "params": p.params,
                "tokens": p.tokens,
                "predicted_loss": p.predicted_loss,
                "gpus": p.cluster.gpus,
                "mfu": p.mfu,
                "wall_clock_days": p.wall_clock_days,
                "cost_usd": p.cost_usd,
                "energy_mwh": p.energy_mwh,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# Library helper: sweeps


def sweep(vary: str, values: list[Any], **fixed: Any) -> Any:
    """Plans for each value of one input (e.g. `sweep("compute", [1e21, 1e22], gpu="H100-SXM")`) as a
    pandas DataFrame, one flattened row per plan."""
    import pandas as pd

    frames = [plan(**{**fixed, vary: v}).to_frame().assign(**{f"sweep.{vary}": v}) for v in values]
    return pd.concat(frames, ignore_index=True)
