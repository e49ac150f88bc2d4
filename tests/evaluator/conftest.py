"""Fixtures for the evaluator tests: small models and tokenizers built by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

WORDS = [
    "apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape",
    "melon", "peach", "mango", "cherry", "lemon", "olive", "berry", "guava",
]  # fmt: skip
SPECIAL = ["<|endoftext|>", "[UNK]"]
FRAME = ["Question:", "pick", "Answer:", "Q:", "A:"]


def word_tokenizer(path: Path) -> Path:
    """A word-level `tokenizers` file over WORDS: one token per word, so tests can reason in tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate([*SPECIAL, *FRAME, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return path


class CopyModel(torch.nn.Module):
    """Hand-built causal LM: at every position it gives logit +s to each token already seen in its
    input up to there and -s to every other token (`reverse` flips the sign). A multiple-choice item
    whose question names the right answer is then answered right (or, reversed, wrong) for sure, and
    only if each request's scores are read from its own row and its own positions."""

    def __init__(self, vocab_size: int, strength: float = 4.0, reverse: bool = False) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.sign = -strength if reverse else strength

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        seen = torch.nn.functional.one_hot(ids, self.vocab_size).cummax(dim=1).values.bool()
        return torch.where(seen, self.sign, -self.sign).float()


@pytest.fixture(scope="session")
def word_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_tokenizer(tmp_path_factory.mktemp("wordtok") / "tokenizer.json")


@pytest.fixture(scope="session")
def copy_model() -> Callable[..., CopyModel]:
    return CopyModel


@pytest.fixture(scope="session")
def words() -> list[str]:
    return list(WORDS)


BPE_VOCAB = 512


def write_text_shards(out: Path, vocab_size: int = BPE_VOCAB) -> Path:
    """A byte-level BPE trained on CPython's pydoc topics, and train/valid token shards made with it,
    laid out as `tokensmith curate` writes them (OUT/tokenizer.json, OUT/train, OUT/valid)."""
    import pydoc_data.topics as topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tokensmith.trainer.data.shards import write_shards

    texts = [topics.topics[k] for k in sorted(topics.topics)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    docs = [enc.ids for enc in tok.encode_batch(texts)]
    for split, part in (("train", docs[1::8] + docs[2::8]), ("valid", docs[::16])):
        write_shards(out / split, part, vocab_size, eos, tokenizer="../tokenizer.json", split=split)
    return out


@pytest.fixture(scope="session")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_shards(tmp_path_factory.mktemp("textdata"))
