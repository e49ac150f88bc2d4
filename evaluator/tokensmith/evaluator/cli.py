"""`tokensmith eval`: score a checkpoint on lm-evaluation-harness tasks and held-out perplexity;
`tokensmith eval compare RUN_DIR`: plot the metrics over checkpoint steps.

Heavy libraries (torch, lm_eval, datasets, plotly) are imported inside the functions that use them.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from tokensmith.core.errors import TokensmithError
from tokensmith.core.io import atomic_write_text
from tokensmith.core.output import format_option, to_csv, to_json, to_yaml

DEVICES = ("cpu", "cuda")


@click.group(
    name="eval",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--checkpoint", type=click.Path(path_type=Path), help="Checkpoint dir, checkpoint.dir, or HF export."
)
@click.option("--tasks", multiple=True, help="Task names, comma-separated (see --list-tasks).")
@click.option(
    "--num-fewshot", type=click.IntRange(min=0), help="Few-shot examples for every task [default: per task]."
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Score at most N items per task (for quick checks)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option(
    "--tokenizer", type=click.Path(path_type=Path), help="tokenizer.json, when the checkpoint has none."
)
@click.option(
    "--perplexity-data",
    type=click.Path(path_type=Path),
    help="Held-out token shards (e.g. OUT/valid from `tokensmith curate`) for perplexity and bits per byte.",
)
@click.option("--perplexity-tokens", type=click.IntRange(min=1), help="Score at most N held-out tokens.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="JSONL files to use instead of the bundled ones."
)
@click.option(
    "--include-path", multiple=True, type=click.Path(path_type=Path), help="More lm-eval task dirs."
)
@click.option("--list-tasks", is_flag=True, help="List tasks (bundled offline tasks first) and exit.")
@click.option("--bundled-only", is_flag=True, help="With --list-tasks: only the bundled tasks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for few-shot sampling.")
@click.option("--verbose", is_flag=True, help="Show lm-eval's own log.")
@format_option(choices=("table", "json"))
@click.option(
    "--output", type=click.Path(path_type=Path), help="Write the full JSON result here (atomically)."
)
@click.pass_context
def eval_(ctx: click.Context, **opts: Any) -> None:
    """Score a checkpoint on benchmarks (lm-evaluation-harness) and held-out perplexity.

    \b
    tokensmith eval --checkpoint ckpts/ --tasks tokensmith_local --limit 20
    tokensmith eval --checkpoint ckpts/step-00001000 --tasks arc_easy_local,mmlu_local \\
        --perplexity-data data/valid --output eval/step-1000.json
    tokensmith eval compare eval/

    Inside a Kubernetes Job the short JSON form also goes to /dev/termination-log (or to the file in
    TOKENSMITH_TERMINATION_LOG). Exit codes: 0 done, 2 bad input (missing or corrupt checkpoint,
    unknown task), 1 a bug.
    """
    if ctx.invoked_subcommand is not None:
        return
    if opts["list_tasks"]:
        _list_tasks(opts)
        return
    try:
        run(opts)
    except TokensmithError as err:
        from tokensmith.evaluator.termination import write_termination_message

        write_termination_message(to_json({"schema": "tokensmith.eval/v1", "error": err.format_message()}))
        raise


def _list_tasks(opts: dict[str, Any]) -> None:
    from tokensmith.core.output import table
    from tokensmith.evaluator.harness import list_tasks, quiet_libraries

    quiet_libraries(opts["verbose"])
    rows = list_tasks(opts["include_path"], with_harness=not opts["bundled_only"])
    if opts["fmt"] == "json":
        click.echo(to_json(rows))
    else:
        click.echo(
            table(
                [[r["task"], r["source"], r["num_fewshot"] or ""] for r in rows], ["task", "source", "n-shot"]
            )
        )


def run(opts: dict[str, Any]) -> dict[str, Any]:
    """The evaluation: load, score tasks and perplexity, report. Returns the result document."""
    from tokensmith.evaluator.harness import quiet_libraries, split_names, stay_offline

    names = split_names(opts["tasks"])
    if opts["checkpoint"] is None:
        raise TokensmithError(
            "pass --checkpoint PATH (a checkpoint directory, checkpoint.dir, or an HF export)"
        )
    if not names and opts["perplexity_data"] is None:
        raise TokensmithError("nothing to do: pass --tasks NAME[,NAME...] and/or --perplexity-data DIR")
    if opts["perplexity_data"] is not None and not Path(opts["perplexity_data"]).is_dir():
        raise TokensmithError(
            f"--perplexity-data {opts['perplexity_data']} is not a directory of token shards"
        )
    if not Path(opts["checkpoint"]).exists():
        raise TokensmithError(
            f"checkpoint {opts['checkpoint']} does not exist; pass a checkpoint directory, the run's "
            "checkpoint.dir, or an exported Hugging Face model directory"
        )
    stay_offline(names)
    quiet_libraries(opts["verbose"])
    device = _check_device(opts["device"])
    started = time.perf_counter()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")

    import lm_eval

    from tokensmith.evaluator import harness, report
    from tokensmith.evaluator.checkpoint import load_for_eval
    from tokensmith.evaluator.lm import TokensmithLM
    from tokensmith.evaluator.perplexity import shard_perplexity
    from tokensmith.evaluator.termination import write_termination_message

    manager = harness.prepare(names, opts["include_path"], opts["data_dir"]) if names else None
    loaded = load_for_eval(opts["checkpoint"], device, opts["tokenizer"])
    lm = TokensmithLM(
        model=loaded.forward,
        tokenizer=loaded.tokenizer,
        max_length=loaded.max_length,
        batch_size=opts["batch_size"],
        device=device,
        progress=sys.stderr.isatty(),
    )
    lm.info = loaded.info()
    task_results = None
    if names:
        task_results = harness.evaluate(
            lm,
            names,
            num_fewshot=opts["num_fewshot"],
            limit=opts["limit"],
            manager=manager,
            seed=opts["seed"],
        )
    ppl = None
    if opts["perplexity_data"] is not None:
        ppl = shard_perplexity(
            loaded.forward,
            loaded.tokenizer,
            opts["perplexity_data"],
            max_length=loaded.max_length,
            batch_size=opts["batch_size"],
            device=device,
            max_tokens=opts["perplexity_tokens"],
        )
    doc = report.build_document(
        model_info=loaded.info(),
        lm_eval_results=task_results,
        perplexity=ppl,
        lm_eval_version=getattr(lm_eval, "__version__", "unknown"),
        wall_time_s=time.perf_counter() - started,
        created=created,
        settings={
            "device": device,
            "batch_size": opts["batch_size"],
            "limit": opts["limit"],
            "num_fewshot_override": opts["num_fewshot"],
        },
    )
    if opts["output"] is not None:
        atomic_write_text(opts["output"], to_json(doc) + "\n")
    write_termination_message(report.short_form(doc))
    click.echo(to_json(doc) if opts["fmt"] == "json" else report.render_table(doc))
    return doc


def _check_device(device: str) -> str:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TokensmithError("--device cuda: no CUDA device is visible here; use --device cpu")
    return device


@eval_.command(name="compare")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--output", type=click.Path(path_type=Path), help="HTML plot [default: RUN_DIR/eval_compare.html]."
)
@format_option(choices=("table", "json", "yaml", "csv"))
def compare(run_dir: Path, output: Path | None, fmt: str) -> None:
    """Plot how each metric moves over checkpoint steps (self-contained plotly HTML)."""
    from tokensmith.core.output import table
    from tokensmith.evaluator import compare as cmp

    docs = cmp.find_documents(run_dir)
    if not docs:
        raise TokensmithError(
            f"{run_dir} holds no tokensmith eval results (JSON written by `tokensmith eval --output`)"
        )
    data = cmp.series(docs)
    target = output or Path(run_dir) / "eval_compare.html"
    atomic_write_text(target, cmp.figure_html(data, f"Evaluation over steps: {run_dir}"))
    rows = cmp.rows(data)
    if fmt == "json":
        click.echo(to_json(rows))
    elif fmt == "yaml":
        click.echo(to_yaml(rows))
    elif fmt == "csv":
        click.echo(to_csv(rows), nl=False)
    else:
        click.echo(
            table(
                [[r["task"], r["metric"], r["step"], round(r["value"], 4)] for r in rows],
                ["task", "metric", "step", "value"],
            )
        )
        click.echo(f"plot: {target}")
