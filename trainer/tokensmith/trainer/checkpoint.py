"""Checkpoint layout, completeness protocol and loading (no DeepSpeed needed to read one).

Layout under `checkpoint.dir` (ROOT):

    ROOT/latest                      text: the name of the newest complete checkpoint (moved atomically)
    ROOT/latest_healthy              text: the name of the newest complete *healthy* checkpoint (idem)
    ROOT/step-00000100/
        ds/...                       DeepSpeed's own checkpoint (module, optimizer partitions per rank)
        portable/zero/<name>/*.pt    TP/PP runs: layout-free fp32 weights and Adam moments per parameter
        model.safetensors            consolidated weights: only every Mth checkpoint and the final one
                                     (`checkpoint.consolidate_every`); readers rebuild them from the
                                     sharded state otherwise (consolidate.py)
        config.yaml                  the resolved TrainerConfig
        trainer_state.json           step, tokens, data position, seed, world size, model hash
        tokenizer.json               copy of the tokenizer (when one is known)
        ranks/rank-00000.json        each rank's share of the checksums (written after its save)
        manifest.json                every file above with its size and sha256, `healthy`,
                                     `consolidated` and `skip_samples`; written LAST

A checkpoint counts only when `manifest.json` is in place, which rank 0 writes after every rank has
finished writing and hashing; only then does `latest` move. Resume takes the newest checkpoint whose
manifest verifies (sizes, and sha256 unless told otherwise) and skips torn or corrupt ones, so `latest`
is a convenience for readers (evaluator, export, operator), not the source of truth for resume.

`healthy` (docs/trainer.md, "Run health") is true when no bad step (skipped, non-finite or an open
spike) happened since the previous checkpoint and post-save verification, when enabled, passed; a
manifest without the field predates the guardrails and counts as healthy. Pruning never deletes the
newest healthy checkpoint, so a rollback always has somewhere to go.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokensmith.core.errors import TokensmithError
from tokensmith.core.io import atomic_write_text

if TYPE_CHECKING:
    import torch

    from tokensmith.trainer.config import TrainerConfig
    from tokensmith.trainer.model import Transformer

LATEST = "latest"
LATEST_HEALTHY = "latest_healthy"
ROLLED_BACK = ".rolled-back"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
STATE = "trainer_state.json"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer.json"
RANKS = "ranks"
DS_TAG = "ds"
PORTABLE = "portable"  # layout-free state of tensor/pipeline-parallel runs (parallel/portable.py)
_NAME = re.compile(r"^step-(\d{8,})$")
_CHUNK = 1 << 20


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def step_of(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def file_digest(path: Path) -> dict[str, Any]:
    """Size and sha256 of one file, read in 1 MiB chunks (never whole)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def payload_files(ckpt: Path) -> list[str]:
    """Every file of a checkpoint except the bookkeeping (rank markers, manifest), sorted, relative."""
    out = []
    for path in ckpt.rglob("*"):
        rel = path.relative_to(ckpt).as_posix()
        if path.is_file() and rel != MANIFEST and not rel.startswith(f"{RANKS}/") and "/." not in f"/{rel}":
            out.append(rel)
    return sorted(out)


def share(items: list[str], rank: int, world: int) -> list[str]:
    """Rank `rank`'s share of `items` (round robin), so that all ranks hash in parallel."""
    return items[rank::world]


def write_rank_marker(ckpt: Path, rank: int, world: int, files: list[str] | None = None) -> None:
    """Hash this rank's files and record them: `files` (relative paths: what this rank wrote, once its
    writes are done), or else its round-robin share of every file (after a barrier confirmed every
    rank's save had returned)."""
    if files is None:
        files = share(payload_files(ckpt), rank, world)
    marker = {"rank": rank, "world_size": world, "files": {rel: file_digest(ckpt / rel) for rel in files}}
    atomic_write_text(ckpt / RANKS / f"rank-{rank:05d}.json", json.dumps(marker, indent=1))


def wait_for_markers(ckpt: Path, world: int, timeout_s: float, poll_s: float = 0.05) -> None:
    """Rank 0 (in the background writer): wait until every rank's marker exists (no collective: the
    other ranks write theirs from their own background threads)."""
    deadline = time.monotonic() + timeout_s
    markers = [ckpt / RANKS / f"rank-{rank:05d}.json" for rank in range(world)]
    while not all(m.is_file() for m in markers):
        if time.monotonic() > deadline:
            missing = [m.name for m in markers if not m.is_file()]
            raise RuntimeError(f"checkpoint {ckpt}: no marker from {missing[:5]} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def finalize(
    ckpt: Path,
    world: int,
    step: int,
    extra: dict[str, Any] | None = None,
    hash_unclaimed: bool = False,
) -> dict[str, Any]:
    """Rank 0, after every rank wrote its marker: merge the markers into the manifest (atomically).

    Raises if a rank's marker is missing or (unless `hash_unclaimed`: rank 0 hashes the rest itself,
    e.g. small files DeepSpeed wrote outside its checkpoint engine) the markers do not cover every file."""
    files: dict[str, Any] = {}
    for rank in range(world):
        marker_path = ckpt / RANKS / f"rank-{rank:05d}.json"
        if not marker_path.exists():
            raise RuntimeError(f"checkpoint {ckpt}: rank {rank} did not finish writing")
        files.update(json.loads(marker_path.read_text())["files"])
    missing = set(payload_files(ckpt)) - set(files)
    if missing and hash_unclaimed:
        files.update({rel: file_digest(ckpt / rel) for rel in sorted(missing)})
    elif missing:
        raise RuntimeError(f"checkpoint {ckpt}: files not hashed by any rank: {sorted(missing)[:5]}")
    manifest = {
        "format": "tokensmith-checkpoint/1",
        "step": step,
        "world_size": world,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_bytes": sum(f["size"] for f in files.values()),
        "files": files,
        **(extra or {}),
    }
    atomic_write_text(ckpt / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def set_latest(root: Path, name: str, pointer: str = LATEST) -> None:
    """Point ROOT/latest (or ROOT/latest_healthy) at `name` with one atomic rename."""
    atomic_write_text(root / pointer, name + "\n")


def read_manifest(ckpt: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((ckpt / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest


def is_healthy(ckpt: Path) -> bool:
    """A complete checkpoint whose manifest does not say it is unhealthy."""
    manifest = read_manifest(ckpt)
    return bool(manifest) and bool(manifest.get("healthy", True))


def newest_healthy(root: Path) -> Path | None:
    return next((p for p in complete(root) if is_healthy(p)), None)


def verify(ckpt: Path, checksums: bool = True, rank: int = 0, world: int = 1) -> list[str]:
    """Problems with a checkpoint (empty when it is complete and intact).

    Sizes are always checked; sha256 too when `checksums` (each rank checks its share of the files)."""
    manifest_path = ckpt / MANIFEST
    if not manifest_path.exists():
        return [f"{ckpt.name}: no {MANIFEST} (the save did not finish on every rank)"]
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as err:
        return [f"{ckpt.name}: unreadable {MANIFEST}: {err}"]
    problems = []
    for rel, meta in files.items():
        path = ckpt / rel
        if not path.is_file():
            problems.append(f"{ckpt.name}: missing {rel}")
        elif path.stat().st_size != meta["size"]:
            size = path.stat().st_size
            problems.append(f"{ckpt.name}: {rel} has {size} bytes, the manifest says {meta['size']}")
    if problems or not checksums:
        return problems
    for rel in share(sorted(files), rank, world):
        if file_digest(ckpt / rel)["sha256"] != files[rel]["sha256"]:
            problems.append(f"{ckpt.name}: {rel} does not match its sha256 (corrupt)")
    return problems


def candidates(root: Path) -> list[Path]:
    """Checkpoint directories under ROOT, newest (highest step) first."""
    if not root.is_dir():
        return []
    found = [(step_of(p.name), p) for p in root.iterdir() if p.is_dir()]
    return [p for s, p in sorted(((s, p) for s, p in found if s is not None), reverse=True)]


def complete(root: Path) -> list[Path]:
    """Checkpoints with a manifest, newest first (sizes and checksums not verified)."""
    return [p for p in candidates(root) if (p / MANIFEST).is_file()]


def prune_plan(root: Path, keep: int) -> list[Path]:
    """Which directories to delete: complete checkpoints beyond the newest `keep`, and torn ones older
    than the newest complete one (a torn one newer than that may still be being written)."""
    done = complete(root)
    healthy = newest_healthy(root)
    doomed = [p for p in done[keep:] if p != healthy]  # a rollback target is never pruned
    if done:
        newest = step_of(done[0].name) or 0
        doomed += [p for p in candidates(root) if p not in done and (step_of(p.name) or 0) < newest]
    return doomed


def prune(root: Path, keep: int) -> list[Path]:
    doomed = prune_plan(root, keep)
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def roll_back_past(root: Path, keep_step: int) -> list[Path]:
    """Move the checkpoints newer than `keep_step` (a rollback's abandoned future) out of sight, to
    ROOT/.rolled-back/ (one generation kept for inspection), so that no later resume picks them."""
    moved = []
    for path in candidates(root):
        step = step_of(path.name)
        if step is not None and step > keep_step:
            target = root / ROLLED_BACK / path.name
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
            moved.append(target)
    return moved


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory, or the checkpoint root (then follow `latest`, else the newest complete)."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p
    if (p / LATEST).is_file():
        name = (p / LATEST).read_text().strip()
        if (p / name / MANIFEST).is_file():
            return p / name
    done = complete(p)
    if done:
        return done[0]
    if not p.exists():
        raise TokensmithError(f"checkpoint {p} does not exist; pass a checkpoint directory or checkpoint.dir")
    raise TokensmithError(
        f"{p} holds no complete checkpoint (no {MANIFEST}); pass a checkpoint directory or checkpoint.dir"
    )


@dataclass
class LoadedModel:
    """What `load_model` returns: the model in eval mode and what a reader needs beside it."""

    model: Transformer
    config: TrainerConfig
    step: int
    tokens: int
    path: Path
    tokenizer_path: Path | None


def model_hash(cfg: TrainerConfig) -> str:
    """What a checkpoint must share with the config resuming it: the architecture."""
    text = json.dumps(cfg.model.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_config(ckpt: Path) -> TrainerConfig:
    from tokensmith.trainer.config import TrainerConfig

    return TrainerConfig.load(ckpt / CONFIG)


def read_state(ckpt: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((ckpt / STATE).read_text())
    return result


def load_model(
    path: str | os.PathLike[str], device: str = "cpu", dtype: torch.dtype | None = None
) -> LoadedModel:
    """Load a checkpoint's weights into a `Transformer` (eval mode) on `device`: its consolidated
    `model.safetensors`, or else the full weights rebuilt from its sharded state (consolidate.py; no
    DeepSpeed needed either way).

    `path` is a checkpoint directory or the checkpoint root (then `latest` is followed). `dtype`
    defaults to float32; pass e.g. `torch.bfloat16` to keep memory down on a GPU."""
    import torch

    ckpt = resolve(path)
    config = read_config(ckpt)
    state = read_state(ckpt)
    model = model_from_weights(ckpt, config.model, device)
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    tokenizer = ckpt / TOKENIZER
    return LoadedModel(
        model=model,
        config=config,
        step=int(state["step"]),
        tokens=int(state["tokens"]),
        path=ckpt,
        tokenizer_path=tokenizer if tokenizer.is_file() else None,
    )


def model_from_weights(ckpt: Path, model_cfg: Any, device: str = "cpu") -> Transformer:
    """A `Transformer` holding `ckpt`'s full weights (as stored: dtype unchanged) on `device`."""
    import torch

    from tokensmith.trainer.consolidate import read_weights
    from tokensmith.trainer.model import Transformer

    with torch.device("meta"):
        model = Transformer(model_cfg)
    weights = read_weights(ckpt, list(model.state_dict()))
    model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=True, assign=True)
    # Buffers (position tables) are not saved: rebuild them on the device.
    _rebuild_buffers(model, device)
    return model


def _rebuild_buffers(model: Transformer, device: str) -> None:
    from tokensmith.trainer.model import alibi_bias, rope_tables, sinusoidal_table

    cfg = model.cfg
    if cfg.position == "rope":
        cos, sin = rope_tables(cfg.head_dim, cfg.seq_len, cfg.rope_theta)
        model.rope_cos, model.rope_sin = cos.to(device), sin.to(device)
    elif cfg.position == "sinusoidal":
        model.sin_pos = sinusoidal_table(cfg.seq_len, cfg.d_model).to(device)
    elif cfg.position == "alibi":
        model.alibi = alibi_bias(cfg.n_heads, cfg.seq_len).to(device)


def save_weights(model_state: dict[str, torch.Tensor], path: Path) -> None:
    """Consolidated weights as safetensors, written atomically (tmp file + rename)."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def write_state_files(
    ckpt: Path, config: TrainerConfig, state: dict[str, Any], tokenizer: Path | None
) -> None:
    """config.yaml, trainer_state.json and the tokenizer copy (rank 0)."""
    from tokensmith.core.output import to_yaml

    atomic_write_text(ckpt / CONFIG, to_yaml(config.model_dump(mode="json")))
    atomic_write_text(ckpt / STATE, json.dumps(state, indent=1))
    if tokenizer is not None and tokenizer.is_file():
        tmp = ckpt / f".{TOKENIZER}.tmp"
        shutil.copyfile(tokenizer, tmp)
        os.replace(tmp, ckpt / TOKENIZER)


def write_model_checkpoint(
    root: str | os.PathLike[str],
    model: Transformer,
    config: TrainerConfig,
    step: int,
    tokens: int = 0,
    tokenizer: str | os.PathLike[str] | None = None,
) -> Path:
    """A complete, weights-only checkpoint (no optimizer state, no DeepSpeed) in the same layout:
    what tests and tools use to hand a model to `load_model`, `tokensmith eval` and `tokensmith export`.
    A training run cannot resume from it (there is no `ds/` directory)."""
    root_path = Path(root)
    ckpt = root_path / checkpoint_name(step)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True)
    save_weights(model.state_dict(), ckpt / WEIGHTS)
    state = {"step": step, "tokens": tokens, "samples_seen": 0, "seed": config.train.seed, "world_size": 1}
    write_state_files(ckpt, config, state, Path(tokenizer) if tokenizer else None)
    write_rank_marker(ckpt, 0, 1)
    finalize(ckpt, 1, step, {"weights_only": True, "consolidated": True})
    set_latest(root_path, ckpt.name)
    return ckpt
