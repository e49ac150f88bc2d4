"""Dataset loading and document processing for the bundled tasks, referenced from their YAML files
with lm-evaluation-harness' `!function` tag.

`load` is a task's `custom_dataset`: the harness calls it with the task's metadata and
`dataset_kwargs`. It reads JSONL through the `datasets` library's packaged `json` builder, which
needs no network, resolving file names against the bundled data directory, or against
`data_dir` when the run passes one in the task metadata (`tokensmith eval --data-dir`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

BUNDLED_DATA = Path(__file__).resolve().parent


def load(**kwargs: Any) -> Any:
    import datasets

    files: dict[str, str] = dict(kwargs["data_files"])
    base = Path(kwargs.get("data_dir") or BUNDLED_DATA).expanduser()
    resolved = {}
    for split, name in files.items():
        path = base / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (task data for split {split!r})")
        resolved[split] = str(path)
    return datasets.load_dataset("json", data_files=resolved)


def _clean(text: str) -> str:
    """HellaSwag's WikiHow items carry bracketed markup such as "[header]"; drop it."""
    text = re.sub(r"\[[^\]]*\]", "", text.strip())
    return re.sub(r"\s{2,}", " ", text)


def hellaswag_docs(dataset: Any) -> Any:
    """HellaSwag's layout (activity label, ctx_a, ctx_b, endings, label) -> query, choices, gold."""

    def convert(doc: dict[str, Any]) -> dict[str, Any]:
        context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize() if doc["ctx_b"] else doc["ctx_a"]
        return {
            "query": _clean(f"{doc['activity_label']}: {context}"),
            "choices": [_clean(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(convert)
