"""The bundled offline tasks: well-formed data, loadable by lm-eval's own TaskManager from the bundled
directory, and a full run through `simple_evaluate` with every network connection refused."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from tokensmith.evaluator import harness
from tokensmith.evaluator.lm import TokensmithLM
from tokensmith.evaluator.tasks import BUNDLED_TASKS, DATA_DIR, TASKS_DIR
from tokensmith.evaluator.tokenizer import FileTokenizer


def rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("task", list(BUNDLED_TASKS))
def test_bundled_data_is_well_formed(task: str) -> None:
    data_file, _ = BUNDLED_TASKS[task]
    items = rows(data_file)
    assert len(items) >= 24, "a few dozen items per task"
    assert (TASKS_DIR / f"{task}.yaml").is_file()
    golds = []
    for item in items:
        if task.startswith("arc"):
            assert item["answerKey"] in item["choices"]["label"]
            golds.append(item["answerKey"])
        elif task == "hellaswag_local":
            assert 0 <= int(item["label"]) < len(item["endings"]) == 4
            golds.append(item["label"])
        elif task == "mmlu_local":
            assert len(item["choices"]) == 4 and 0 <= item["answer"] < 4
            golds.append(item["answer"])
        else:
            assert item["mc1_targets"]["labels"][0] == 1 and sum(item["mc1_targets"]["labels"]) == 1
    if golds:  # the right answer is not always in the same place
        assert len(set(golds)) >= 3


def test_bundled_names_match_the_yaml_files() -> None:
    manager = harness.task_manager(list(BUNDLED_TASKS))
    assert set(BUNDLED_TASKS) <= set(manager.all_tasks)
    assert harness.LOCAL_TAG in manager.all_tasks


def test_split_names() -> None:
    assert harness.split_names(("a,b", " c ,a", "")) == ["a", "b", "c"]
    assert harness.only_bundled(["mmlu_local", "tokensmith_local"])
    assert not harness.only_bundled(["mmlu_local", "arc_easy"])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network access attempted during an offline evaluation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_all_bundled_tasks_run_offline(no_network: None, text_data: Path) -> None:
    from tokensmith.planner.arch import ModelConfig
    from tokensmith.trainer.model import Transformer

    tok = FileTokenizer.from_file(text_data / "tokenizer.json")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(preset="tiny", vocab_size=tok.tokenizer.get_vocab_size(), seq_len=96))
    lm = TokensmithLM(model=model.eval(), tokenizer=tok, max_length=96, batch_size=16)
    limit = 6
    results = harness.evaluate(lm, [harness.LOCAL_TAG], num_fewshot=None, limit=limit)
    assert set(results["results"]) >= set(BUNDLED_TASKS)
    for task, (_, shots) in BUNDLED_TASKS.items():
        metrics = results["results"][task]
        assert 0.0 <= metrics["acc,none"] <= 1.0
        assert 0.0 <= metrics["acc_norm,none"] <= 1.0
        assert results["n-shot"][task] == shots  # the leaderboard's few-shot counts by default
        assert results["n-samples"][task]["effective"] == limit


def test_data_dir_replaces_the_bundled_files(tmp_path: Path) -> None:
    from tokensmith.evaluator.tasks.local_data import load

    (tmp_path / "mmlu.jsonl").write_text(
        json.dumps({"question": "q?", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 2}) + "\n"
    )
    dataset = load(data_files={"test": "mmlu.jsonl"}, data_dir=str(tmp_path), version=1.0)
    assert dataset["test"].num_rows == 1
    with pytest.raises(FileNotFoundError, match=r"mmlu\.jsonl"):
        load(data_files={"test": "mmlu.jsonl"}, data_dir=str(tmp_path / "elsewhere"))


def test_typo_is_found_without_building_the_full_index() -> None:
    import lm_eval.tasks

    harness_dir = Path(lm_eval.tasks.__file__).parent
    assert harness.absent_from_yaml(["arc_easy", "ai2_arc", "arc_easy_lokal"], [harness_dir]) == [
        "arc_easy_lokal"
    ]


def test_cli_on_bundled_tasks_makes_no_connection(
    tmp_path: Path, text_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with the Hub reachable as far as the libraries know (no *_OFFLINE variables), `tokensmith
    eval` on bundled tasks opens no socket: `datasets` would otherwise ping the Hub per task."""
    import datasets.config
    import huggingface_hub.constants
    from click.testing import CliRunner

    from tokensmith.cli import cli
    from tokensmith.trainer.checkpoint import write_model_checkpoint
    from tokensmith.trainer.config import TrainerConfig
    from tokensmith.trainer.model import Transformer

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HF_UPDATE_DOWNLOAD_COUNTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network refused")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cfg = TrainerConfig.model_validate(
        {
            "model": {"preset": "tiny", "vocab_size": 512, "seq_len": 64},
            "train": {"micro_batch": 1, "global_batch_tokens": 64},
        }
    )
    ckpt = write_model_checkpoint(
        tmp_path / "ckpt", Transformer(cfg.model), cfg, step=1, tokenizer=text_data / "tokenizer.json"
    )
    result = CliRunner().invoke(
        cli, ["eval", "--checkpoint", str(ckpt), "--tasks", "mmlu_local,hellaswag_local", "--limit", "2"]
    )
    assert result.exit_code == 0, result.output
    assert attempts == []
