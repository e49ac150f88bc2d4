"""Perplexity and bits per byte on a held-out split of token shards (`tokensmith curate`'s `valid/`).

Each document is scored on its own, as lm-evaluation-harness scores perplexity tasks: its tokens are
predicted in disjoint windows of the model's context, the first conditioned on the end-of-text token
(`scoring.rolling_windows`). The document's closing EOS is not scored, so the numbers describe the
text, and bytes are those of the decoded text in UTF-8. With N the summed negative log-likelihood
in nats over T tokens and B bytes:

    token perplexity = exp(N / T)
    bits per byte    = N / (B ln 2)          (Gao et al. 2020, The Pile, arXiv:2101.00027, §4.1)
    byte perplexity  = 2 ** bits_per_byte

Bits per byte compares models with different tokenizers; token perplexity does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokensmith.core.errors import TokensmithError
from tokensmith.evaluator.scoring import LogitsFn, rolling_loglikelihoods
from tokensmith.evaluator.tokenizer import TextTokenizer


def summarize(total_logprob: float, tokens: int, n_bytes: int, documents: int) -> dict[str, float | int]:
    """The metrics above from a summed log-likelihood (pure)."""
    if tokens <= 0 or n_bytes <= 0:
        raise ValueError("perplexity needs at least one token and one byte")
    nll = -total_logprob
    bpb = nll / (n_bytes * math.log(2))
    return {
        "token_perplexity": math.exp(nll / tokens),
        "nll_per_token": nll / tokens,
        "bits_per_byte": bpb,
        "byte_perplexity": 2.0**bpb,
        "tokens": tokens,
        "bytes": n_bytes,
        "documents": documents,
    }


def read_documents(
    directory: str | Path, eos_id: int | None, max_tokens: int | None = None
) -> tuple[list[list[int]], int | None]:
    """Documents of a split (closing EOS removed) until `max_tokens` text tokens; and the split's EOS id."""
    from tokensmith.trainer.data.shards import ShardSet

    shards = ShardSet.open(directory)
    eos = shards.eos_id if shards.eos_id is not None else eos_id
    docs: list[list[int]] = []
    total = 0
    for doc in shards.documents():
        tokens = [int(t) for t in doc]
        if tokens and eos is not None and tokens[-1] == eos:
            tokens = tokens[:-1]
        if not tokens:
            continue
        if max_tokens is not None and total + len(tokens) > max_tokens:
            tokens = tokens[: max_tokens - total]
        docs.append(tokens)
        total += len(tokens)
        if max_tokens is not None and total >= max_tokens:
            break
    if not docs:
        raise TokensmithError(f"{directory} holds no tokens to measure perplexity on")
    return docs, eos


def shard_perplexity(
    model: LogitsFn,
    tokenizer: TextTokenizer,
    directory: str | Path,
    *,
    max_length: int,
    batch_size: int,
    device: str = "cpu",
    max_tokens: int | None = None,
) -> dict[str, Any]:
    docs, eos = read_documents(directory, tokenizer.eos_id, max_tokens)
    prefix = eos if eos is not None else tokenizer.eos_id
    try:
        logprobs = rolling_loglikelihoods(
            model, docs, prefix_id=prefix, max_length=max_length, batch_size=batch_size, device=device
        )
    except IndexError as err:  # token ids beyond the model's vocabulary
        raise TokensmithError(
            f"the shards in {directory} do not fit this model ({err}); were they made with its tokenizer?"
        ) from err
    n_bytes = documents_bytes(tokenizer, docs)
    result: dict[str, Any] = summarize(sum(logprobs), sum(len(d) for d in docs), n_bytes, len(docs))
    result["path"] = str(Path(directory).resolve())
    return result


def documents_bytes(tokenizer: TextTokenizer, docs: Sequence[Sequence[int]]) -> int:
    return sum(len(tokenizer.decode(list(doc)).encode("utf-8")) for doc in docs)
