"""The lm-eval model class on requests built as the harness builds them (`Instance`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance

from tokensmith.evaluator.lm import TokensmithLM, generation_settings, parse_batch_size
from tokensmith.evaluator.tokenizer import FileTokenizer


class NextWord(torch.nn.Module):
    """Predicts token id + 1 after every token: the word tokenizer's vocabulary order is the output."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot((ids + 1) % self.vocab, self.vocab).float() * 10


@pytest.fixture
def lm(word_tokenizer_path: Path) -> TokensmithLM:
    tok = FileTokenizer.from_file(word_tokenizer_path)
    return TokensmithLM(
        model=NextWord(tok.tokenizer.get_vocab_size()), tokenizer=tok, max_length=16, batch_size=2
    )


def request(kind: str, args: tuple) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)  # type: ignore[arg-type]


def test_generate_until_stops_at_the_stop_string(lm: TokensmithLM) -> None:
    out = lm.generate_until(
        [
            request("generate_until", ("apple", {"until": ["melon"], "max_gen_toks": 20})),
            request("generate_until", ("fig", {"until": ["never"], "max_gen_toks": 3})),
        ]
    )
    assert out[0].split() == ["pear", "plum", "fig", "kiwi", "lime", "date", "grape"]
    assert out[1].split() == ["kiwi", "lime", "date"]


def test_loglikelihood_and_rolling(lm: TokensmithLM) -> None:
    (likely, greedy), (unlikely, not_greedy) = lm.loglikelihood(
        [request("loglikelihood", ("apple", " pear")), request("loglikelihood", ("apple", " plum"))]
    )
    assert greedy and not not_greedy and likely > unlikely
    # Empty context: conditioned on the end-of-text token, as the harness does.
    # With one-hot x 10 logits over V tokens: log P(predicted) = 10 - Z, log P(other) = -Z.
    z = math.log(math.exp(10) + lm.model_fn.vocab - 1)
    (empty,) = lm.loglikelihood([request("loglikelihood", ("", "apple pear"))])
    assert empty[0] == pytest.approx(-z + (10 - z), abs=1e-4)  # eos -> apple is not predicted
    (rolling,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", ("apple pear plum",))])
    assert rolling == pytest.approx(-z + 2 * (10 - z), abs=1e-4)


def test_settings_and_batch_size() -> None:
    assert generation_settings({"until": "\n\n", "max_gen_toks": 7}, "<eos>") == (("\n\n", "<eos>"), 7)
    with pytest.raises(ValueError, match="greedily"):
        generation_settings({"do_sample": True}, "")
    assert parse_batch_size("auto:4") == parse_batch_size(None) == 32
    assert parse_batch_size("8") == 8
