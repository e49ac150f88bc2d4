"""Choosing the executor: bad combinations and a missing Ray are one line, exit 2 (no Ray started)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tokensmith.cli import cli
from tokensmith.trainer.data.cli import curate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def one_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": "A document."}) + "\n")
    return path


def test_ray_address_needs_the_ray_executor(one_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["curate", str(one_file), "--out", str(tmp_path / "o"), "--ray-address", "h:1"]
    )
    assert result.exit_code == 2 and "--ray-address needs --executor ray" in result.output


def test_missing_ray_is_one_line(one_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    result = CliRunner().invoke(
        cli, ["curate", str(one_file), "--out", str(tmp_path / "o"), "--executor", "ray"]
    )
    assert result.exit_code == 2
    assert "pip install 'tokensmith[ray]'" in result.output and "Traceback" not in result.output


def test_unknown_executor_is_refused() -> None:
    from tokensmith.core.errors import TokensmithError
    from tokensmith.trainer.data.pipeline import curate as run

    with pytest.raises(TokensmithError, match="unknown executor 'slurm'"):
        run(["x"], "y", executor="slurm")


def test_kuberay_example_runs_our_command_with_the_ray_executor() -> None:
    doc = yaml.safe_load((REPO / "examples" / "curate-rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    words = doc["spec"]["entrypoint"].split()
    assert words[:2] == ["tokensmith", "curate"]
    context = curate.make_context("curate", words[2:])  # the entrypoint's options parse as ours
    assert context.params["executor"] == "ray" and context.params["tasks"] == 256
    cluster = doc["spec"]["rayClusterSpec"]
    images = [c["image"] for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]]
    images += [c["image"] for g in cluster["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert images and all(i.startswith("tokensmith/trainer:") for i in images)
