"""Offline benchmark tasks in lm-evaluation-harness' YAML format, reading JSONL files bundled here.

The items are this project's own, written in the formats of the public datasets (ARC, HellaSwag,
MMLU, TruthfulQA MC1) so that the whole evaluation path runs with no network; they measure nothing
about a model's knowledge beyond a smoke test. Point `--data-dir` at a directory of JSONL files with
the same names (a local copy of the real data) to run the same task definitions on real items.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
DATA_DIR = TASKS_DIR  # the JSONL files sit beside the YAML files (package data)

# name -> (data file, few-shot count the Open LLM Leaderboard (v1) used for the real benchmark)
BUNDLED_TASKS: dict[str, tuple[str, int]] = {
    "arc_easy_local": ("arc_easy.jsonl", 25),
    "arc_challenge_local": ("arc_challenge.jsonl", 25),
    "hellaswag_local": ("hellaswag.jsonl", 10),
    "mmlu_local": ("mmlu.jsonl", 5),
    "truthfulqa_mc1_local": ("truthfulqa_mc1.jsonl", 0),
}
