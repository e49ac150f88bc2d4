"""A hand-built model whose log-likelihoods favour a known choice scores accuracy 1.0 through the real
lm-evaluation-harness path (TaskManager, YAML task reading JSONL with the `json` dataset builder,
`simple_evaluate`, the harness' metrics), and its reverse scores 0.0."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tokensmith.evaluator.lm import TokensmithLM
from tokensmith.evaluator.tokenizer import FileTokenizer

N_ITEMS = 16


def write_task(root: Path, words: list[str]) -> Path:
    """A multiple-choice task whose question names its answer; the answer sits at every index."""
    rnd = random.Random(0)
    rows = []
    for i in range(N_ITEMS):
        choices = rnd.sample(words, 4)
        gold = i % 4
        rows.append({"question": f"pick {choices[gold]}", "choices": choices, "gold": gold})
    data = root / "known.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "known_answer.yaml").write_text(
        "task: known_answer\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        "doc_to_text: 'Question: {{question}} Answer:'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: gold\n"
        "metric_list:\n"
        "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n"
        "metadata: {version: 1.0}\n"
    )
    return root


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory, words: list[str]) -> Path:
    return write_task(tmp_path_factory.mktemp("known"), words)


@pytest.fixture(scope="module")
def tokenizer(word_tokenizer_path: Path) -> FileTokenizer:
    return FileTokenizer.from_file(word_tokenizer_path)


def run(task_dir: Path, lm: TokensmithLM) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    results = simple_evaluate(
        model=lm, tasks=["known_answer"], task_manager=manager, num_fewshot=0, log_samples=False
    )
    assert results is not None
    assert results["n-samples"]["known_answer"]["effective"] == N_ITEMS
    return results["results"]["known_answer"]


@pytest.mark.parametrize("batch_size", [1, 7])
def test_favoured_choice_scores_one_and_reverse_scores_zero(
    task_dir: Path, tokenizer: FileTokenizer, copy_model: Callable[..., Any], batch_size: int
) -> None:
    vocab = tokenizer.tokenizer.get_vocab_size()
    good = TokensmithLM(model=copy_model(vocab), tokenizer=tokenizer, max_length=64, batch_size=batch_size)
    bad = TokensmithLM(
        model=copy_model(vocab, reverse=True), tokenizer=tokenizer, max_length=64, batch_size=batch_size
    )
    favoured = run(task_dir, good)
    assert favoured["acc,none"] == 1.0
    assert favoured["acc_norm,none"] == 1.0
    reverse = run(task_dir, bad)
    assert reverse["acc,none"] == 0.0
    assert reverse["acc_norm,none"] == 0.0


def test_model_class_is_registered_with_the_harness() -> None:
    from lm_eval.api.registry import get_model

    assert get_model("tokensmith") is TokensmithLM
