"""`make demo`: the whole journey on one machine without a GPU, in a few minutes.

1. `tokensmith plan` for the tiny model and token budget the demo trains (plots: plan.html);
2. `tokensmith curate` on real text every CPython installation carries (the pydoc topics);
3. `tokensmith run examples/tiny-job.yaml --local` with 2 processes, a worker killed after step 15,
   the automatic restart from the checkpoint of step 10, an evaluation of every checkpoint, and the
   final summary (plan vs what happened, the evaluation table, the HTML report).
The demo then checks what it promised (a restart that resumed from a checkpoint step > 0, every
evaluation finished) and exits non-zero otherwise.

    python -m tokensmith.operator.local.demo [--out demo-out]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[4]
JOB = REPO / "examples" / "tiny-job.yaml"
DATA_IN_IMAGE = "/opt/tokensmith/sample-data"  # where tiny-job.yaml expects the shards
TOKENS = 245_760  # 30 optimizer steps of 8,192 tokens
FAIL_AFTER = 15  # kill the gang after step 15: the checkpoint of step 10 is the newest
TOKENSMITH = [sys.executable, "-m", "tokensmith.cli"]


def stage(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def call(args: list[str]) -> int:
    print("$ tokensmith " + " ".join(args), flush=True)
    proc = subprocess.Popen([*TOKENSMITH, *args])
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # The child got the same Ctrl-C (one process group) and stops its gang cleanly;
            # subprocess.call would SIGKILL it here and orphan the workers.
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="output directory (git-ignored)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    from tokensmith.operator.local.manifest import load_job
    from tokensmith.planner.arch import param_counts

    job = load_job(JOB, out / "runs")
    model = job.trainer_config().model
    counts = param_counts(model)
    # The planner's shapes untie the output head; plan the same blocks with an untied head (the tiny
    # preset ties it, so its own count is below the smallest shape the planner builds at this vocabulary).
    params = counts.non_embedding + 2 * model.vocab_size * model.d_model

    stage(f"1/3 plan: {params:,} parameters, {TOKENS:,} tokens")
    plan = out / "plan.json"
    code = call(
        ["plan", "--params", str(params), "--tokens", str(TOKENS), "--vocab-size", str(model.vocab_size),
         "--seq-len", str(model.seq_len), "--gpus", "1", "--format", "json", "--output", str(plan),
         "--plot", str(out / "plan.html")]
    )  # fmt: skip
    if code:
        return code
    doc = json.loads(plan.read_text())
    print(
        f"plan: {doc['law']} law predicts loss {doc['predicted_loss']:.2f} at {doc['tokens']:,.0f} tokens; "
        f"{doc['cluster']['gpus']}x {doc['cluster']['gpu']} would need "
        f"{doc['gpu_hours_total']:.2e} GPU-hours; "
        f"plots: {out / 'plan.html'}"
    )

    stage("2/3 curate the CPython documentation (pydoc topics) into token shards")
    from tokensmith.trainer.data.samples import pydoc_corpus

    corpus = pydoc_corpus(out / "pydoc.jsonl")
    data = out / "data"
    code = call(
        ["curate", str(corpus), "--out", str(data), "--vocab-size", "2048", "--valid-fraction", "0.1",
         "--word-tokenizer", "regex", "--skip", "gopher_quality", "--skip", "gopher_repetition",
         "--skip", "c4", "--skip", "fineweb", "--skip", "language", "--no-progress"]
    )  # fmt: skip
    if code:
        return code

    stage(f"3/3 run {JOB.relative_to(REPO)} locally: 2 processes, worker killed after step {FAIL_AFTER}")
    summary = out / "summary.json"
    code = call(
        ["run", str(JOB), "--local", "--fresh", "--workdir", str(out / "runs"),
         "--mount", f"{DATA_IN_IMAGE}={data}", "--set", f"data.tokens={TOKENS}",
         "--set", "checkpoint.everySteps=10", "--set", "checkpoint.keep=5",
         "--set", "restartPolicy.backoffSeconds=2", "--set", "trainer.train.log_every_steps=2",
         "--set", "trainer.train.eval_every_steps=10",
         "--inject-failure", f"step={FAIL_AFTER}", "--plan", str(plan),
         "--report", str(out / "report.html"), "--output", str(summary)]
    )  # fmt: skip
    if code:
        return code
    return check(job.status_path, out, time.monotonic() - started)


def check(status_path: Path, out: Path, seconds: float) -> int:
    """What the demo promises, checked from the status document the run wrote."""
    status = json.loads(status_path.read_text())
    lines = (status_path.parent / "local" / "history.jsonl").read_text().splitlines()
    history = [json.loads(x) for x in lines if x.strip()]
    resumed = [r for r in history if r.get("type") == "attempt" and r.get("resume_step", 0) > 0]
    problems = []
    if status.get("phase") != "Succeeded":
        problems.append(f"phase {status.get('phase')}, expected Succeeded")
    if not resumed:
        problems.append("no attempt resumed from a checkpoint")
    evals = status.get("evaluations") or []
    if not evals or any(e.get("phase") != "Succeeded" for e in evals):
        problems.append(f"evaluations not all Succeeded: {[(e['step'], e['phase']) for e in evals]}")
    from tokensmith.operator.goodput import ledger_problem

    unbalanced = ledger_problem(status)
    if unbalanced is not None:
        problems.append(f"the goodput ledger does not add up: {unbalanced}")
    drift = timeline_problem(status, history)
    if drift is not None:
        problems.append(f"the report's goodput timeline does not add up: {drift}")
    print()
    if problems:
        print("demo FAILED: " + "; ".join(problems))
        return 1
    r = resumed[-1]
    print(
        f"demo OK in {seconds:.0f}s: attempt {r['attempt']} resumed from checkpoint step {r['resume_step']}, "
        f"{len(evals)} checkpoints evaluated; {_goodput_line(status)}. "
        f"Open {out / 'report.html'} and {out / 'plan.html'}."
    )
    return 0


def timeline_problem(status: dict[str, Any], history: list[dict[str, Any]]) -> str | None:
    """One line when the goodput timeline does not add up to the status' ledger by cause (1e-6
    GPU-hours): the runner's last sample (written at exit) and the segments the report plots
    (timeline.py); else None."""
    from tokensmith.operator.local import goodput_report, timeline
    from tokensmith.operator.spec import LLMTrainingJobStatus

    st = LLMTrainingJobStatus.model_validate(status)
    if st.productive_gpu_hours is None:
        return None
    want = {timeline.PRODUCTIVE: st.productive_gpu_hours, **st.lost_gpu_hours}
    ledger = [r for r in history if r.get("type") == timeline.RECORD]
    last = timeline.from_record(ledger[-1]) if ledger else None
    if last is None:
        return "the runner recorded no goodput samples"
    for what, got in (
        ("the runner's last sample", dict(last.hours)),
        (
            "the report's segments",
            timeline.totals(timeline.segments(goodput_report.points_of(ledger, st, None))),
        ),
    ):
        off = {k: got.get(k, 0.0) - v for k, v in want.items() if abs(got.get(k, 0.0) - v) > 1e-6}
        if off:
            return f"{what}: " + ", ".join(f"{k} off by {v:.3g} GPU-hours" for k, v in off.items())
    return None


def _goodput_line(status: dict[str, object]) -> str:
    """Goodput and the lost GPU-hours by cause, from the status document (the ledger adds up: checked)."""
    lost = status.get("lostGPUHours") or {}
    assert isinstance(lost, dict)
    causes = ", ".join(f"{k} {float(v):.4f}" for k, v in lost.items() if float(v) > 0) or "none"
    goodput = status.get("goodput")
    shown = f"{float(goodput):.3g}" if isinstance(goodput, (int, float)) else "unknown"
    return f"goodput {shown} (GPU-hours lost: {causes})"


if __name__ == "__main__":
    sys.exit(main())
