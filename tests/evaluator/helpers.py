"""Small models and tokenizers the evaluator tests build by hand."""

from __future__ import annotations

from pathlib import Path

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
