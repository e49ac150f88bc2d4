"""The scoring core against a plain one-request-at-a-time reference, on a real (randomly initialised)
Tokensmith Transformer: batching, padding, de-duplication and truncation change nothing."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tokensmith.evaluator import scoring
from tokensmith.evaluator.models import TokensmithLogits, adapt, logits_at
from tokensmith.planner.arch import ModelConfig
from tokensmith.trainer.model import Transformer

VOCAB, SEQ = 97, 48


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(preset="tiny", vocab_size=VOCAB, seq_len=SEQ)).eval()


def reference(model: Transformer, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """Unbatched, unpadded, whole-tensor log-softmax: the textbook computation."""
    whole = (context + continuation)[-(SEQ + 1) :]
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]]))[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    n = len(continuation)
    positions = range(len(whole) - 1 - n, len(whole) - 1)
    total = sum(float(logprobs[p, t]) for p, t in zip(positions, continuation, strict=True))
    greedy = all(int(logits[p].argmax()) == t for p, t in zip(positions, continuation, strict=True))
    return total, greedy


def random_pairs(n: int, seed: int = 1) -> list[tuple[list[int], list[int]]]:
    rnd = random.Random(seed)
    pairs = []
    for _ in range(n):
        ctx = [rnd.randrange(VOCAB) for _ in range(rnd.randint(1, 60))]  # some exceed the context
        cont = [rnd.randrange(VOCAB) for _ in range(rnd.randint(1, 6))]
        pairs.append((ctx, cont))
    # Multiple-choice shape: one context, several one-token answers (these share one row).
    shared = [rnd.randrange(VOCAB) for _ in range(20)]
    pairs += [(shared, [t]) for t in (3, 5, 7, 11)]
    return pairs


@pytest.fixture(scope="module")
def singles(model: Transformer) -> list[tuple[list[int], list[int], tuple[float, bool]]]:
    """Each pair scored alone (batch of one, no padding) and checked against the reference once."""
    out = []
    for ctx, cont in random_pairs(24):
        (single,) = scoring.loglikelihoods(model, [(ctx, cont)], max_length=SEQ, batch_size=1)
        ref = reference(model, ctx, cont)
        assert single[0] == pytest.approx(ref[0], abs=1e-4)
        assert single[1] == ref[1]
        out.append((ctx, cont, single))
    return out


@pytest.mark.parametrize("adapted", [False, True], ids=["full-logits", "head-at-positions"])
@pytest.mark.parametrize("batch_size", [3, 64])
def test_batched_equals_one_at_a_time(
    model: Transformer,
    singles: list[tuple[list[int], list[int], tuple[float, bool]]],
    batch_size: int,
    adapted: bool,
) -> None:
    pairs = [(ctx, cont) for ctx, cont, _ in singles]
    fn = adapt(model) if adapted else model
    batched = scoring.loglikelihoods(fn, pairs, max_length=SEQ, batch_size=batch_size)
    for (_, _, single), (logprob, greedy) in zip(singles, batched, strict=True):
        assert logprob == pytest.approx(single[0], abs=1e-4)
        assert greedy == single[1]


def test_greedy_flag_is_true_for_the_argmax_continuation(model: Transformer) -> None:
    ctx = [1, 2, 3, 4]
    with torch.no_grad():
        best = int(model(torch.tensor([ctx]))[0, -1].argmax())
    (_, greedy), (_, other) = scoring.loglikelihoods(
        model, [(ctx, [best]), (ctx, [(best + 1) % VOCAB])], max_length=SEQ, batch_size=2
    )
    assert greedy and not other


def test_rows_are_deduplicated_and_longest_first() -> None:
    pairs = [([1, 2], [3]), ([1, 2], [4]), ([5], [6, 7, 8]), ([9, 9, 9, 9], [1])]
    rows = scoring.plan_rows(pairs, max_length=16)
    assert [len(r.tokens) for r in rows] == [4, 3, 2]
    assert rows[-1].readers == (0, 1)  # both one-token answers to [1, 2] read one row
    assert sorted(i for r in rows for i in r.readers) == [0, 1, 2, 3]


def test_plan_does_not_depend_on_request_order() -> None:
    pairs = random_pairs(30)
    rows = scoring.plan_rows(pairs, SEQ)
    shuffled = list(reversed(pairs))
    assert [r.tokens for r in scoring.plan_rows(shuffled, SEQ)] == [r.tokens for r in rows]


def test_continuation_longer_than_context_window_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        scoring.plan_rows([([1], list(range(SEQ + 1)))], SEQ)


def test_rolling_windows_predict_every_token_once() -> None:
    tokens = list(range(1, 111))
    windows = scoring.rolling_windows(tokens, prefix_id=0, max_length=SEQ)
    predicted = [t for _, cont in windows for t in cont]
    assert predicted == tokens
    for ctx, cont in windows:
        assert len(ctx) + len(cont) - 1 <= SEQ


def test_rolling_loglikelihood_of_short_document_is_the_plain_sum(model: Transformer) -> None:
    doc = [5, 6, 7, 8, 9, 10]
    (total,) = scoring.rolling_loglikelihoods(model, [doc], prefix_id=0, max_length=SEQ, batch_size=4)
    assert total == pytest.approx(reference(model, [0], doc)[0], abs=1e-4)


def test_rolling_loglikelihood_batched_equals_single(model: Transformer) -> None:
    rnd = random.Random(3)
    docs = [[rnd.randrange(1, VOCAB) for _ in range(rnd.randint(5, 130))] for _ in range(6)]
    together = scoring.rolling_loglikelihoods(model, docs, prefix_id=0, max_length=SEQ, batch_size=8)
    for doc, total in zip(docs, together, strict=True):
        (alone,) = scoring.rolling_loglikelihoods(model, [doc], prefix_id=0, max_length=SEQ, batch_size=1)
        assert total == pytest.approx(alone, abs=1e-4)
        assert math.isfinite(total) and total < 0


class Counter(torch.nn.Module):
    """Predicts token (last + 1) mod V at every position: generation is fully predictable."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot((ids + 1) % VOCAB, VOCAB).float() * 10


def test_greedy_generate_stops_at_stop_string_and_length() -> None:
    decode = lambda ids: " ".join(str(i) for i in ids)  # noqa: E731
    out = scoring.greedy_generate(
        Counter(),
        [[1, 2], [40], [10, 11, 12]],
        decode=decode,
        stops=["44"],
        max_new_tokens=5,
        max_length=SEQ,
        eos_id=None,
        batch_size=2,
    )
    assert out == ["3 4 5 6 7", "41 42 43 ", "13 14 15 16 17"]


def test_greedy_generate_stops_at_eos() -> None:
    out = scoring.greedy_generate(
        Counter(), [[7]], decode=lambda ids: ",".join(map(str, ids)), stops=[], max_new_tokens=9,
        max_length=SEQ, eos_id=10, batch_size=1,
    )  # fmt: skip
    assert out == ["8,9"]


@pytest.mark.parametrize(
    "arch",
    [
        {},
        {"norm_position": "post", "norm": "layernorm", "activation": "gelu", "position": "learned"},
        {"position": "alibi", "tie_embeddings": False},
    ],
    ids=["pre-ln-rope", "post-ln-learned", "alibi-untied"],
)
def test_head_at_positions_equals_full_logits(arch: dict) -> None:
    torch.manual_seed(1)
    net = Transformer(ModelConfig(preset="tiny", vocab_size=VOCAB, seq_len=SEQ, **arch)).eval()
    fn = adapt(net)
    assert isinstance(fn, TokensmithLogits)
    ids = torch.randint(0, VOCAB, (3, 20))
    keep = [0, 7, 19]
    with torch.no_grad():
        full = net(ids)
        assert torch.allclose(logits_at(fn, ids, keep), full[:, keep], atol=1e-5)
        assert torch.equal(fn(ids), full)  # the hook is gone afterwards
