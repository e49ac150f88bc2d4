"""`tokensmith curate` and `tokensmith data` (cat, stats).

Nothing heavy is imported at module level: datatrove, tokenizers and numpy load inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from tokensmith.core.errors import TokensmithError
from tokensmith.core.io import atomic_write_text
from tokensmith.core.output import format_option, table, to_json, to_yaml
from tokensmith.trainer.data.config import STEP_NAMES

_STEP_FLAGS = STEP_NAMES  # every step can be switched off with --skip


def _set_dotted(data: dict[str, Any], dotted: str) -> None:
    import yaml

    if "=" not in dotted:
        raise TokensmithError(f"--set {dotted!r}: expected KEY=VALUE, e.g. --set near_dedup.threshold=0.8")
    key, raw = dotted.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise TokensmithError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(config_file: str | None, sets: tuple[str, ...], overrides: dict[str, Any]) -> Any:
    """File (YAML/JSON), then --set KEY=VALUE, then the dedicated flags; one clear line when invalid."""
    import yaml
    from pydantic import ValidationError

    from tokensmith.trainer.data.config import CurateConfig

    data: dict[str, Any] = {}
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise TokensmithError(f"--config {config_file}: cannot read it ({err})") from err
        if not isinstance(loaded, dict):
            raise TokensmithError(f"--config {config_file}: expected a mapping of options")
        data = loaded
    for item in sets:
        _set_dotted(data, item)
    for dotted, value in overrides.items():
        if value is not None:
            _set_dotted(data, f"{dotted}={json.dumps(value)}")
    try:
        return CurateConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TokensmithError(f"curate option {where}: {first['msg']}") from None


@click.command(name="curate")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML/JSON options file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one option (dotted key).")
@click.option("--skip", multiple=True, type=click.Choice(_STEP_FLAGS), help="Switch a step off (repeatable).")
@click.option(
    "--tokenizer", "tokenizer_path", type=click.Path(dir_okay=False), help="Use this tokenizer.json."
)
@click.option("--languages", help="Languages to keep, comma-separated fastText codes (default en).")
@click.option("--language-threshold", type=float, help="Minimum language confidence (default 0.65).")
@click.option("--vocab-size", type=int, help="Vocabulary of the BPE to train (default 32768).")
@click.option("--eos-token", help="End-of-document token (default <|endoftext|>).")
@click.option("--valid-fraction", type=float, help="Share of documents for validation (default 0.01).")
@click.option(
    "--minhash-threshold", type=float, help="Near-duplicate Jaccard threshold (picks bands x rows)."
)
@click.option("--text-key", help="JSONL/Parquet field with the text (default text).")
@click.option("--word-tokenizer", type=click.Choice(["spacy", "regex"]), help="Word splitter for the rules.")
@click.option("--encoding-errors", type=click.Choice(["strict", "replace"]), help="Non-UTF-8 input handling.")
@click.option("--tasks", type=int, help="datatrove tasks (ranks); default 2.")
@click.option(
    "--workers", type=int, help="Tasks run at once (local; CPUs of a private local Ray); default 2."
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Run the stages here (local) or on a Ray cluster (ray; needs tokensmith[ray]).",
)
@click.option(
    "--ray-address",
    help="Ray cluster to use with --executor ray (default: RAY_ADDRESS, else a private local Ray).",
)
@click.option("--force", is_flag=True, help="Discard an earlier run in --out and start over.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when on a terminal).")
@format_option(default="table", choices=("table", "json"))
def curate(
    inputs: tuple[str, ...],
    out: str,
    config_file: str | None,
    sets: tuple[str, ...],
    skip: tuple[str, ...],
    tokenizer_path: str | None,
    languages: str | None,
    language_threshold: float | None,
    vocab_size: int | None,
    eos_token: str | None,
    valid_fraction: float | None,
    minhash_threshold: float | None,
    text_key: str | None,
    word_tokenizer: str | None,
    encoding_errors: str | None,
    tasks: int | None,
    workers: int | None,
    executor: str,
    ray_address: str | None,
    force: bool,
    progress: bool | None,
    fmt: str,
) -> None:
    """Filter, de-duplicate, redact and tokenize raw text into token shards.

    INPUT: JSONL (with a `text` field), plain text or Parquet files, directories or globs, local or any
    fsspec URL; .gz/.zst compressed files too. Writes OUT/train/, OUT/valid/ (token shards),
    OUT/tokenizer.json, OUT/report.json and OUT/report.html. Re-running with the same --out resumes.
    """
    from tokensmith.trainer.data.pipeline import curate as run

    overrides: dict[str, Any] = {
        "tokenizer.path": tokenizer_path,
        "language.languages": languages.split(",") if languages is not None else None,
        "language.threshold": language_threshold,
        "tokenizer.vocab_size": vocab_size,
        "tokenizer.eos_token": eos_token,
        "valid_fraction": valid_fraction,
        "near_dedup.threshold": minhash_threshold,
        "text_key": text_key,
        "word_tokenizer": word_tokenizer,
        "encoding_errors": encoding_errors,
        "tasks": tasks,
        "workers": workers,
    }
    for step in skip:
        overrides[f"{step}.enabled"] = False
    config = load_config(config_file, sets, overrides)
    if ray_address and executor != "ray":
        raise click.UsageError("--ray-address needs --executor ray")
    report = run(
        list(inputs),
        out,
        config,
        progress=progress,
        force=force,
        log=lambda m: click.echo(m, err=True),
        executor=executor,
        ray_address=ray_address,
    )
    if fmt == "json":
        click.echo(to_json({k: v for k, v in report.items() if k != "config"}))
        return
    rows = [
        [
            s["name"],
            s["documents_in"],
            s["documents_out"],
            ", ".join(f"{k} {v}" for k, v in s["removed"].items()),
        ]
        for s in report["steps"]
    ]
    click.echo(table(rows, ["step", "in", "out", "removed (reason count)"]))
    if report.get("languages"):
        lang_rows = [[k, v["documents"], v["kept"]] for k, v in report["languages"].items()]
        click.echo("\n" + table(lang_rows, ["language", "documents", "kept"]))
    pii = ", ".join(f"{k} {v}" for k, v in report["pii"].items()) or "off"
    click.echo(f"\nPII redacted: {pii}")
    for name, split in report["splits"].items():
        click.echo(
            f"{name}: {split['documents']} documents, {split['tokens']} tokens in {split['shards']} shard(s)"
        )
    click.echo(f"report: {Path(out) / 'report.html'}")


# --- tokensmith data -------------------------------------------------------------------------------
def _split_dirs(directory: str, split: str) -> list[tuple[str, Path]]:
    from tokensmith.trainer.data.shards import MANIFEST_NAME

    root = Path(directory)
    if (root / MANIFEST_NAME).is_file():
        return [(root.name, root)]
    names = ("train", "valid") if split == "all" else (split,)
    found = [(name, root / name) for name in names if (root / name / MANIFEST_NAME).is_file()]
    if not found:
        raise TokensmithError(
            f"{directory} holds no curated shards (no {MANIFEST_NAME} in it, nor in its train/ or "
            "valid/); run `tokensmith curate INPUT --out DIR` first"
        )
    return found


def _tokenizer_for(shards: Any) -> Any:
    from tokenizers import Tokenizer

    path = shards.tokenizer_path
    if path is None or not path.is_file():
        raise TokensmithError(f"{shards.directory}: its tokenizer file ({path}) is missing; cannot decode")
    return Tokenizer.from_file(str(path))


@click.group(name="data")
def data() -> None:
    """Read curated token shards back (cat, stats)."""


@data.command(name="cat")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["train", "valid", "all"]), default="all", show_default=True)
@click.option("--limit", type=int, default=None, help="Stop after N documents.")
def cat(directory: str, split: str, limit: int | None) -> None:
    """Print the kept documents decoded from the shards, one JSON object {"text": ...} per line."""
    from tokensmith.trainer.data.shards import ShardSet

    printed = 0
    out = sys.stdout
    for _, folder in _split_dirs(directory, split):
        shards = ShardSet.open(folder)
        tokenizer = _tokenizer_for(shards)
        eos = shards.eos_id
        for tokens in shards.documents():
            if limit is not None and printed >= limit:
                return
            ids = tokens.tolist()
            if eos is not None and ids and ids[-1] == eos:
                ids = ids[:-1]
            text = tokenizer.decode(ids, skip_special_tokens=False)
            out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            printed += 1


def _source_name(directory: str) -> str:
    path = Path(directory).resolve()
    return path.parent.name if path.name in ("train", "valid") else path.name


@data.command(name="stats")
@click.argument("directories", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--verify", is_flag=True, help="Also check every file's SHA-256 against the manifest.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the report to this file (atomically).")
@format_option(default="table", choices=("table", "json", "yaml"))
def stats(directories: tuple[str, ...], verify: bool, output: str | None, fmt: str) -> None:
    """Shard, document and token counts per source and split, and per language.

    DIRECTORIES: one `tokensmith curate` output (or split) per source, e.g. the paths of data.sources.
    """
    from tokensmith.trainer.data.shards import ShardSet

    rows: list[dict[str, Any]] = []
    languages: list[dict[str, Any]] = []
    for directory in directories:
        source = _source_name(directory)
        for name, folder in _split_dirs(directory, "all"):
            shards = ShardSet.open(folder, verify=verify)
            rows.append(_stats_row(source, name, shards, verify))
            for language, counts in (shards.manifest.extra.get("languages") or {}).items():
                languages.append({"source": source, "split": name, "language": language, **counts})
    report: dict[str, Any] = {"directories": [str(Path(d)) for d in directories], "splits": rows}
    if len(directories) == 1:
        report["directory"] = str(Path(directories[0]))
    report["languages"] = languages
    if fmt == "json":
        text = to_json(report)
    elif fmt == "yaml":
        text = to_yaml(report)
    else:
        headers = ["source", "split", "shards", "documents", "tokens", "dtype", "vocab_size"]
        text = table([[r[h] for h in headers] for r in rows], headers)
        if languages:
            lang_headers = ["source", "split", "language", "documents", "tokens"]
            text += "\n\n" + table([[r[h] for h in lang_headers] for r in languages], lang_headers)
    if output:
        atomic_write_text(output, text + "\n")
    else:
        click.echo(text)


def _stats_row(source: str, name: str, shards: Any, verify: bool) -> dict[str, Any]:
    return {
        "source": source,
        "split": name,
        "shards": len(shards.shards),
        "documents": shards.num_documents,
        "tokens": shards.num_tokens,
        "dtype": shards.manifest.dtype,
        "vocab_size": shards.vocab_size,
        "eos_id": shards.eos_id,
        "bytes": sum(s.info.bytes for s in shards.shards),
        "verified": verify,
    }
