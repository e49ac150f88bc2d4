"""Batched scoring of token sequences with any causal language model given as a function
`ids [B, T] -> logits [B, T, V]`.

This is the numerical core behind the lm-eval model class (`lm.py`) and the perplexity command:

- `loglikelihoods`: log P(continuation | context) and whether greedy decoding would produce the
  continuation, for many (context, continuation) token pairs at once. Requests are de-duplicated by
  their model input, so the choices of a multiple-choice item with one-token answers (MMLU's A/B/C/D)
  cost one forward row instead of four; rows are sorted longest first (the first batch is the
  largest, so an out-of-memory error shows at once, and rows of similar length share a batch, so
  little padding is wasted); inputs are right-padded, which a causal model needs no attention mask
  for: a real position never attends to the padding after it, and every row starts at position 0.
  The output head runs only at the scored positions where the model allows it (`models.py`), and only
  those go through log-softmax, never the whole [B, T, V] tensor.
- `rolling_windows`: the disjoint windows lm-evaluation-harness uses for a document's full
  log-likelihood (each token predicted exactly once, with as much context as fits).
- `greedy_generate`: greedy decoding with stop strings, batched, for `generate_until` tasks.

Left truncation follows lm-evaluation-harness: an input longer than the model's context keeps its
last `max_length` tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokensmith.evaluator.models import logits_at

if TYPE_CHECKING:
    import torch

LogitsFn = Callable[["torch.Tensor"], "torch.Tensor"]
Pair = tuple[Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class Row:
    """One forward-pass row: its input tokens and the requests that read their scores from it."""

    tokens: tuple[int, ...]
    readers: tuple[int, ...]


def model_input(context: Sequence[int], continuation: Sequence[int], max_length: int) -> tuple[int, ...]:
    """The tokens fed to the model for a pair: all but the last, the last `max_length` of them."""
    if not continuation:
        raise ValueError("a continuation must have at least one token")
    whole = [*context, *continuation]
    return tuple(whole[-(max_length + 1) :][:-1])


def plan_rows(pairs: Sequence[Pair], max_length: int) -> list[Row]:
    """Group requests with identical model inputs into one row each, longest row first.

    Ties in length are broken by the tokens themselves, so the plan (and therefore the batches and
    the floating-point results) does not depend on the order the requests arrived in.
    """
    readers: dict[tuple[int, ...], list[int]] = {}
    for i, (context, continuation) in enumerate(pairs):
        if len(continuation) > max_length:
            raise ValueError(
                f"a continuation of {len(continuation)} tokens does not fit the model's context "
                f"of {max_length}"
            )
        readers.setdefault(model_input(context, continuation, max_length), []).append(i)
    ordered = sorted(readers, key=lambda toks: (-len(toks), toks))
    return [Row(tokens, tuple(readers[tokens])) for tokens in ordered]


def batches(rows: Sequence[Row], batch_size: int) -> list[list[Row]]:
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return [list(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def loglikelihoods(
    model: LogitsFn,
    pairs: Sequence[Pair],
    *,
    max_length: int,
    batch_size: int,
    pad_id: int = 0,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """(log P(continuation | context), continuation is the greedy choice) for every pair, in order."""
    import torch

    results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    rows = plan_rows(pairs, max_length)
    with torch.inference_mode():
        for batch in batches(rows, batch_size):
            width = len(batch[0].tokens)  # longest first
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            for r, row in enumerate(batch):
                ids[r, : len(row.tokens)] = torch.tensor(row.tokens, dtype=torch.long)
            ids = ids.to(device)
            # Every (row, position, target) triple that some request scores, flattened.
            row_idx: list[int] = []
            pos_idx: list[int] = []
            targets: list[int] = []
            owner: list[int] = []
            for r, row in enumerate(batch):
                for req in row.readers:
                    continuation = list(pairs[req][1])
                    n = len(row.tokens)
                    for k, target in enumerate(continuation):
                        row_idx.append(r)
                        pos_idx.append(n - len(continuation) + k)
                        targets.append(target)
                        owner.append(req)
            keep = sorted(set(pos_idx))
            column = {p: k for k, p in enumerate(keep)}
            logits = logits_at(model, ids, keep)  # [B, len(keep), V]: the head runs only where needed
            picked = logits[torch.tensor(row_idx), torch.tensor([column[p] for p in pos_idx])].float()
            logprobs = torch.log_softmax(picked, dim=-1)
            target_t = torch.tensor(targets, device=logprobs.device)
            token_lp = logprobs.gather(1, target_t[:, None])[:, 0].double().cpu()
            hits = (picked.argmax(dim=-1) == target_t).cpu()
            sums: dict[int, float] = {}
            greedy: dict[int, bool] = {}
            for j, req in enumerate(owner):
                sums[req] = sums.get(req, 0.0) + float(token_lp[j])
                greedy[req] = greedy.get(req, True) and bool(hits[j])
            for req, total in sums.items():
                results[req] = (total, greedy[req])
            if progress is not None:
                progress(sum(len(row.readers) for row in batch))
    return results


def rolling_windows(
    tokens: Sequence[int], prefix_id: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Disjoint (context, continuation) windows that predict every token of `tokens` once, the first
    conditioned on `prefix_id` (lm-evaluation-harness' `get_rolling_token_windows` with context 1)."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    return [
        make_disjoint_window(window)
        for window in get_rolling_token_windows(
            token_list=list(tokens), prefix_token=prefix_id, max_seq_len=max_length, context_len=1
        )
    ]


def rolling_loglikelihoods(
    model: LogitsFn,
    documents: Sequence[Sequence[int]],
    *,
    prefix_id: int,
    max_length: int,
    batch_size: int,
    pad_id: int = 0,
    device: str = "cpu",
) -> list[float]:
    """Full log-likelihood of each document (windows of every document batched together)."""
    pairs: list[Pair] = []
    owner: list[int] = []
    for d, doc in enumerate(documents):
        for window in rolling_windows(doc, prefix_id, max_length):
            pairs.append(window)
            owner.append(d)
    scores = loglikelihoods(
        model, pairs, max_length=max_length, batch_size=batch_size, pad_id=pad_id, device=device
    )
    totals = [0.0] * len(documents)
    for d, (logprob, _) in zip(owner, scores, strict=True):
        totals[d] += logprob
    return totals


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def greedy_generate(
    model: LogitsFn,
    contexts: Sequence[Sequence[int]],
    *,
    decode: Callable[[list[int]], str],
    stops: Sequence[str],
    max_new_tokens: int,
    max_length: int,
    eos_id: int | None,
    batch_size: int,
    pad_id: int = 0,
    device: str = "cpu",
) -> list[str]:
    """Greedy continuation of each context until a stop string, EOS, or `max_new_tokens` tokens.

    No key/value cache: every step re-reads the (right-padded) rows, which keeps this correct for any
    `LogitsFn`; generation tasks are a small part of the benchmarks this evaluator targets.
    """
    import torch

    keep = max(1, max_length - max_new_tokens)
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    out: list[str] = [""] * len(contexts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            seqs = [list(contexts[i])[-keep:] or [eos_id if eos_id is not None else pad_id] for i in chunk]
            generated: list[list[int]] = [[] for _ in chunk]
            done = [False] * len(chunk)
            for _ in range(max_new_tokens):
                live = [k for k in range(len(chunk)) if not done[k]]
                if not live:
                    break
                windows = [seqs[k][-max_length:] for k in live]
                width = max(len(w) for w in windows)
                ids = torch.full((len(live), width), pad_id, dtype=torch.long)
                for r, w in enumerate(windows):
                    ids[r, : len(w)] = torch.tensor(w, dtype=torch.long)
                ends = [len(w) - 1 for w in windows]
                positions = sorted(set(ends))
                column = torch.tensor([positions.index(e) for e in ends])
                logits = logits_at(model, ids.to(device), positions)
                nxt = logits[torch.arange(len(live)), column].argmax(dim=-1).tolist()
                for k, token in zip(live, nxt, strict=True):
                    if eos_id is not None and token == eos_id:
                        done[k] = True
                        continue
                    seqs[k].append(int(token))
                    generated[k].append(int(token))
                    if cut_at_stop(decode(generated[k]), stops)[1]:
                        done[k] = True
            for k, i in enumerate(chunk):
                out[i] = cut_at_stop(decode(generated[k]), stops)[0]
    return out
