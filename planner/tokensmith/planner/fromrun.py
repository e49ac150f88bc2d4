"""`tokensmith plan --from-run STATUS`: refit a plan's assumptions from a running or finished job and
re-forecast its finish time and cost with the planner's own models (pure apart from reading files).

Input: a status document (status.json of `tokensmith run --local`, beside which the runner writes the
job as it ran, job.json) or a whole object (`kubectl get llmjob NAME -o yaml`: spec, annotations and
status). The spec gives the model (FLOPs from `tokensmith.planner.arch`), the devices and the adaptive
checkpoint prior; the `tokensmith.dev/plan-*` annotations (planner/emit.py) give the plan to compare with.

Refitted assumptions:
- MFU, as the planner counts it (search.py): 6 x active parameters x tokens/s / (devices x dense peak of
  the precision), from the trainer's last reported tokens per second and the GPU's peak (gpus.py; the
  plan's GPU, or `--gpu`). PaLM's MFU (arch.flops_per_token, attention included) is given beside it.
- MTBF per GPU: the gamma-Poisson posterior the operator's adaptive checkpointing uses
  (operator/cadence.py: the plan's MTBF as a prior worth two failures, then the observed failures in the
  ledger's GPU-hours); the raw observed MTBF is shown too.
- Checkpoint cost: the mean seconds a save blocked training (the goodput ledger); else the prior.
- Restart time: the ledger's restart GPU-hours per interruption, per device; else Daly's 10 minutes.
Forecast (reliability.py, Daly 2006 eq. 13): solve time = 6 N_active x remaining tokens / (devices x
peak x MFU) (= remaining tokens / tokens per second on the same devices), stretched by failures at the
refitted MTBF, checkpoint cost, restart time and the interval the job runs with (Daly's optimum when
adaptive), times devices and the price (costs.py) for the remaining cost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokensmith.operator.spec import LLMTrainingJobSpec

JOB_FILE = "job.json"  # written by the local runner beside status.json (operator/local/manifest.py)


class FromRunError(ValueError):
    """The file is not a job status this can read (one line, exit 2)."""


@dataclass(frozen=True)
class Run:
    status: dict[str, Any]
    job: dict[str, Any] | None  # the manifest (metadata, spec) when known


@dataclass(frozen=True)
class Refit:
    """The plan's assumptions as the run showed them."""

    tokens_per_second: float | None
    gpu: str | None
    devices: int | None
    mfu: float | None  # 6 N_active tokens/s / (devices peak): the planner's definition
    mfu_palm: float | None  # arch.flops_per_token (attention included)
    mfu_note: str | None  # why MFU is unknown
    interruptions: int
    exposure_gpu_hours: float
    mtbf_gpu_hours_observed: float | None
    mtbf_gpu_hours: float  # the posterior estimate the forecast uses
    checkpoint_seconds: float
    checkpoint_seconds_observed: bool
    restart_minutes: float
    goodput: float | None
    price_per_gpu_hour: float | None


@dataclass(frozen=True)
class Forecast:
    tokens_done: int
    tokens_total: int | None
    remaining_tokens: int | None
    elapsed_hours: float | None
    spent_gpu_hours: float
    spent_cost_usd: float | None
    checkpoint_interval_minutes: float | None
    solve_hours: float | None  # remaining, failure-free
    remaining_hours: float | None  # remaining, with failures (Daly)
    remaining_gpu_hours: float | None
    remaining_cost_usd: float | None
    remaining_interruptions: float | None
    finish_time: str | None
    total_hours: float | None
    total_cost_usd: float | None


def _first_error(err: Any) -> str:
    """One line from a pydantic ValidationError: where and what."""
    first = err.errors()[0]
    where = ".".join(str(x) for x in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def read_run(path: Path) -> Run:
    """The status (and the job, when the file holds it or job.json lies beside it)."""
    from pydantic import ValidationError

    from tokensmith.operator.spec import LLMTrainingJobStatus

    status, whole = _read_doc(path)
    try:
        LLMTrainingJobStatus.model_validate(status)
    except ValidationError as err:
        raise FromRunError(f"--from-run {path}: not a valid job status ({_first_error(err)})") from err
    job = whole if isinstance(whole, dict) and isinstance(whole.get("spec"), dict) else None
    beside = path.parent / JOB_FILE
    if job is None and beside.is_file() and beside != path:
        doc, _ = _read_doc(beside, need_status=False)
        job = doc if isinstance(doc.get("spec"), dict) else None
    return Run(status, job)


def read_status(path: Path) -> dict[str, Any]:
    """A status document: JSON or YAML, bare or as a whole object with a `status` key."""
    return _read_doc(path)[0]


def _read_doc(path: Path, need_status: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    try:
        text = path.read_text()
    except OSError as err:
        raise FromRunError(f"--from-run {path}: cannot read it ({err.strerror})") from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise FromRunError(f"--from-run {path}: neither JSON nor YAML") from err
    if not need_status:
        if not isinstance(doc, dict):
            raise FromRunError(f"--from-run: {path} is not a job manifest")
        return doc, None
    whole = doc if isinstance(doc, dict) else None
    if isinstance(doc, dict) and isinstance(doc.get("status"), dict):
        doc = doc["status"]
    if not isinstance(doc, dict) or "phase" not in doc:
        raise FromRunError(f"--from-run {path}: not a job status (no phase); give status.json or llmjob YAML")
    return doc, whole


def planned_mfu(tokens_per_second: float, active_params: float, devices: int, peak_flops: float) -> float:
    """MFU as the planner counts it (search.py): 6 N_active x tokens/s / (devices x dense peak)."""
    return 6.0 * active_params * tokens_per_second / (devices * peak_flops)


def solve_hours(
    remaining_tokens: float, active_params: float, devices: int, peak_flops: float, mfu: float
) -> float:
    """Failure-free hours for `remaining_tokens` at `mfu` (the planner's time model, search.py)."""
    return 6.0 * active_params * remaining_tokens / (devices * peak_flops * mfu) / 3600.0


def wall_hours(
    solve: float,
    devices: int,
    mtbf_gpu_hours: float,
    checkpoint_seconds: float,
    restart_minutes: float,
    interval_minutes: float | None,
) -> tuple[float, float]:
    """(wall-clock hours, the interval used in minutes): Daly's eq. 13 (reliability.wall_time) at the job's
    MTBF (per GPU / devices), with Daly's optimal interval (eq. 37) unless one is given."""  # fmt: skip
    from tokensmith.planner import reliability

    mtbf = float(reliability.job_mtbf_hours(mtbf_gpu_hours, devices))
    delta = checkpoint_seconds / 3600.0
    tau = interval_minutes / 60.0 if interval_minutes else float(reliability.daly_interval(delta, mtbf))
    if solve <= 0:
        return 0.0, tau * 60.0
    return float(reliability.wall_time(solve, tau, delta, restart_minutes / 60.0, mtbf)), tau * 60.0


def _spec(run: Run) -> LLMTrainingJobSpec | None:
    if run.job is None:
        return None
    from pydantic import ValidationError

    from tokensmith.operator.spec import LLMTrainingJobSpec

    try:
        return LLMTrainingJobSpec.model_validate(run.job["spec"])
    except ValidationError as err:
        raise FromRunError(f"--from-run: the job's spec is not valid (spec.{_first_error(err)})") from err


def predictions(run: Run) -> dict[str, Any]:
    """The plan's predictions the job carries (planner/emit.py annotations), plus the spec's priors."""
    from tokensmith.planner.emit import read_predictions

    meta = (run.job or {}).get("metadata") or {}
    return read_predictions(meta.get("annotations") if isinstance(meta, dict) else None)


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def refit(run: Run, gpu_name: str | None = None) -> Refit:
    """The run's MFU, MTBF, checkpoint and restart cost (see the module docstring)."""
    from tokensmith.operator import cadence
    from tokensmith.planner import arch, gpus, reliability

    st = run.status
    spec = _spec(run)
    plan = predictions(run)
    progress = st.get("progress") or {}
    rate = progress.get("tokensPerSecond")
    rate = float(rate) if isinstance(rate, int | float) and rate > 0 else None
    ledger = st.get("goodputLedger") or {}
    exposure = float(ledger.get("totalGPUHours") or 0.0)
    devices = spec.accounted_devices if spec is not None else _devices_from_ledger(st)

    gpu, mfu, palm, note = None, None, None, None
    on_cpu = spec is not None and spec.cluster.gpus_per_node == 0
    name = gpu_name or (None if on_cpu else plan.get("gpu"))
    if name is not None:
        try:
            entry = gpus.get_gpu(str(name))
        except ValueError as err:
            raise FromRunError(f"--from-run: {err}") from err
        gpu = entry.name
    if spec is None:
        note = "no job spec (give the whole llmjob YAML, or status.json with job.json beside it)"
    elif gpu is None:
        note = "CPU job: pass --gpu to compare with a GPU's peak" if on_cpu else "unknown GPU: pass --gpu"
    elif rate is None or not devices:
        note = "no tokens per second reported yet"
    else:
        cfg = spec.model or spec.trainer.model
        precision = "fp8" if spec.trainer.train.precision == "fp8" else "bf16"
        peak = gpus.get_gpu(gpu).peak_for(precision)
        mfu = planned_mfu(rate, float(arch.param_counts(cfg).active), devices, peak)
        palm = arch.flops_per_token(cfg) * rate / (devices * peak)

    prior_mtbf = (spec.checkpoint.prior_mtbf_gpu_hours if spec is not None else None) or plan.get(
        "mtbf_gpu_hours"
    )
    prior_seconds = (spec.checkpoint.prior_seconds if spec is not None else None) or plan.get(
        "checkpoint_write_seconds"
    )
    prior = cadence.Prior(
        mtbf_gpu_hours=float(prior_mtbf or reliability.LLAMA3_GPU_HOURS_PER_FAILURE),
        checkpoint_seconds=float(prior_seconds or cadence.DEFAULT_PRIOR_SECONDS),
    )
    failures = int(st.get("restarts") or 0)
    observed = st.get("observed") or {}
    interruptions = int(observed.get("interruptions") or failures)
    seen_ckpt = observed.get("meanCheckpointSeconds")
    restart_gpu_hours = float((st.get("lostGPUHours") or {}).get("restart") or 0.0)
    restart_minutes = (
        restart_gpu_hours / devices / interruptions * 60.0
        if interruptions and devices
        else reliability.DEFAULT_RESTART_MINUTES
    )
    gpu_hours = float(st.get("gpuHours") or 0.0)
    cost = st.get("costUSD")
    price = float(cost) / gpu_hours if cost is not None and gpu_hours > 0 else None
    if price is None and spec is not None:
        price = spec.budget.price_per_gpu_hour
    return Refit(
        tokens_per_second=rate,
        gpu=gpu,
        devices=devices,
        mfu=mfu,
        mfu_palm=palm,
        mfu_note=note,
        interruptions=interruptions,
        exposure_gpu_hours=exposure,
        mtbf_gpu_hours_observed=observed.get("mtbfGPUHours"),
        mtbf_gpu_hours=cadence.posterior_mtbf_gpu_hours(prior, failures, exposure),
        checkpoint_seconds=float(seen_ckpt) if seen_ckpt is not None else prior.checkpoint_seconds,
        checkpoint_seconds_observed=seen_ckpt is not None,
        restart_minutes=restart_minutes,
        goodput=st.get("goodput"),
        price_per_gpu_hour=price,
    )


def _devices_from_ledger(status: dict[str, Any]) -> int | None:
    """Without a spec: the ledger's GPU-hours over the hours it counted."""
    ledger = status.get("goodputLedger") or {}
    start, seen = _time(status.get("startTime")), _time(ledger.get("time"))
    if not ledger.get("totalGPUHours") or start is None or seen is None:
        return None
    hours = (seen - start).total_seconds() / 3600
    return round(float(ledger["totalGPUHours"]) / hours) if hours > 0 else None


def reforecast(run: Run, r: Refit) -> Forecast:
    """Finish time and cost from the refitted assumptions (see the module docstring)."""
    from tokensmith.planner import arch, costs, gpus

    st = run.status
    spec = _spec(run)
    progress = st.get("progress") or {}
    done = int(progress.get("tokens") or 0)
    total = progress.get("totalTokens") or (spec.data.tokens if spec is not None else None)
    remaining = max(int(total) - done, 0) if total else None
    if st.get("phase") == "Succeeded":
        remaining = 0
    start = _time(st.get("startTime"))
    now = _time(st.get("completionTime")) or _time((st.get("goodputLedger") or {}).get("time"))
    now = now or _time(progress.get("heartbeatTime"))
    elapsed = (now - start).total_seconds() / 3600.0 if start and now else None
    spent = float((st.get("goodputLedger") or {}).get("totalGPUHours") or st.get("gpuHours") or 0.0)
    spent_cost = st.get("costUSD")

    solve = None
    if remaining is not None and r.mfu is not None and spec is not None and r.devices and r.gpu:
        cfg = spec.model or spec.trainer.model
        peak = gpus.get_gpu(r.gpu).peak_for("fp8" if spec.trainer.train.precision == "fp8" else "bf16")
        solve = solve_hours(remaining, float(arch.param_counts(cfg).active), r.devices, peak, r.mfu)
    elif remaining is not None and r.tokens_per_second:
        solve = remaining / r.tokens_per_second / 3600.0  # the same on the same devices, without a GPU
    elif remaining == 0:
        solve = 0.0
    interval = _interval(spec)
    wall = gpu_hours = cost = expected = finish = None
    used_interval = interval
    if solve is not None and r.devices:
        wall, used_interval = wall_hours(
            solve, r.devices, r.mtbf_gpu_hours, r.checkpoint_seconds, r.restart_minutes, interval
        )
        gpu_hours = wall * r.devices
        cost = float(costs.cloud_cost(gpu_hours, r.price_per_gpu_hour)) if r.price_per_gpu_hour else None
        expected = gpu_hours / r.mtbf_gpu_hours
        finish = (now + timedelta(hours=wall)).isoformat() if now is not None else None
    return Forecast(
        tokens_done=done,
        tokens_total=int(total) if total else None,
        remaining_tokens=remaining,
        elapsed_hours=elapsed,
        spent_gpu_hours=spent,
        spent_cost_usd=float(spent_cost) if spent_cost is not None else None,
        checkpoint_interval_minutes=used_interval,
        solve_hours=solve,
        remaining_hours=wall,
        remaining_gpu_hours=gpu_hours,
        remaining_cost_usd=cost,
        remaining_interruptions=expected,
        finish_time=finish,
        total_hours=elapsed + wall if elapsed is not None and wall is not None else None,
        total_cost_usd=float(spent_cost) + cost if spent_cost is not None and cost is not None else None,
    )


def _interval(spec: LLMTrainingJobSpec | None) -> float | None:
    """The interval the job runs with: None (Daly's optimum at the refit) when adaptive or unknown."""
    if spec is None or spec.checkpoint.auto:
        return None
    minutes = spec.checkpoint.every_minutes
    return float(minutes) if minutes else None


def comparison(plan: dict[str, Any], r: Refit, f: Forecast) -> list[dict[str, Any]]:
    """Plan vs actual, side by side (actual: observed so far, plus the forecast where it is a total)."""
    days = f.total_hours / 24.0 if f.total_hours is not None else None
    more = f.remaining_interruptions
    interruptions = r.interruptions + more if more is not None else None
    return [
        {"quantity": "MFU", "plan": plan.get("mfu"), "actual": r.mfu},
        {"quantity": "tokens per second", "plan": plan.get("tokens_per_second"),
         "actual": r.tokens_per_second},
        {"quantity": "MTBF per GPU (GPU-hours), estimate", "plan": plan.get("mtbf_gpu_hours"),
         "actual": r.mtbf_gpu_hours},
        {"quantity": "MTBF per GPU (GPU-hours), observed", "plan": plan.get("mtbf_gpu_hours"),
         "actual": r.mtbf_gpu_hours_observed},
        {"quantity": "checkpoint (s)", "plan": plan.get("checkpoint_write_seconds"),
         "actual": r.checkpoint_seconds},
        {"quantity": "checkpoint interval (min)", "plan": plan.get("checkpoint_interval_minutes"),
         "actual": f.checkpoint_interval_minutes},
        {"quantity": "goodput", "plan": plan.get("goodput"), "actual": r.goodput},
        {"quantity": "interruptions", "plan": plan.get("expected_interruptions"), "actual": interruptions},
        {"quantity": "wall-clock (days)", "plan": plan.get("wall_clock_days"), "actual": days},
        {"quantity": "GPU-hours", "plan": plan.get("gpu_hours_total"),
         "actual": f.spent_gpu_hours + f.remaining_gpu_hours if f.remaining_gpu_hours is not None else None},
        {"quantity": "cost (USD)", "plan": plan.get("cost_usd"), "actual": f.total_cost_usd},
    ]  # fmt: skip


def from_run(path: Path, gpu: str | None = None) -> dict[str, Any]:
    """Everything `--from-run` reports: refit, forecast, the plan and the side-by-side comparison."""
    run = read_run(path)
    r = refit(run, gpu)
    f = reforecast(run, r)
    plan = predictions(run)
    return {
        "phase": run.status.get("phase"),
        "refit": asdict(r),
        "forecast": asdict(f),
        "plan": plan,
        "comparison": comparison(plan, r, f),
    }


def text(doc: dict[str, Any]) -> str:
    from tokensmith.core.output import table

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    r, f = doc["refit"], doc["forecast"]
    rows = [[c["quantity"], fmt(c["plan"]), fmt(c["actual"])] for c in doc["comparison"]]
    lines = [
        f"job {doc['phase']}: {f['tokens_done']} of {fmt(f['tokens_total'])} tokens at "
        f"{fmt(r['tokens_per_second'])} tokens/s on {fmt(r['devices'])} device(s)"
        + (f" ({r['gpu']})" if r["gpu"] else ""),
        "",
        table(rows, ["", "plan", "actual (so far + forecast)"]),
        "",
        f"remaining: {fmt(f['remaining_hours'])} h wall-clock ({fmt(f['solve_hours'])} h failure-free), "
        f"{fmt(f['remaining_gpu_hours'])} GPU-hours, ${fmt(f['remaining_cost_usd'])}, "
        f"{fmt(f['remaining_interruptions'])} interruptions expected; finish {f['finish_time'] or 'unknown'}",
        f"refit: MTBF {fmt(r['mtbf_gpu_hours'])} GPU-hours (gamma-Poisson on the plan's prior; observed "
        f"{fmt(r['mtbf_gpu_hours_observed'])} from {r['interruptions']} interruption(s) in "
        f"{fmt(r['exposure_gpu_hours'])} GPU-hours), checkpoint {fmt(r['checkpoint_seconds'])} s"
        f" ({'observed' if r['checkpoint_seconds_observed'] else 'prior'}), restart "
        f"{fmt(r['restart_minutes'])} min",
    ]
    if r["mfu"] is None:
        lines.append(f"MFU unknown: {r['mfu_note']}")
    else:
        lines.append(
            f"MFU {r['mfu']:.4g} (6N, as the planner counts it); PaLM's (attention included) "
            f"{r['mfu_palm']:.4g}"
        )
    return "\n".join(lines)
