"""`tokensmith run JOB.yaml --local`: an LLMTrainingJob on this machine, decided by the operator's code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tokensmith.core.errors import EXIT_CONFIG, TokensmithError

EXIT_JOB_FAILED = 3
EXIT_INTERRUPTED = 130


def parse_injection(text: str | None) -> int | None:
    """`step=N` -> N."""
    if text is None:
        return None
    key, sep, value = text.partition("=")
    if key.strip() != "step" or not sep or not value.strip().isdigit() or int(value) < 1:
        raise TokensmithError(f"--inject-failure {text!r}: expected step=N with N >= 1 (e.g. step=15)")
    return int(value)


def read_plan(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TokensmithError(
            f"--plan {path}: not a JSON plan ({err}); write one with `tokensmith plan --format json "
            "--output FILE`"
        ) from err
    if not isinstance(data, dict) or "params" not in data or "law" not in data:
        raise TokensmithError(f"--plan {path}: no 'params'/'law' fields; is it `tokensmith plan` JSON?")
    return data


@click.command(name="run")
@click.argument("job_file", metavar="JOB.yaml", type=click.Path(dir_okay=False))
@click.option("--local", "local", is_flag=True, help="Run on this machine (required; clusters use kubectl).")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="runs",
    show_default=True,
    help="The checkpoint volume: checkpoints, status.json and logs go to WORKDIR/<job name>.",
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="CONTAINER_PATH=LOCAL_PATH",
    help="Map a path of the manifest (e.g. the shards' directory) to a local one (repeatable).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one spec field before validation, e.g. --set data.tokens=327680 (repeatable).",
)
@click.option("--inject-failure", metavar="step=N", help="Kill the gang after step N, once (attempt 1).")
@click.option(
    "--plan", "plan_path", type=click.Path(dir_okay=False), help="`tokensmith plan` JSON to compare with."
)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="HTML report path.")
@click.option(
    "--max-parallel-evals",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Evaluations run at once; the rest wait (like Jobs whose pods are Pending).",
)
@click.option("--fresh", is_flag=True, help="Delete this job's checkpoints and status first.")
@click.option("--quiet", is_flag=True, help="No live status line or events.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Format of the final summary.",
)  # fmt: skip
@click.option(
    "--output", "output", type=click.Path(dir_okay=False), help="Write the summary here (atomically)."
)
def run(
    job_file: str,
    local: bool,
    workdir: str,
    mounts: tuple[str, ...],
    sets: tuple[str, ...],
    inject_failure: str | None,
    plan_path: str | None,
    report_path: str | None,
    max_parallel_evals: int,
    fresh: bool,
    quiet: bool,
    fmt: str,
    output: str | None,
) -> None:
    """Run an LLMTrainingJob manifest on this machine with the operator's own decisions.

    The worker gang becomes local processes (`tokensmith train --nproc`, one launcher per node),
    the checkpoint volume WORKDIR/<job name>, evaluation Jobs `tokensmith eval` processes. Restarts,
    backoff, evaluation scheduling and the GPU-hour budget are decided by the operator's `reconcile`.
    Ctrl-C stops the gang cleanly (the trainer checkpoints); running the same command again resumes.

    Exit codes: 0 Succeeded; 2 bad input; 3 the job ended Failed; 78 it failed on its configuration;
    130 interrupted (suspended: run again to resume).
    """
    from tokensmith.core.io import atomic_write_text
    from tokensmith.core.output import to_json
    from tokensmith.operator.local.display import Display
    from tokensmith.operator.local.manifest import check_local_paths, load_job
    from tokensmith.operator.local.report import (
        read_history,
        read_valid_losses,
        summary,
        summary_text,
        write_html,
    )
    from tokensmith.operator.local.runner import LocalRunner

    if not local:
        raise TokensmithError(
            "only --local is supported by `tokensmith run`; on a cluster: kubectl apply -f " + job_file
        )
    step = parse_injection(inject_failure)
    plan = read_plan(plan_path)
    job = load_job(job_file, workdir, mounts, sets)
    check_local_paths(job)
    try:
        total_steps: int | None = job.trainer_config().total_steps()
    except ValueError:
        total_steps = None
    display = Display(total_steps, quiet=quiet)
    if not quiet:
        click.echo(
            f"running {job.name} locally: {job.spec.cluster.nodes} node(s) x {job.spec.procs_per_node} "
            f"process(es); checkpoints and status in {job.checkpoint_dir}",
            err=True,
        )
    runner = LocalRunner(
        job, step, max_parallel_evals, on_change=display.status, on_event=display.event, fresh=fresh
    )
    result = runner.run()
    display.close()

    history = read_history(result.history)
    html = Path(report_path) if report_path else job.checkpoint_dir / "report.html"
    valid = read_valid_losses(job.checkpoint_dir / "metrics.jsonl")
    write_html(html, job.name, result.status, history, plan, valid, dict(job.annotations))
    data = summary(result.status, history, plan, dict(job.annotations))
    data["report"] = str(html)
    data["status_file"] = str(job.status_path)
    text = to_json(data) if fmt == "json" else summary_text(data, html)
    if output:
        atomic_write_text(output, text + "\n")
    click.echo(text)
    st = result.status
    if result.interrupted and st.phase not in ("Succeeded", "Failed"):
        click.echo(f"interrupted: {st.message or st.phase}; run the same command again to resume", err=True)
        raise SystemExit(EXIT_INTERRUPTED)
    if st.phase == "Failed":
        reason = st.last_failure.reason if st.last_failure else ""
        raise SystemExit(EXIT_CONFIG if reason in ("ConfigError", "InvalidSpec") else EXIT_JOB_FAILED)
