"""The lm-evaluation-harness model class for Tokensmith models: `lm_eval.api.registry` name `tokensmith`.

It subclasses the harness's `TemplateLM`, so context/continuation tokenisation (trailing spaces move
to the continuation; an empty context is conditioned on the end-of-text token) is the harness's own
code, and scores through `scoring.py` in length-sorted, de-duplicated, right-padded batches.

Two ways to build one:
- `TokensmithLM(checkpoint=PATH, ...)`: a Tokensmith checkpoint or an exported Hugging Face model
  directory (what `simple_evaluate(model="tokensmith", model_args={"checkpoint": PATH})` does);
- `TokensmithLM(model=fn, tokenizer=tok, max_length=N)`: any causal LM callable `ids -> logits`
  and a `TextTokenizer` (tests, notebooks, models trained elsewhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from tokensmith.evaluator import scoring
from tokensmith.evaluator.models import adapt
from tokensmith.evaluator.tokenizer import TextTokenizer

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_GEN_TOKS = 256


@register_model("tokensmith")
class TokensmithLM(TemplateLM):
    """A causal language model scored in batches for lm-evaluation-harness."""

    def __init__(
        self,
        checkpoint: str | None = None,
        batch_size: int | str | None = DEFAULT_BATCH_SIZE,
        device: str | None = "cpu",
        max_length: int | None = None,
        *,
        model: scoring.LogitsFn | None = None,
        tokenizer: TextTokenizer | None = None,
        progress: bool = False,
        **_ignored: Any,  # the harness passes max_batch_size and friends to every model class
    ) -> None:
        super().__init__()
        self._device = device or "cpu"
        self.info: dict[str, Any] = {}
        if checkpoint is not None:
            from tokensmith.evaluator.checkpoint import load_for_eval

            loaded = load_for_eval(checkpoint, self._device)
            model, tokenizer = loaded.forward, loaded.tokenizer
            max_length = max_length or loaded.max_length
            self.info = loaded.info()
        if model is None or tokenizer is None or max_length is None:
            raise ValueError("TokensmithLM needs checkpoint=PATH, or model=, tokenizer= and max_length=")
        self.model_fn = adapt(model)
        self.text_tokenizer = tokenizer
        self._max_length = int(max_length)
        self.batch_size = parse_batch_size(batch_size)
        self.progress = progress

    # --- what the harness asks of a model -----------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.text_tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.text_tokenizer.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.text_tokenizer.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.text_tokenizer.decode(tokens)

    def get_model_info(self) -> dict[str, Any]:
        return dict(self.info)

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **kwargs: Any
    ) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        with tqdm(total=len(pairs), disable=not self.progress, desc="loglikelihood") as bar:
            results = scoring.loglikelihoods(
                self.model_fn,
                pairs,
                max_length=self.max_length,
                batch_size=self.batch_size,
                pad_id=self.eot_token_id,
                device=self._device,
                progress=bar.update,
            )
        for (strings, _, _), result in zip(requests, results, strict=True):
            if strings is not None:
                self.cache_hook.add_partial("loglikelihood", strings, result)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        texts = [req.args[0] for req in requests]
        totals = scoring.rolling_loglikelihoods(
            self.model_fn,
            [self.tok_encode(text) for text in texts],
            prefix_id=self.prefix_token_id,
            max_length=self.max_length,
            batch_size=self.batch_size,
            pad_id=self.eot_token_id,
            device=self._device,
        )
        for text, total in zip(texts, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        # Requests with the same generation settings are decoded together.
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        eos_text = self.tok_decode([self.eot_token_id])
        for i, req in enumerate(requests):
            groups.setdefault(generation_settings(req.args[1], eos_text), []).append(i)
        out: list[str] = [""] * len(requests)
        for (stops, max_new), members in groups.items():
            texts = scoring.greedy_generate(
                self.model_fn,
                [self.tok_encode(requests[i].args[0]) for i in members],
                decode=self.tok_decode,
                stops=stops,
                max_new_tokens=max_new,
                max_length=self.max_length,
                eos_id=self.eot_token_id,
                batch_size=self.batch_size,
                pad_id=self.eot_token_id,
                device=self._device,
            )
            for i, text in zip(members, texts, strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out


def parse_batch_size(value: int | str | None) -> int:
    """An int, or "auto" (the default size: CPU evaluation gains little from larger batches)."""
    if value is None or value == "auto":
        return DEFAULT_BATCH_SIZE
    text = str(value).split(":")[0]  # the harness' "auto:N" form
    if text == "auto":
        return DEFAULT_BATCH_SIZE
    size = int(text)
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {value}")
    return size


def generation_settings(gen_kwargs: dict[str, Any], eos_text: str) -> tuple[tuple[str, ...], int]:
    """(stop strings, max new tokens) from a request's generation kwargs; greedy only."""
    kwargs = dict(gen_kwargs or {})
    if kwargs.get("do_sample"):
        raise ValueError("the tokensmith model class decodes greedily; do_sample=True is not supported")
    until = kwargs.get("until") or []
    stops = [until] if isinstance(until, str) else list(until)
    if eos_text and eos_text not in stops:
        stops.append(eos_text)
    return tuple(stops), int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
