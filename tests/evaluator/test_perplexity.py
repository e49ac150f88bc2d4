"""Perplexity and bits per byte: the formulas, and a model with a known answer on real shards."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tokensmith.core.errors import TokensmithError
from tokensmith.evaluator.perplexity import read_documents, shard_perplexity, summarize
from tokensmith.evaluator.tokenizer import FileTokenizer


class Uniform(torch.nn.Module):
    """Every token equally likely: perplexity is exactly the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab)


def test_summarize_formulas() -> None:
    out = summarize(total_logprob=-10 * math.log(4), tokens=10, n_bytes=20, documents=2)
    assert out["token_perplexity"] == pytest.approx(4.0)
    assert out["bits_per_byte"] == pytest.approx(10 * 2 / 20)  # 2 bits per token, 2 bytes per token
    assert out["byte_perplexity"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        summarize(-1.0, 0, 1, 1)


def test_uniform_model_on_real_shards(text_data: Path) -> None:
    tok = FileTokenizer.from_file(text_data / "tokenizer.json")
    vocab = tok.tokenizer.get_vocab_size()
    out = shard_perplexity(
        Uniform(vocab), tok, text_data / "valid", max_length=32, batch_size=16, max_tokens=3000
    )
    assert out["token_perplexity"] == pytest.approx(vocab, rel=1e-5)
    assert out["tokens"] == 3000
    expected_bpb = out["tokens"] * math.log2(vocab) / out["bytes"]
    assert out["bits_per_byte"] == pytest.approx(expected_bpb, rel=1e-5)
    assert out["documents"] >= 1


def test_documents_drop_the_closing_eos(text_data: Path) -> None:
    docs, eos = read_documents(text_data / "valid", None)
    assert eos is not None
    assert all(doc and doc[-1] != eos for doc in docs)


def test_missing_split_is_a_clear_error(tmp_path: Path) -> None:
    tok_path = tmp_path / "none"
    with pytest.raises(TokensmithError, match="does not exist"):
        read_documents(tok_path, 0)
