"""The torchx component: torchx's own linter accepts it and it launches `tokensmith train` under torchrun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tokensmith.trainer.components import train

COMPONENT = Path(__file__).resolve().parents[2] / "trainer/tokensmith/trainer/components.py"


def test_component_builds_a_torchrun_app() -> None:
    app = train("train.max_steps=2", "checkpoint.dir=/ck", config="/cfg/run.yaml", j="2x8", gpu=8)
    (role,) = app.roles
    command = " ".join(role.args)
    assert "--nnodes 2 --nproc_per_node 8" in command
    assert (
        "-m tokensmith.cli train --config /cfg/run.yaml --set train.max_steps=2 --set checkpoint.dir=/ck"
        in command
    )
    assert role.num_replicas == 2 and role.resource.gpu == 8
    assert "DS_ACCELERATOR" not in role.env  # GPUs: DeepSpeed picks CUDA
    cpu_role = train(preset="tiny").roles[0]
    assert cpu_role.env["DS_ACCELERATOR"] == "cpu"


def test_torchx_cli_accepts_the_component(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("torchx")),
            "run",
            "--dryrun",
            "-s",
            "local_cwd",
            f"{COMPONENT}:train",
            "--preset",
            "tiny",
            "-j",
            "1x2",
            "--",
            "train.max_steps=2",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--nproc_per_node 2" in done.stdout and "tokensmith.cli train" in done.stdout
