"""Load what `tokensmith eval` scores: a Tokensmith checkpoint (through the trainer's loader, no
DeepSpeed needed) or an exported Hugging Face model directory, as a logits function plus tokenizer.

Every failure a user can cause (a path that does not exist, a checkpoint that is torn or corrupt, no
tokenizer) becomes one `TokensmithError` line with exit code 2, never a traceback or a hang.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokensmith.core.errors import TokensmithError
from tokensmith.evaluator.models import HFLogits, TokensmithLogits
from tokensmith.evaluator.scoring import LogitsFn
from tokensmith.evaluator.tokenizer import FileTokenizer, HFTokenizer, TextTokenizer


@dataclass
class EvalModel:
    """A model ready to score: `forward(ids [B, T]) -> logits [B, T, V]` and its tokenizer."""

    forward: LogitsFn
    tokenizer: TextTokenizer
    max_length: int
    path: Path
    kind: str  # "tokensmith" or "huggingface"
    step: int | None = None
    tokens: int | None = None
    config_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.path),
            "checkpoint_kind": self.kind,
            "step": self.step,
            "tokens": self.tokens,
            "model_config_hash": self.config_hash,
            "max_length": self.max_length,
            **self.extra,
        }


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the model config as JSON with sorted keys: the trainer's
    `model_hash` (what a checkpoint records in trainer_state.json), so the two always agree."""
    canonical = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_hf_export(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text())
    except ValueError:
        return False


def load_for_eval(
    path: str | Path, device: str = "cpu", tokenizer: str | Path | None = None, verify: bool = True
) -> EvalModel:
    """A Tokensmith checkpoint (a step directory or the checkpoint root) or a Hugging Face directory."""
    p = Path(path)
    if not p.exists():
        raise TokensmithError(
            f"checkpoint {p} does not exist; pass a checkpoint directory, the training run's "
            "checkpoint.dir, or an exported Hugging Face model directory"
        )
    if is_hf_export(p):
        return _load_hf(p, device, tokenizer)
    return _load_tokensmith(p, device, tokenizer, verify)


def _load_tokensmith(p: Path, device: str, tokenizer: str | Path | None, verify: bool) -> EvalModel:
    try:
        from tokensmith.trainer import checkpoint as ckpt_io
    except ImportError as err:  # the trainer extra is not installed
        raise TokensmithError(
            f"reading a Tokensmith checkpoint needs the trainer component ({err}); "
            "install tokensmith[trainer] or pass an exported Hugging Face model directory"
        ) from err
    ckpt = ckpt_io.resolve(p)
    if verify:
        problems = ckpt_io.verify(ckpt, checksums=True)
        if problems:
            raise TokensmithError(f"checkpoint {ckpt} is corrupt or incomplete: {problems[0]}")
    try:
        loaded = ckpt_io.load_model(ckpt, device=device)
    except TokensmithError:
        raise
    except Exception as err:  # safetensors, yaml, pydantic, torch: all mean "cannot read this checkpoint"
        raise TokensmithError(
            f"checkpoint {ckpt} cannot be loaded ({type(err).__name__}: {err}); it is corrupt or "
            "from an incompatible version"
        ) from err
    tok_path = Path(tokenizer) if tokenizer else loaded.tokenizer_path
    if tok_path is None:
        raise TokensmithError(f"checkpoint {ckpt} has no tokenizer.json; pass --tokenizer PATH")
    model_cfg = loaded.config.model
    recorded = ckpt_io.read_state(ckpt).get("model_hash")
    return EvalModel(
        forward=TokensmithLogits(loaded.model),
        tokenizer=FileTokenizer.from_file(tok_path),
        max_length=model_cfg.seq_len,
        path=ckpt,
        kind="tokensmith",
        step=loaded.step,
        tokens=loaded.tokens,
        config_hash=recorded or config_hash(model_cfg.model_dump(mode="json")),
        extra={"parameters": loaded.model.num_parameters()},
    )


def _load_hf(p: Path, device: str, tokenizer: str | Path | None) -> EvalModel:
    from transformers import AutoModelForCausalLM

    config = json.loads((p / "config.json").read_text())
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype="float32")
    except Exception as err:
        raise TokensmithError(
            f"{p} looks like a Hugging Face model but cannot be loaded ({type(err).__name__}: {err})"
        ) from err
    model = model.to(device).eval()
    text_tokenizer = _hf_tokenizer(p, tokenizer)

    meta = _export_metadata(p)
    return EvalModel(
        forward=HFLogits(model),
        tokenizer=text_tokenizer,
        max_length=int(config.get("max_position_embeddings") or config.get("n_positions") or 2048),
        path=p,
        kind="huggingface",
        step=meta.get("step"),
        tokens=meta.get("tokens"),
        config_hash=meta.get("model_config_hash") or config_hash(config),
        extra={"parameters": sum(t.numel() for t in model.parameters())},
    )


def _hf_tokenizer(p: Path, tokenizer: str | Path | None) -> TextTokenizer:
    if tokenizer:
        return FileTokenizer.from_file(tokenizer)
    try:
        from transformers import AutoTokenizer

        return HFTokenizer.wrap(AutoTokenizer.from_pretrained(str(p), local_files_only=True), str(p))
    except Exception:
        if (p / "tokenizer.json").is_file():
            return FileTokenizer.from_file(p / "tokenizer.json")
        raise TokensmithError(f"{p} has no tokenizer; pass --tokenizer PATH") from None


def _export_metadata(p: Path) -> dict[str, Any]:
    """Step and config hash that `tokensmith export` may leave beside the weights (any JSON name it uses)."""
    for name in ("tokensmith.json", "tokensmith_export.json", "export.json"):
        f = p / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return {}
