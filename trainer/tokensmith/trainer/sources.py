"""The trainer's training data: every source of `data.sources` (or `data.train_path`) opened, checked
and mixed. The decisions live in `mixture.py` (pure); this module opens shards and says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tokensmith.core.errors import ConfigError
from tokensmith.trainer.config import TrainerConfig
from tokensmith.trainer.mixture import Mixture, SourceSpec
from tokensmith.trainer.sampler import Windows


def open_source(path: str, where: str) -> Any:
    """A ShardSet, or ConfigError (78): a missing or unfinished data path is the user's to fix."""
    from tokensmith.trainer.data.shards import ShardFormatError, ShardSet

    try:
        return ShardSet.open(path)
    except ShardFormatError as err:
        raise ConfigError(f"{where}: {err.message}") from err


def _tokenizer_digest(shards: Any) -> str | None:
    path = shards.tokenizer_path
    if path is None or not path.is_file():
        return None
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class TrainingData:
    """The training sources as windows, and the mixture that deals positions to them."""

    names: list[str]
    windows: list[Windows]
    mixture: Mixture
    shards: list[Any]

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[len, seq_len + 1] token rows for global positions, with each row's source and window."""
        source, window = self.mixture.draw(positions)
        seq_len = self.windows[0].seq_len
        rows = np.zeros((len(positions), seq_len + 1), dtype=np.int64)
        for j in np.unique(source):
            sel = np.flatnonzero(source == j)
            rows[sel] = self.windows[int(j)].batch(window[sel])
        return rows, source, window

    def realised_tokens(self, position: int, seq_len: int) -> dict[str, int]:
        """Tokens each source contributed to positions [0, position): the realised mixture."""
        return {n: int(c) * seq_len for n, c in zip(self.names, self.mixture.counts(position), strict=True)}


def open_training_data(cfg: TrainerConfig, check_budget: bool = True) -> TrainingData:
    """Open and check every training source; ConfigError (exit 78) with what to change when one is
    missing, too short, tokenized differently from the others, larger than the model's vocabulary, or
    would be read more often than its `epochs` allows over the run's token budget."""
    sources = cfg.data.training_sources()
    if not sources:
        raise ConfigError(
            "set data.train_path (or data.sources) to token shards written by `tokensmith curate`"
        )
    shards, names, windows, specs = [], [], [], []
    digests: dict[str, str] = {}
    for i, source in enumerate(sources):
        where = "data.train_path" if cfg.data.train_path else f"data.sources[{i}] ({source.label})"
        opened = open_source(source.path, where)
        if opened.vocab_size > cfg.model.vocab_size:
            raise ConfigError(
                f"{where}: the shards' tokenizer has {opened.vocab_size} tokens but model.vocab_size is "
                f"{cfg.model.vocab_size}; set model.vocab_size >= {opened.vocab_size}"
            )
        win = Windows(opened, cfg.model.seq_len)
        if win.num_samples < 1:
            raise ConfigError(f"{where} holds {opened.num_tokens} tokens, fewer than one sequence")
        digest = _tokenizer_digest(opened)
        if digest is not None:
            digests[source.label] = digest
        shards.append(opened)
        names.append(source.label)
        windows.append(win)
        specs.append(SourceSpec(source.label, source.weight, win.num_samples, source.epochs))
    if len(set(digests.values())) > 1 or len({s.eos_id for s in shards}) > 1:
        raise ConfigError(
            "data.sources were tokenized with different tokenizers ("
            + ", ".join(f"{n}: {d[:8]}" for n, d in digests.items())
            + "); curate every source with the same --tokenizer (docs/curation.md, Mixtures)"
        )
    data = TrainingData(names, windows, Mixture(specs, cfg.train.seed), shards)
    if check_budget:
        positions = cfg.total_steps() * cfg.sequences_per_step
        problems = data.mixture.exhaustion_problems(positions)
        if problems:
            raise ConfigError(
                f"data.sources over the run's {positions} samples: "
                + "; ".join(problems)
                + "; raise that source's epochs, lower its weight, add data or shorten the run"
            )
    return data
