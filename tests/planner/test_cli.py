"""`tokensmith plan` end to end: formats, files, the emitted job, bad input, and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tokensmith.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["plan", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_output() -> None:
    code, out, _ = run("--params", "7B", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["law"] == "chinchilla" and data["params"] == pytest.approx(7e9, rel=0.02)
    assert data["cluster"]["gpu"] == "H100-SXM"


def test_default_plan_is_useful_and_says_which_defaults_it_used() -> None:
    code, out, _ = run()
    assert code == 0
    assert "default budget" in out and "Assumptions" in out and "half size" in out


@pytest.mark.parametrize("fmt", ["yaml", "csv", "table"])
def test_other_formats(fmt: str) -> None:
    code, out, _ = run("--compute", "1e21", "--gpu", "a100-80gb", "--format", fmt)
    assert code == 0
    if fmt == "yaml":
        assert yaml.safe_load(out)["cluster"]["gpu"] == "A100-80GB"
    elif fmt == "csv":
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(out)))
        assert len(rows) == 1 and int(rows[0]["cluster.tensor_parallel"]) >= 1
    else:
        assert "Same compute, other model sizes" in out


def test_list_gpus() -> None:
    code, out, _ = run("--list-gpus")
    assert code == 0
    for name in ("A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIE", "H200", "B200", "MI300X", "L40S"):
        assert name in out
    code, out, _ = run("--list-gpus", "--format", "json")
    assert {g["name"] for g in json.loads(out)} >= {"H200", "MI300X"}


def test_files_plot_and_emitted_job_validate(tmp_path: Path) -> None:
    out, html, job = tmp_path / "plan.json", tmp_path / "plan.html", tmp_path / "job.yaml"
    code, stdout, _ = run(
        "--params",
        "7B",
        "--tokens",
        "1T",
        "--gpu",
        "H100-SXM",
        "--gpus",
        "64",
        "--format",
        "json",
        "--output",
        str(out),
        "--plot",
        str(html),
        "--emit-job",
        str(job),
    )
    assert code == 0 and stdout == ""
    plan = json.loads(out.read_text())
    page = html.read_text()
    assert (
        page.count("<div") >= 3 and "plotly" in page.lower() and "<script src=" not in page
    )  # self-contained
    assert "IsoFLOP" in page and "Pareto" in page

    from tokensmith.operator.spec import effective_trainer_config, parse_manifest

    manifest = yaml.safe_load(job.read_text())
    assert manifest["apiVersion"] == "tokensmith.dev/v1alpha1" and manifest["kind"] == "LLMTrainingJob"
    _, spec = parse_manifest(manifest)
    assert spec.cluster.nodes == plan["cluster"]["nodes"]
    assert spec.data.tokens == pytest.approx(1e12, rel=1e-9)
    assert spec.model is not None and spec.model.n_layers == plan["model"]["n_layers"]
    # everyMinutes: auto, starting from the plan's Daly interval (cadence.py steers it from there)
    assert spec.checkpoint.every_minutes == "auto" and spec.checkpoint.initial_minutes is not None
    assert spec.checkpoint.initial_minutes == pytest.approx(plan["checkpoint_interval_minutes"], abs=0.1)
    assert "adaptive" not in manifest["spec"]["checkpoint"]
    assert spec.budget.max_gpu_hours is not None and spec.budget.max_gpu_hours >= plan["gpu_hours_total"]
    trainer = effective_trainer_config(spec, manifest["metadata"]["name"])
    assert trainer.checkpoint.every_minutes == spec.checkpoint.initial_minutes
    assert trainer.deepspeed.zero_stage == plan["cluster"]["zero_stage"]
    assert trainer.train.global_batch_tokens == plan["cluster"]["global_batch_tokens"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", "7B", "--tokens", "1T", "--compute", "1e20"], "contradictory"),
        (["--params", "-7B"], "positive"),
        (["--params", "0"], "positive"),
        (["--tokens", "0"], "positive"),
        (["--gpu", "Z100"], "unknown GPU"),
        (["--params", "7x"], "not a number"),
        (["--mfu", "2"], "fraction"),
        (["--gpus", "3.5"], "whole number"),
        (["--law", "bogus"], "bogus"),
        (["--params", "7B", "--budget-usd", "0.00001"], "does not buy one optimizer step"),
        (["--params", "7B", "--experts", "8"], "--layouts any"),
        (["--params", "7B", "--precision", "fp8", "--layouts", "any", "--gpu", "A100"], "FP8"),
        (
            ["--params", "47B", "--experts", "8", "--layouts", "any", "--gpus", "64"],
            "mixture-of-experts models (8 experts) are not implemented by tokensmith train",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    targets = [tmp_path / "out.json", tmp_path / "plot.html", tmp_path / "job.yaml"]
    targets[0].write_text("previous")  # an existing output must survive a failed run unchanged
    code, _, err = run(
        *args, "--output", str(targets[0]), "--plot", str(targets[1]), "--emit-job", str(targets[2])
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert message in err and (len(lines) == 1 or lines[0].startswith("Usage:"))
    assert targets[0].read_text() == "previous"
    assert not targets[1].exists() and not targets[2].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary files left


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from tokensmith.cli import cli\n"
        "for argv in (['--help'], ['plan', '--help']):\n"
        "    try:\n"
        "        cli.main(args=argv, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('pandas', 'numpy', 'plotly', 'torch') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_json_plan_does_not_import_pandas() -> None:
    code = (
        "import sys, io, contextlib\n"
        "from tokensmith.cli import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(args=['plan', '--params', '7B', '--format', 'json'], standalone_mode=False)\n"
        "print('pandas' in sys.modules, 'plotly' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_owned_plan_emits_no_dollar_budget_and_table_shows_hardware(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    code, out, _ = run(
        "--params", "1B", "--gpus", "8", "--owned", "--purchase-price", "30k", "--emit-job", str(job)
    )
    assert code == 0 and "hardware" in out
    budget = yaml.safe_load(job.read_text())["spec"]["budget"]
    assert "maxGPUHours" in budget and "maxCostUSD" not in budget


def test_kaplan_plan_notes_the_fitted_frontier() -> None:
    code, out, _ = run("--compute", "1e21", "--law", "kaplan", "--format", "json")
    assert code == 0
    assert any("frontier" in note for note in json.loads(out)["notes"])


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys\n"
        "import tokensmith.planner\n"
        "light = not any(m in sys.modules for m in ('numpy', 'pandas', 'plotly'))\n"
        "from tokensmith.planner import plan\n"
        "print(light, callable(plan))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True True"
