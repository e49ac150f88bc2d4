"""`tokensmith operator` and `tokensmith crd` at the command line; metrics names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tokensmith.cli import cli

REPO = Path(__file__).resolve().parents[2]


def test_operator_is_a_group_with_run() -> None:
    result = CliRunner().invoke(cli, ["operator", "--help"])
    assert result.exit_code == 0 and "run" in result.output
    result = CliRunner().invoke(cli, ["operator", "run", "--help"])
    assert result.exit_code == 0
    for flag in ("--namespace", "--peering", "--standalone", "--metrics-port", "--liveness", "--interval"):
        assert flag in result.output


def test_bad_interval_is_one_clear_line() -> None:
    result = CliRunner().invoke(cli, ["operator", "run", "--interval", "0", "--standalone"])
    assert result.exit_code == 2 and "--interval must be positive" in result.output


def test_no_credentials_is_one_clear_line(tmp_path: object, monkeypatch: object) -> None:
    import pytest

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    mp.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    mp.setenv("HOME", str(tmp_path))
    mp.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(cli, ["operator", "run", "--standalone"])
    assert result.exit_code == 2 and "no Kubernetes credentials" in result.output


def test_crd_and_operator_help_do_not_import_kopf() -> None:
    code = (
        "import sys; from tokensmith.cli import main\n"
        "try:\n    main(['crd', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'kopf' not in sys.modules and 'kubernetes' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_metrics_have_the_documented_names() -> None:
    from prometheus_client import generate_latest

    from tokensmith.operator.metrics import OperatorMetrics

    m = OperatorMetrics()
    m.observe_job("ml", "a", "Running", 1.5)
    m.observe_job("ml", "b", "Failed", 0.0)
    m.restarts.labels("OOMKilled").inc()
    m.reconcile_seconds.observe(0.01)
    text = generate_latest(m.registry).decode()
    assert 'tokensmith_jobs{phase="Running"} 1.0' in text and 'tokensmith_jobs{phase="Failed"} 1.0' in text
    assert 'tokensmith_job_gpu_hours{job="a",namespace="ml"} 1.5' in text
    assert "tokensmith_gang_restarts_total" in text and "tokensmith_reconcile_duration_seconds_bucket" in text
    m.forget_job("ml", "a")
    assert 'tokensmith_jobs{phase="Running"} 0.0' in generate_latest(m.registry).decode()


def test_render_prints_valid_children_and_rejects_bad_jobs(tmp_path: object) -> None:
    from pathlib import Path

    import kubernetes_validate
    import yaml

    from tokensmith.operator.spec import build_manifest

    base = Path(str(tmp_path))
    spec = {
        "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ck"}}},
        "cluster": {"nodes": 3, "gpusPerNode": 8},
        "data": {"tokens": 10**9},
        "parallelism": {"microBatch": 1, "globalBatchTokens": 128 * 24},
    }
    job = base / "job.yaml"
    job.write_text(yaml.safe_dump(build_manifest("demo", spec, namespace="ml")))
    out = base / "out.yaml"
    result = CliRunner().invoke(cli, ["operator", "render", str(job), "--output", str(out)])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs].count("Pod") == 3
    for d in docs:
        kubernetes_validate.validate(d, kubernetes_validate.latest_version(), strict=True)
    bad = base / "bad.yaml"
    layout = {"pipeline": 2, "zeroStage": 3}
    bad.write_text(yaml.safe_dump(build_manifest("demo", {**spec, "parallelism": layout})))
    result = CliRunner().invoke(cli, ["operator", "render", str(bad)])
    assert result.exit_code == 2 and "ZeRO stage 3 cannot be combined with pipeline" in result.output
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    result = CliRunner().invoke(cli, ["operator", "render", str(bad)])
    assert result.exit_code == 2 and "exactly one document of kind LLMTrainingJob" in result.output
    # a file that carries the job's PVC beside the job (as examples/tiny-job.yaml does) renders
    result = CliRunner().invoke(cli, ["operator", "render", str(REPO / "examples" / "tiny-job.yaml")])
    assert result.exit_code == 0, result.output
    pods = [d for d in yaml.safe_load_all(result.output) if d["kind"] == "Pod"]
    assert pods and all(p["spec"]["securityContext"]["fsGroup"] == 10001 for p in pods)
