"""Running lm-evaluation-harness: which task directories to index, checking task names up front, and
one `lm_eval.simple_evaluate` call with the Tokensmith model class.

Indexing every task the harness ships takes seconds (over ten thousand YAML files), so a run that
names only bundled tasks (or the `tokensmith_local` tag) indexes only the bundled directory; any other
name brings in the harness' own tasks and `--include-path` directories, so every task a user has works
unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokensmith.core.errors import TokensmithError
from tokensmith.evaluator.tasks import BUNDLED_TASKS, TASKS_DIR

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

LOCAL_TAG = "tokensmith_local"
BOOTSTRAP_ITERS = 1000  # only for metrics without a closed-form standard error; acc/acc_norm have one


def split_names(text: str | Sequence[str]) -> list[str]:
    """ "a,b, c" (or several --tasks options) -> ["a", "b", "c"], order kept, duplicates dropped."""
    parts = [text] if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in parts:
        for name in part.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


def only_bundled(names: Sequence[str]) -> bool:
    return all(name in BUNDLED_TASKS or name == LOCAL_TAG for name in names)


def stay_offline(names: Sequence[str]) -> None:
    """No network for the bundled tasks, and no usage ping for any task.

    `datasets` sends a HEAD request to count downloads even when it loads a local JSON file (with a 3 s
    timeout, per task: slow where egress is blocked, as in many clusters). Bundled tasks need nothing
    from the network, so their runs go fully offline; other tasks may need the Hub for their data, so
    only the ping is switched off. Must run before `datasets` is imported to take effect through the
    environment; an already imported `datasets` gets its config flags set directly.
    """
    os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    offline = only_bundled(names)
    if offline:
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    if "datasets" in sys.modules:
        import datasets.config

        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
        if offline:
            datasets.config.HF_HUB_OFFLINE = True
            datasets.config.HF_DATASETS_OFFLINE = True


def quiet_libraries(verbose: bool) -> None:
    """lm-eval and datasets log every step at INFO/WARNING; keep stderr for what matters."""
    level = logging.INFO if verbose else logging.ERROR
    for name in ("lm_eval", "datasets", "transformers"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        # lm-eval draws its own tqdm bars (building contexts, tokenizing); tqdm reads this variable.
        if not sys.stderr.isatty():
            os.environ.setdefault("TQDM_DISABLE", "1")
        try:
            import datasets

            datasets.disable_progress_bars()
        except ImportError:  # pragma: no cover - datasets comes with lm-eval
            pass


def task_manager(
    names: Sequence[str], include_paths: Sequence[str | Path] = (), data_dir: str | Path | None = None
) -> TaskManager:
    from lm_eval.tasks import TaskManager

    for path in include_paths:
        if not Path(path).is_dir():
            raise TokensmithError(f"--include-path {path} is not a directory of lm-eval task YAML files")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise TokensmithError(f"--data-dir {data_dir} is not a directory")
    metadata = {"data_dir": str(Path(data_dir).resolve())} if data_dir else None
    paths = [str(TASKS_DIR), *(str(p) for p in include_paths)]
    defaults = not (only_bundled(names) and not include_paths)
    return TaskManager(include_path=paths, include_defaults=defaults, metadata=metadata)


def check_names(names: Sequence[str], manager: TaskManager) -> None:
    if not names:
        raise TokensmithError("no tasks given; pass --tasks NAME[,NAME...] (see --list-tasks)")
    known = set(manager.all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise unknown_tasks(unknown)


def unknown_tasks(names: Sequence[str]) -> TokensmithError:
    return TokensmithError(
        f"unknown task(s): {', '.join(names)}; `tokensmith eval --list-tasks` shows the bundled "
        "offline tasks and every task lm-eval has here"
    )


def list_tasks(include_paths: Sequence[str | Path] = (), with_harness: bool = True) -> list[dict[str, Any]]:
    """Bundled offline tasks first (with their default few-shot count), then every other task name."""
    rows: list[dict[str, Any]] = [
        {"task": name, "source": "bundled (offline)", "num_fewshot": shots}
        for name, (_, shots) in BUNDLED_TASKS.items()
    ]
    rows.append({"task": LOCAL_TAG, "source": "bundled tag: all of the above", "num_fewshot": None})
    if with_harness:
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=[str(p) for p in include_paths] or None)
        seen = {r["task"] for r in rows}
        for name in manager.all_subtasks:
            if name not in seen:
                rows.append({"task": name, "source": "lm-eval (may need network)", "num_fewshot": None})
    return rows


def absent_from_yaml(names: Sequence[str], directories: Sequence[str | Path]) -> list[str]:
    """Names whose text appears in no task YAML file under `directories`: certainly unknown.

    Every task, group and tag name is written in some YAML file, so a byte search over the files (a
    couple of seconds) settles a typo without building lm-eval's index (parsing every file: 15 s or
    more). Names that are found still go through the real index.
    """
    pending = {n: n.encode() for n in names if not any(c in n for c in "*?[/")}
    for directory in directories:
        for pattern in ("*.yaml", "*.yml"):
            for path in Path(directory).rglob(pattern):
                if not pending:
                    return []
                try:
                    text = path.read_bytes()
                except OSError:
                    continue
                for name in [n for n, raw in pending.items() if raw in text]:
                    del pending[name]
    return [n for n in names if n in pending]


def prepare(
    names: Sequence[str], include_paths: Sequence[str | Path] = (), data_dir: str | Path | None = None
) -> TaskManager:
    """The task manager for `names`, after checking every name exists (before any model is loaded)."""
    if not only_bundled(names):
        import lm_eval.tasks

        harness_dir = Path(lm_eval.tasks.__file__).parent
        absent = absent_from_yaml(names, [TASKS_DIR, harness_dir, *include_paths])
        if absent:
            raise unknown_tasks(absent)
    manager = task_manager(names, include_paths, data_dir)
    check_names(names, manager)
    return manager


def evaluate(
    lm: LM,
    names: Sequence[str],
    *,
    num_fewshot: int | None,
    limit: int | None,
    manager: TaskManager | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` on `names`; returns its results dict."""
    from lm_eval import simple_evaluate

    manager = manager or prepare(names)
    try:
        results = simple_evaluate(
            model=lm,
            tasks=list(names),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            bootstrap_iters=BOOTSTRAP_ITERS,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except (FileNotFoundError, ConnectionError) as err:
        raise TokensmithError(
            f"task data is not available ({err}); offline, use the bundled *_local tasks or --data-dir"
        ) from err
    if results is None:  # pragma: no cover - only non-zero ranks get None
        raise TokensmithError("lm-eval returned no results")
    return dict(results)
