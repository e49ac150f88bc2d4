"""`tokensmith plan`: model size, tokens, cluster shape, cost, energy and failures from a budget.

Imports nothing heavy at module level (numpy/pandas/plotly load inside the command), so
`tokensmith plan --help` stays fast. Everything is computed before anything is written; every file
is written atomically, so an error leaves `--output`, `--plot` and `--emit-job` untouched.
"""

from __future__ import annotations

from typing import Any

import click

from tokensmith.core.errors import TokensmithError
from tokensmith.core.output import format_option

LAWS = ("chinchilla", "chinchilla-rounded", "chinchilla-refit", "kaplan", "tokens-per-param")

# option name -> help; all take numbers in plain, scientific or suffixed form (7e9, 7B, 1.5T, 250k)
NUMBER_OPTIONS: dict[str, str] = {
    "params": "Model size in parameters (7B, 6.74e9).",
    "tokens": "Training tokens (2T).",
    "compute": "Training compute in FLOPs (1e23); alone it gives the law's compute-optimal model.",
    "budget-usd": "Dollar budget (an upper bound; alone it buys the most compute it can).",
    "gpu-hours": "GPU-hour budget (failures included).",
    "deadline-days": "Wall-clock deadline in days (failures included).",
    "gpus": "Fix the number of GPUs.",
    "gpus-per-node": "GPUs per node (default: the GPU's reference system, 8).",
    "mfu": "Model FLOPs utilisation (6ND convention); default: the performance model's estimate.",
    "tokens-per-param": "Tokens per parameter for --law tokens-per-param (default 20).",
    "inference-tokens": "Expected lifetime inference tokens: Sardana et al. 2023's inference-aware optimum.",
    "price-per-gpu-hour": "Cloud price in USD per GPU-hour (default: the catalogue's).",
    "purchase-price": "With --owned: purchase price per GPU incl. its server share, USD.",
    "lifetime-years": "With --owned: amortisation period (default 4).",
    "pue": "Data-centre power usage effectiveness (default 1.1).",
    "carbon-intensity": "Grid carbon intensity, kg CO2e per kWh (default 0.429).",
    "energy-price": "Electricity price, USD per MWh (default 80).",
    "gpu-power-w": "Average power per GPU in W, node share included unless --node-overhead is given "
    "(default: utilisation-dependent fraction of TDP plus node overhead).",
    "node-overhead": "Non-GPU power per GPU as a fraction of TDP (default 0.25, or 0 with --gpu-power-w).",
    "mtbf-gpu-hours": "Mean GPU-hours between failures (default 50,700, Llama 3).",
    "restart-minutes": "Time to restart after a failure (default 10).",
    "checkpoint-minutes": "Checkpoint interval (default: Daly's optimum).",
    "seq-len": "Context length (default 4096).",
    "vocab-size": "Vocabulary size (default 32000).",
    "global-batch-tokens": "Tokens per optimizer step (default: DeepSeek LLM's batch-size law).",
    "max-tensor-parallel": "Largest tensor-parallel degree to consider (1 with --max-pipeline-parallel 1: "
    "data parallel only, what `tokensmith train` runs today).",
    "max-pipeline-parallel": "Largest pipeline-parallel degree to consider.",
    "experts": "Mixture of experts: routed experts per MoE block (--params stays the total count; "
    "needs --layouts any).",
    "experts-per-token": "Routed experts each token uses (top-k; default 2).",
    "shared-experts": "Always-active experts per MoE block (DeepSeekMoE; default 0).",
}
INTEGER_OPTIONS = {
    "experts",
    "experts-per-token",
    "shared-experts",
    "gpus",
    "gpus-per-node",
    "seq-len",
    "vocab-size",
    "max-tensor-parallel",
    "max-pipeline-parallel",
}


def _number_options(func: Any) -> Any:
    for name, text in reversed(NUMBER_OPTIONS.items()):
        func = click.option(
            f"--{name}", name.replace("-", "_"), type=str, default=None, metavar="NUMBER", help=text
        )(func)
    return func


def list_gpus_text(fmt: str) -> str:
    from tokensmith.core.output import table, to_csv, to_json, to_yaml
    from tokensmith.planner.gpus import CATALOGUE

    rows = [g.as_dict() for g in CATALOGUE.values()]
    if fmt == "json":
        return to_json(rows)
    if fmt == "yaml":
        return to_yaml(rows)
    if fmt == "csv":
        return to_csv(rows)
    headers = [
        "name",
        "memory GB",
        "BF16 TFLOP/s",
        "FP8 TFLOP/s",
        "HBM TB/s",
        "TDP W",
        "intra GB/s",
        "net GB/s",
        "$/GPU-h",
        "buy $",
    ]
    return table(
        [
            (
                g.name,
                g.memory_gb,
                g.peak_tflops,
                g.fp8_tflops or "-",
                g.hbm_tbs,
                g.tdp_w,
                g.intra_gbs,
                g.inter_gbs,
                g.price_usd_hour,
                g.purchase_usd,
            )
            for g in CATALOGUE.values()
        ],
        headers,
    )


@click.command(name="plan", context_settings={"help_option_names": ["-h", "--help"]})
@_number_options
@click.option(
    "--gpu", "gpu", type=str, default=None, help="GPU type (A100-80GB, H100-SXM, ...; see --list-gpus)."
)
@click.option(
    "--law",
    type=click.Choice(list(LAWS), case_sensitive=False),
    default=None,
    help="Scaling law (default chinchilla).",
)
@click.option(
    "--owned", is_flag=True, help="Owned hardware: amortised purchase price plus energy, not a cloud price."
)
@click.option(
    "--model",
    "model",
    type=str,
    default=None,
    help="A named architecture instead of --params (mixtral-8x7b, deepseek-v3, llama-70b, ...).",
)
@click.option(
    "--precision",
    type=click.Choice(["bf16", "fp8"], case_sensitive=False),
    default=None,
    help="Training precision: bf16 (default) or fp8 GEMMs with bf16 weights (needs --layouts any).",
)
@click.option(
    "--layouts",
    type=click.Choice(["trainable", "any"], case_sensitive=False),
    default=None,
    help="Layouts searched: trainable (default: what tokensmith train runs; --emit-job needs it) or any "
    "(any stack: interleaved pipelines, expert and context parallelism, FP8, MoE).",
)
@click.option("--list-gpus", is_flag=True, help="Print the GPU catalogue and exit.")
@format_option()
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the report here (atomically).",
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a self-contained HTML page of plots.",
)
@click.option(
    "--emit-job",
    "emit_job",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write an LLMTrainingJob manifest (YAML).",
)
@click.option(
    "--job-name", type=str, default=None, help="metadata.name of the emitted job (default from the plan)."
)
@click.option(
    "--from-run",
    "from_run",
    type=click.Path(dir_okay=False),
    default=None,
    help="Refit MFU, MTBF and checkpoint cost from a job's status.json (job.json beside it) or llmjob "
    "YAML and re-forecast finish time and cost, plan vs actual (--gpu: the GPU when the job does not say).",
)
def plan(
    from_run: str | None,
    gpu: str | None,
    law: str | None,
    owned: bool,
    model: str | None,
    precision: str | None,
    layouts: str | None,
    list_gpus: bool,
    fmt: str,
    output: str | None,
    plot: str | None,
    emit_job: str | None,
    job_name: str | None,
    **numbers: str | None,
) -> None:
    """Pick model size, tokens and cluster shape from scaling laws; cost, energy and failures.

    Give any consistent subset of --params, --tokens, --compute, --budget-usd, --gpu-hours,
    --deadline-days and --gpus; the rest is derived. With no inputs it plans a default budget.
    Numbers accept 7e9, 7B, 1.5T, 250k. Exit code 2 on bad or contradictory input.
    """
    fmt = fmt.lower()
    if from_run is not None:
        import json as _json
        from pathlib import Path as _Path

        from tokensmith.planner import fromrun

        try:
            refit = fromrun.from_run(_Path(from_run), gpu)
        except fromrun.FromRunError as err:
            raise click.UsageError(str(err)) from err
        body = _json.dumps(refit, indent=2) if fmt == "json" else fromrun.text(refit)
        _emit(body, output)
        return
    if list_gpus:
        _emit(list_gpus_text(fmt), output)
        return
    kwargs = _parse_numbers(numbers)
    kwargs.update(
        gpu=gpu,
        law=law.lower() if law else None,
        owned=owned,
        model=model,
        precision=precision.lower() if precision else None,
        layouts=layouts.lower() if layouts else None,
    )

    from tokensmith.planner.planning import PlanError
    from tokensmith.planner.planning import plan as make_plan

    try:
        result = make_plan(**{k: v for k, v in kwargs.items() if v is not None})
    except PlanError as err:
        raise TokensmithError(str(err)) from None
    # Compute every artefact before writing any, so that an error leaves no file behind.
    text = _render(result, fmt)
    html = None
    if plot:
        from tokensmith.planner.plots import render_html

        html = render_html(result)
    job_text = None
    if emit_job:
        job_text = _job_yaml(result, job_name)
    from tokensmith.core.io import atomic_write_text

    if html is not None and plot:
        atomic_write_text(plot, html)
    if job_text is not None and emit_job:
        atomic_write_text(emit_job, job_text)
    _emit(text, output)


def _parse_numbers(numbers: dict[str, str | None]) -> dict[str, Any]:
    from tokensmith.core.units import parse_number

    out: dict[str, Any] = {}
    for key, raw in numbers.items():
        if raw is None:
            continue
        flag = "--" + key.replace("_", "-")
        try:
            value = parse_number(raw)
        except ValueError as err:
            raise TokensmithError(f"{flag}: {err}") from None
        if value <= 0 and key not in (
            "carbon_intensity",
            "energy_price",
            "inference_tokens",
            "node_overhead",
            "restart_minutes",
            "shared_experts",
        ):
            raise TokensmithError(f"{flag} must be a positive number, got {raw}")
        if flag.removeprefix("--") in INTEGER_OPTIONS:
            if value != int(value):
                raise TokensmithError(f"{flag} must be a whole number, got {raw}")
            value = int(value)
        out[key] = value
    return out


def _render(result: Any, fmt: str) -> str:
    from tokensmith.core.output import to_csv, to_json, to_yaml

    if fmt == "json":
        return to_json(result.to_dict())
    if fmt == "yaml":
        return to_yaml(result.to_dict())
    if fmt == "csv":
        row = result.to_dict()
        for key in ("alternatives", "pareto_front", "assumptions", "notes"):
            row.pop(key)
        return to_csv([row])
    from tokensmith.planner.report import render

    return render(result)


def _job_yaml(result: Any, name: str | None) -> str:
    import yaml

    from tokensmith.planner.emit import build_job

    try:
        manifest = build_job(result, name)
    except ValueError as err:  # pydantic ValidationError is a ValueError; untrainable layouts too
        raise TokensmithError(f"cannot build the LLMTrainingJob: {str(err).splitlines()[0]}") from None
    return yaml.safe_dump(manifest, sort_keys=False)


def _emit(text: str, output: str | None) -> None:
    if output:
        from tokensmith.core.io import atomic_write_text

        atomic_write_text(output, text if text.endswith("\n") else text + "\n")
    else:
        click.echo(text)
