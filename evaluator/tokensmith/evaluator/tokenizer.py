"""One small tokenizer interface over the two kinds a Tokensmith model can come with: the `tokenizers`
file (`tokenizer.json`) that `tokensmith curate` writes, and a Hugging Face tokenizer (an exported model).

The scorer only needs text -> ids without special tokens, ids -> text, and the end-of-text id that
lm-evaluation-harness conditions on when a context is empty (its `prefix_token_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tokensmith.core.errors import TokensmithError

# Names tokenizers commonly give their end-of-text token, most specific first.
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]", "<|eot_id|>")


class TextTokenizer(Protocol):
    """What the evaluator needs from a tokenizer."""

    eos_id: int
    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass
class FileTokenizer:
    """A `tokenizers.Tokenizer` loaded from a tokenizer.json (what `tokensmith curate` writes)."""

    tokenizer: Any
    eos_id: int
    name: str

    @classmethod
    def from_file(cls, path: str | Path, eos_id: int | None = None) -> FileTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise TokensmithError(
                f"tokenizer file {path} does not exist; pass the tokenizer.json beside the shards"
            )
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
            raise TokensmithError(f"{path} is not a valid tokenizer.json ({err})") from err
        return cls(tok, eos_id if eos_id is not None else find_eos_id(tok.token_to_id), str(path))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))


@dataclass
class HFTokenizer:
    """A `transformers` tokenizer (an exported Hugging Face model directory)."""

    tokenizer: Any
    eos_id: int
    name: str

    @classmethod
    def wrap(cls, tokenizer: Any, name: str) -> HFTokenizer:
        eos = tokenizer.eos_token_id
        if eos is None:
            eos = find_eos_id(tokenizer.convert_tokens_to_ids)
        return cls(tokenizer, int(eos), name)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))


def find_eos_id(token_to_id: Any) -> int:
    """The id of the first common end-of-text token the vocabulary has; 0 when it has none.

    0 is only a fallback prefix for empty contexts; a tokenizer from `tokensmith curate` always has one.
    """
    for name in EOS_NAMES:
        try:
            found = token_to_id(name)
        except Exception:
            found = None
        if isinstance(found, int) and found >= 0:
            return found
    return 0
