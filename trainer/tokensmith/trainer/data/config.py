"""`tokensmith curate` options: one pydantic model, every step configurable and able to be switched off.

Defaults follow FineWeb's published recipe (Penedo et al., 2024, "The FineWeb Datasets"): language
identification keeping English at fastText confidence 0.65, Gopher
repetition and quality rules (Rae et al., 2021, Gopher, appendix A), C4's line rules without the
terminal-punctuation rule (Raffel et al., 2020), FineWeb's own three rules, and MinHash with 5-gram
shingles, 14 bands of 8 hashes (112 hashes; the LSH threshold is about (1/14)^(1/8) = 0.72).
This module imports no heavy library.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokensmith.trainer.data.pii import PII_KINDS

STEP_NAMES = (
    "normalize",
    "language",
    "gopher_repetition",
    "gopher_quality",
    "c4",
    "fineweb",
    "exact_dedup",
    "near_dedup",
    "pii",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True


class NormalizeConfig(_Section):
    form: Literal["NFC", "NFKC", "NFD", "NFKD"] = Field("NFC", description="Unicode normal form (UAX #15).")
    newlines: bool = Field(True, description="Turn \\r\\n and \\r into \\n.")
    strip_control: bool = Field(True, description="Drop C0/C1 control characters except tab and newline.")


class LanguageConfig(_Section):
    languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="Languages to keep, as fastText lid.176 labels them (ISO 639-1 where one exists: en, "
        "de, fr, zh, ...).",
    )
    threshold: float = Field(
        0.65, ge=0, le=1, description="Minimum confidence of the top language (FineWeb's 0.65)."
    )

    @model_validator(mode="after")
    def _some(self) -> LanguageConfig:
        self.languages = [code.strip().lower() for code in self.languages if code.strip()]
        if not self.languages:
            raise ValueError("name at least one language (e.g. en) or switch the step off (--skip language)")
        return self


class GopherRepetitionConfig(_Section):
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2


class GopherQualityConfig(_Section):
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: int = 3
    max_avg_word_length: int = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2


class C4Config(_Section):
    filter_no_terminal_punct: bool = Field(False, description="FineWeb turns this C4 rule off.")
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


class FineWebConfig(_Section):
    line_punct_thr: float = 0.12
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


class ExactDedupConfig(_Section):
    pass


class NearDedupConfig(_Section):
    n_grams: int = Field(5, ge=1, description="Shingle size in words.")
    bands: int = Field(14, ge=1, description="LSH bands (datatrove: num_buckets).")
    rows: int = Field(8, ge=1, description="Hashes per band (datatrove: hashes_per_bucket).")
    threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Jaccard threshold; when set, bands x rows are re-chosen for it (same hash count).",
    )
    seed: int = 1

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows

    def lsh(self) -> tuple[int, int]:
        """(bands, rows) in effect: the configured ones, or those that fit `threshold` best."""
        if self.threshold is None:
            return self.bands, self.rows
        return lsh_params_for_threshold(self.threshold, self.num_hashes)

    @property
    def effective_threshold(self) -> float:
        bands, rows = self.lsh()
        return lsh_threshold(bands, rows)


class PIIConfig(_Section):
    kinds: list[str] = Field(default_factory=lambda: list(PII_KINDS))
    public_ips_only: bool = Field(True, description="Private, loopback and documentation IPs are not PII.")

    @model_validator(mode="after")
    def _known(self) -> PIIConfig:
        unknown = set(self.kinds) - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; choose from {', '.join(PII_KINDS)}")
        return self


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="Use this tokenizer.json instead of training one.")
    vocab_size: int = Field(32_768, ge=260, le=1 << 24, description="Vocabulary of a newly trained BPE.")
    min_frequency: int = Field(2, ge=1)
    eos_token: str = "<|endoftext|>"


class CurateConfig(BaseModel):
    """Everything `tokensmith curate` does, in pipeline order."""

    model_config = ConfigDict(extra="forbid")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = Field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = Field(default_factory=GopherQualityConfig)
    c4: C4Config = Field(default_factory=C4Config)
    fineweb: FineWebConfig = Field(default_factory=FineWebConfig)
    exact_dedup: ExactDedupConfig = Field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    valid_fraction: float = Field(0.01, ge=0, lt=1, description="Share of documents in the validation split.")
    split_seed: int = Field(0, ge=0, description="The split is a hash of (seed, document id).")
    word_tokenizer: Literal["spacy", "regex"] = Field(
        "spacy",
        description="Word splitter for the Gopher/C4 rules and MinHash: spacy (datatrove's and FineWeb's) "
        "or regex (several times faster, close on English prose).",
    )
    text_key: str = Field("text", description="JSONL/Parquet field that holds the text.")
    encoding_errors: Literal["strict", "replace"] = Field(
        "strict", description="strict: a non-UTF-8 file is an error; replace: decode it with U+FFFD."
    )
    tasks: int = Field(2, ge=1, description="datatrove tasks (ranks); each writes its own shard.")
    workers: int = Field(2, ge=1, description="Tasks run at the same time on this machine.")
    max_bad_line_locations: int = Field(100, ge=0, description="Bad JSONL lines listed in the report.")

    def enabled_steps(self) -> list[str]:
        return [name for name in STEP_NAMES if getattr(self, name).enabled]


def lsh_threshold(bands: int, rows: int) -> float:
    """Where the LSH S-curve 1-(1-s^r)^b rises steepest: about (1/b)^(1/r) (Leskovec et al., MMDS, 3.4.3)."""
    return float((1.0 / bands) ** (1.0 / rows))


def _integrate(f: object, a: float, b: float, steps: int = 200) -> float:
    # Trapezoidal rule; the integrands are smooth polynomials on [0, 1].
    assert callable(f)
    h = (b - a) / steps
    return h * (0.5 * f(a) + sum(f(a + i * h) for i in range(1, steps)) + 0.5 * f(b))


@lru_cache(maxsize=64)
def lsh_params_for_threshold(threshold: float, num_hashes: int) -> tuple[int, int]:
    """Bands x rows (<= num_hashes hashes) that minimise false positives + false negatives around `threshold`.

    The error areas under and over the S-curve P(s) = 1-(1-s^r)^b, as in datasketch's MinHashLSH
    (`_optimal_param`), weighted equally.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    best: tuple[float, int, int] = (math.inf, 1, 1)
    for bands in range(1, num_hashes + 1):
        rows = num_hashes // bands
        if rows < 1:
            break

        def prob(s: float, b: int = bands, r: int = rows) -> float:
            return 1.0 - (1.0 - s**r) ** b

        false_pos = _integrate(prob, 0.0, threshold)
        false_neg = _integrate(lambda s: 1.0 - prob(s), threshold, 1.0)
        error = false_pos + false_neg
        if error < best[0]:
            best = (error, bands, rows)
    return best[1], best[2]
