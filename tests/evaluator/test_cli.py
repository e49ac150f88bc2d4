"""`tokensmith eval` end to end on a tiny model trained by `tokensmith train` (real DeepSpeed on CPU),
its Hugging Face export, and the bad inputs: each gives one line and exit code 2, never a hang."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tokensmith.cli import cli
from tokensmith.evaluator.tasks import BUNDLED_TASKS

pytestmark = pytest.mark.slow


def train_tiny(data: Path, ckpt: Path) -> Path:
    """6 optimizer steps of a 2-layer, 32-wide model with checkpoints at steps 3 and 6."""
    sets = {
        "data.train_path": data / "train",
        "data.valid_path": data / "valid",
        "checkpoint.dir": ckpt,
        "checkpoint.every_steps": 3,
        "model.vocab_size": 512,
        "model.seq_len": 64,
        "model.d_model": 32,
        "model.n_heads": 2,
        "model.n_kv_heads": 2,
        "train.micro_batch": 4,
        "train.global_batch_tokens": 256,
        "train.warmup_steps": 2,
        "train.max_steps": 6,
        "train.precision": "fp32",
        "deepspeed.zero_stage": 0,
    }
    args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tokensmith.cli", "train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return ckpt


@pytest.fixture(scope="module")
def trained(text_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(text_data, tmp_path_factory.mktemp("run") / "ckpt")


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["eval", *args], env=env, catch_exceptions=False)


def one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_trained_model_on_bundled_tasks_perplexity_and_compare(
    trained: Path, text_data: Path, tmp_path: Path
) -> None:
    term = tmp_path / "termination-log"
    out_dir = tmp_path / "evals"
    docs: list[dict[str, Any]] = []
    # The earlier checkpoint gets one task (compare needs two steps, not two full runs).
    for step, tasks in ((3, "mmlu_local"), (6, "tokensmith_local")):
        ckpt = trained / f"step-{step:08d}"
        result = invoke(
            ["--checkpoint", str(ckpt), "--tasks", tasks, "--limit", "4",
             "--perplexity-data", str(text_data / "valid"), "--perplexity-tokens", "1500",
             "--batch-size", "8", "--format", "json", "--output", str(out_dir / f"step-{step}.json")],
            env={"TOKENSMITH_TERMINATION_LOG": str(term)},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc == json.loads((out_dir / f"step-{step}.json").read_text())
        docs.append(doc)
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert doc["step"] == step and doc["model_config_hash"] == state["model_hash"]
        for task, (_, shots) in BUNDLED_TASKS.items():
            if task not in tasks and tasks != "tokensmith_local":
                continue
            for metric in ("acc", "acc_norm"):
                assert 0.0 <= doc["results"][task][metric] <= 1.0
            assert doc["num_fewshot"][task] == shots
            assert doc["items"][task] == 4
        ppl = doc["results"]["perplexity"]
        assert 1.0 < ppl["token_perplexity"] < 512 * 1.5 and ppl["bits_per_byte"] > 0
        assert doc["perplexity_data"]["tokens"] == 1500
        short = term.read_text()
        assert len(short.encode()) < 4096
        mmlu = doc["results"]["mmlu_local"]["acc"]
        assert json.loads(short)["results"]["mmlu_local"]["acc"] == round(mmlu, 4)
    # Training lowers held-out perplexity between the two checkpoints.
    nll = [d["results"]["perplexity"]["nll_per_token"] for d in docs]
    assert nll[1] < nll[0]

    compared = invoke(["compare", str(out_dir), "--format", "json"])
    assert compared.exit_code == 0, compared.output
    points = json.loads(compared.stdout)
    assert {p["step"] for p in points if p["task"] == "perplexity"} == {3, 6}
    html = (out_dir / "eval_compare.html").read_text()
    assert "plotly" in html and "arc_easy_local" in html


def test_hf_export_scores_like_the_checkpoint(trained: Path, text_data: Path, tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    exported = CliRunner().invoke(cli, ["export", "--checkpoint", str(trained), "--hf", str(hf)])
    assert exported.exit_code == 0, exported.output
    common = ["--tasks", "arc_easy_local,mmlu_local", "--limit", "6", "--num-fewshot", "1",
              "--format", "json", "--perplexity-data", str(text_data / "valid"),
              "--perplexity-tokens", "800"]  # fmt: skip
    ours = json.loads(invoke(["--checkpoint", str(trained), *common]).stdout)
    theirs = json.loads(invoke(["--checkpoint", str(hf), *common]).stdout)
    assert theirs["checkpoint_kind"] == "huggingface" and ours["checkpoint_kind"] == "tokensmith"
    assert theirs["results"]["arc_easy_local"] == ours["results"]["arc_easy_local"]
    assert theirs["results"]["perplexity"]["nll_per_token"] == pytest.approx(
        ours["results"]["perplexity"]["nll_per_token"], abs=1e-4
    )


def test_checkpoint_without_consolidated_weights_is_scored_without_deepspeed(
    trained: Path, text_data: Path
) -> None:
    """Step 3 is not the final checkpoint: no model.safetensors (checkpoint.consolidate_every 0). `tokensmith
    eval` rebuilds its weights from DeepSpeed's files in a process where DeepSpeed cannot be imported, as
    in the evaluator image."""
    step3 = trained / "step-00000003"
    assert not (step3 / "model.safetensors").exists()
    assert (trained / "step-00000006" / "model.safetensors").exists()
    code = "import sys; sys.modules['deepspeed'] = None; from tokensmith.cli import cli; cli()"
    args = ["eval", "--checkpoint", str(step3), "--format", "json",
            "--perplexity-data", str(text_data / "valid"), "--perplexity-tokens", "400"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["step"] == 3 and report["checkpoint_kind"] == "tokensmith"
    assert 0 < report["results"]["perplexity"]["nll_per_token"] < 10


def test_missing_checkpoint(tmp_path: Path) -> None:
    term = tmp_path / "term"
    result = invoke(
        ["--checkpoint", str(tmp_path / "nope"), "--tasks", "mmlu_local"],
        env={"TOKENSMITH_TERMINATION_LOG": str(term)},
    )
    one_line_error(result, "does not exist")
    assert "does not exist" in json.loads(term.read_text())["error"]


def test_corrupt_checkpoint(trained: Path, tmp_path: Path) -> None:
    broken = tmp_path / "step-00000006"
    shutil.copytree(trained / "step-00000006", broken)
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = b"\x00" * 100  # same size, different bytes
    weights.write_bytes(bytes(data))
    one_line_error(invoke(["--checkpoint", str(broken), "--tasks", "mmlu_local"]), "corrupt")


def test_unreadable_weights_even_unverified(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 8}))
    (hf / "model.safetensors").write_bytes(b"not safetensors")
    one_line_error(invoke(["--checkpoint", str(hf), "--tasks", "mmlu_local"]), "cannot be loaded")


def test_unknown_task(trained: Path) -> None:
    result = invoke(["--checkpoint", str(trained), "--tasks", "mmlu_local,arc_easy_lokal"])
    one_line_error(result, "arc_easy_lokal")


def test_nothing_to_do(trained: Path) -> None:
    one_line_error(invoke(["--checkpoint", str(trained)]), "--tasks")


def test_list_bundled_tasks() -> None:
    # The full listing adds lm-eval's own index (over ten thousand YAML files, tens of seconds on a
    # busy CI machine) after these rows; test_unknown_task already exercises that index.
    result = invoke(["--list-tasks", "--bundled-only", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["task"] for row in rows][: len(BUNDLED_TASKS)] == list(BUNDLED_TASKS)
    assert rows[0]["num_fewshot"] == 25


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\nfrom tokensmith.cli import main\n"
        "try: main(['eval', '--help'])\nexcept SystemExit: pass\n"
        "print('HEAVY', [m for m in ('torch', 'lm_eval', 'datasets', 'plotly') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "--checkpoint" in out
