"""Adapters that let the scorer ask a model for logits at chosen positions only.

A causal LM computes its output head (a d_model x vocabulary product) at every position, yet scoring a
multiple-choice continuation needs it at a handful: with a few-shot prompt of 500 tokens and a 5-token
answer, 99% of that product is thrown away, and for small models (vocabulary large next to d_model)
the head is a large share of all the work. `logits_at(ids, keep)` returns logits [B, len(keep), V]
for the sequence positions in `keep` (one sorted 1-D index tensor shared by the batch):

- Tokensmith `Transformer`: a forward hook on the module that feeds the output head (the final norm,
  or the last block in a post-LN model, per the layout `tokensmith.trainer.model` documents) keeps only
  those positions, so the model's own forward runs unchanged and projects just them;
- Hugging Face causal LMs: their `logits_to_keep` argument, which does the same;
- any other callable: full logits, then the positions are picked.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class TokensmithLogits:
    """A Tokensmith `Transformer` as a logits function with `logits_at`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.tail = model.norm_f if getattr(model, "norm_f", None) is not None else model.blocks[-1]

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.model(ids)
        return result

    def logits_at(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        handle = self.tail.register_forward_hook(lambda _module, _inputs, out: out.index_select(1, keep))
        try:
            result: torch.Tensor = self.model(ids)
        finally:
            handle.remove()
        return result


class HFLogits:
    """A `transformers` causal LM as a logits function; `logits_at` uses `logits_to_keep` when the
    architecture accepts it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.keeps = "logits_to_keep" in inspect.signature(model.forward).parameters

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.model(input_ids=ids).logits
        return result

    def logits_at(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if not self.keeps:
            return self(ids).index_select(1, keep)
        result: torch.Tensor = self.model(input_ids=ids, logits_to_keep=keep).logits
        return result


def is_tokensmith_transformer(model: Any) -> bool:
    return all(hasattr(model, name) for name in ("tok_emb", "blocks", "norm_f", "cfg"))


def adapt(model: Any) -> Any:
    """Wrap a Tokensmith Transformer so the scorer can use `logits_at`; anything else is returned as is."""
    if isinstance(model, (TokensmithLogits, HFLogits)):
        return model
    if is_tokensmith_transformer(model):
        return TokensmithLogits(model)
    return model


def logits_at(model: Any, ids: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Logits [B, len(keep), V] at positions `keep` (sorted, distinct) of every row of `ids`."""
    import torch

    index = torch.tensor(keep, dtype=torch.long, device=ids.device)
    method = getattr(model, "logits_at", None)
    if method is not None:
        result: torch.Tensor = method(ids, index)
        return result
    full: torch.Tensor = model(ids)
    return full.index_select(1, index)
