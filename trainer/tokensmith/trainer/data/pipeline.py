"""`tokensmith curate` as datatrove stages run by `LocalPipelineExecutor` (the imperative shell).

Stages, each a datatrove executor with its own logging folder (so completed tasks are skipped when a
run is resumed), over the work folder `OUT/.work/`:

1. `filter` (T tasks): read -> normalize -> language ID -> Gopher repetition -> Gopher quality -> C4 ->
   FineWeb,
   writing `filtered/{rank}.jsonl` while hashing each document for exact dedup (or MinHash).
2. `exact_find` (1 task) and `exact_filter` (T tasks): drop exact copies, sign the rest for MinHash.
3. `near_buckets` (one task per band), `near_cluster` (1 task): MinHash LSH pairs and clusters.
4. `finalize` (T tasks): drop near duplicates, redact PII, write `final/{rank}.jsonl`.
5. tokenizer: train a byte-level BPE on the train split (or load `--tokenizer`).
6. `tokenize` (T tasks): each rank tokenizes its documents once into its `OUT/train` and `OUT/valid`
   shard (datatrove's `TokenizedFile`); then each split's `shards.json` is written (last, atomically).

Ranks are how the same stages spread over a Kubernetes Indexed Job: one rank per completion index.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokensmith.core.errors import TokensmithError
from tokensmith.core.io import atomic_write_text
from tokensmith.trainer.data.config import CurateConfig
from tokensmith.trainer.data.context import SPLITS, TOKENIZER_FILE, WORK, RunContext, Stage


# --- inputs ----------------------------------------------------------------------------------------
def resolve_inputs(inputs: Sequence[str]) -> list[str]:
    """Expand files, directories (recursively) and globs, local or fsspec URLs, into a sorted file list."""
    if not inputs:
        raise TokensmithError("no INPUT given: pass files, directories or globs (JSONL, .txt, Parquet)")
    files: list[str] = []
    for item in inputs:
        found = (
            _expand_remote(item) if "://" in item and not item.startswith("file://") else _expand_local(item)
        )
        if not found:
            raise TokensmithError(f"input {item} holds no files: check the path")
        files.extend(found)
    return sorted(dict.fromkeys(files))


def _expand_local(item: str) -> list[str]:
    text = item.removeprefix("file://")
    if glob.has_magic(text):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise TokensmithError(f"input {item}: no file matches this pattern")
        return [str(Path(m).absolute()) for m in matches if Path(m).is_file()]
    path = Path(text)
    if path.is_dir():
        return [
            str(p.absolute())
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
    if path.is_file():
        return [str(path.absolute())]
    raise TokensmithError(f"input {item} does not exist: check the path")


def _expand_remote(item: str) -> list[str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(item)
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        if glob.has_magic(path):
            paths = sorted(fs.glob(path))
        elif fs.isdir(path):
            paths = sorted(fs.find(path))
        elif fs.exists(path):
            paths = [path]
        else:
            raise TokensmithError(f"input {item} does not exist: check the URL")
    except TokensmithError:
        raise
    except Exception as err:  # fsspec raises many kinds (missing backend, credentials, network)
        raise TokensmithError(f"input {item}: cannot list it ({type(err).__name__}: {err})") from err
    return [p if "://" in p else f"{protocol}://{p}" for p in paths]


# --- fingerprint / resume --------------------------------------------------------------------------
def _fingerprint(config: CurateConfig, files: Sequence[str]) -> dict[str, Any]:
    return {"config": config.model_dump(mode="json"), "files": list(files)}


def prepare_out_dir(out: Path, config: CurateConfig, files: Sequence[str], force: bool) -> bool:
    """Create OUT; return True when an earlier run with the same inputs and options is being resumed."""
    work = out / WORK
    stamp = work / "run.json"
    wanted = _fingerprint(config, files)
    if force and out.exists():
        for name in (WORK, *SPLITS, TOKENIZER_FILE, "report.json", "report.html"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if stamp.is_file():
        if json.loads(stamp.read_text(encoding="utf-8")) != wanted:
            raise TokensmithError(
                f"{out} holds a curation run with other inputs or options: pass --force to start over, "
                "or choose another --out"
            )
        return True
    if out.exists() and any(p.name != WORK for p in out.iterdir()):
        raise TokensmithError(f"{out} exists and is not a tokensmith curate output: choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(wanted, indent=1))
    return False


# --- stages ----------------------------------------------------------------------------------------
def _quality_steps(config: CurateConfig) -> list[Any]:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from tokensmith.trainer.data.steps import LanguageFilter, UnicodeNormalizer, word_tokenizer

    language = word_tokenizer(config.word_tokenizer)
    steps: list[Any] = []
    if config.normalize.enabled:
        n = config.normalize
        steps.append(UnicodeNormalizer(n.form, n.newlines, n.strip_control))
    if config.language.enabled:
        steps.append(LanguageFilter(config.language.languages, config.language.threshold))
    if config.gopher_repetition.enabled:
        steps.append(
            GopherRepetitionFilter(
                **config.gopher_repetition.model_dump(exclude={"enabled"}), language=language
            )
        )
    if config.gopher_quality.enabled:
        steps.append(
            GopherQualityFilter(**config.gopher_quality.model_dump(exclude={"enabled"}), language=language)
        )
    if config.c4.enabled:
        steps.append(C4QualityFilter(**config.c4.model_dump(exclude={"enabled"}), language=language))
    if config.fineweb.enabled:
        steps.append(
            FineWebQualityFilter(**config.fineweb.model_dump(exclude={"enabled"}), language=language)
        )
    return steps


def minhash_config(config: CurateConfig) -> Any:
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    bands, rows = config.near_dedup.lsh()
    # datatrove's default 64-bit xxhash; our signature step hashes shingles as bytes (see steps.py).
    return MinhashConfig(
        n_grams=config.near_dedup.n_grams,
        num_buckets=bands,
        hashes_per_bucket=rows,
        seed=config.near_dedup.seed,
    )


def _sink(ctx: RunContext, folder: str, sign_exact: bool, sign_near: bool) -> Any:
    """The last step of a stage: write its documents, hashing them for the next dedup stage if any."""
    from datatrove.pipeline.writers import JsonlWriter

    from tokensmith.trainer.data.steps import ExactSignatureTee, MinhashSignatureTee, word_tokenizer

    writer = JsonlWriter(str(ctx.work / folder), compression=None)
    if sign_exact:
        return ExactSignatureTee(str(ctx.work / "exact_sigs"), writer)
    if sign_near:
        language = word_tokenizer(ctx.config.word_tokenizer)
        return MinhashSignatureTee(
            str(ctx.work / "minhash_sigs"), minhash_config(ctx.config), writer, language
        )
    return writer


def build_stages(ctx: RunContext) -> list[Stage]:
    """The curation stages up to `final/` (tokenization comes after the tokenizer exists)."""
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactFindDedups

    from tokensmith.trainer.data.steps import InputReader, PIIRedactor, RankJsonlReader, document_bytes

    cfg, work, tasks = ctx.config, ctx.work, ctx.config.tasks
    exact, near = cfg.exact_dedup.enabled, cfg.near_dedup.enabled
    reader = InputReader(
        ctx.files,
        errors_folder=str(work / "bad_lines"),
        text_key=cfg.text_key,
        encoding_errors=cfg.encoding_errors,
        max_bad_locations=cfg.max_bad_line_locations,
        progress=ctx.progress,
    )
    stages = [Stage("filter", [reader, *_quality_steps(cfg), _sink(ctx, "filtered", exact, near)], tasks)]
    last = "filtered"
    if exact:
        exact_config = ExactDedupConfig(content_getter=document_bytes)
        stages.append(
            Stage(
                "exact_find",
                [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), exact_config)],
                1,
            )
        )
        stages.append(
            Stage(
                "exact_filter",
                [
                    RankJsonlReader(str(work / last), compression=None),
                    ExactDedupFilter(str(work / "exact_dups"), exact_config),
                    _sink(ctx, "exact_deduped", False, near),
                ],
                tasks,
            )
        )
        last = "exact_deduped"
    finalize: list[Any] = [RankJsonlReader(str(work / last), compression=None)]
    if near:
        mh = minhash_config(cfg)
        stages.append(
            Stage(
                "near_buckets",
                [MinhashDedupBuckets(str(work / "minhash_sigs"), str(work / "minhash_buckets"), config=mh)],
                mh.num_buckets,
            )
        )
        stages.append(
            Stage(
                "near_cluster",
                [
                    MinhashDedupCluster(
                        str(work / "minhash_buckets"),
                        str(work / "minhash_clusters"),
                        config=mh,
                        save_cluster_size=True,
                    )
                ],
                1,
            )
        )
        finalize.append(MinhashDedupFilter(str(work / "minhash_clusters")))
    if cfg.pii.enabled:
        finalize.append(PIIRedactor(cfg.pii.kinds, cfg.pii.public_ips_only))
    from datatrove.pipeline.writers import JsonlWriter

    finalize.append(JsonlWriter(str(work / "final"), compression=None))
    stages.append(Stage("finalize", finalize, tasks))
    return stages


def _warm_word_tokenizer(config: CurateConfig) -> None:
    """Load datatrove's English word tokenizer (spaCy, seconds) once here; forked tasks inherit it."""
    needs = ("gopher_repetition", "gopher_quality", "c4", "fineweb", "near_dedup")
    if config.word_tokenizer == "spacy" and any(getattr(config, name).enabled for name in needs):
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        load_word_tokenizer("en").word_tokenize("warm up")


def run_stage(ctx: RunContext, stage: Stage) -> None:
    """Run a stage's incomplete tasks on the run's executor (local or Ray; see executors.py)."""
    from tokensmith.trainer.data.executors import make_executor, run_executor

    executor = make_executor(ctx, stage)
    pending = len(executor.get_incomplete_ranks())
    if pending == 0:
        ctx.log(f"  {stage.name}: done earlier, skipped")
        return
    started = time.perf_counter()
    ctx.log(f"  {stage.name}: {pending}/{stage.tasks} task(s)" + (" on Ray" if ctx.executor == "ray" else ""))
    run_executor(ctx, stage, executor)
    ctx.timings[stage.name] = ctx.timings.get(stage.name, 0.0) + time.perf_counter() - started


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)


def _count_lines(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.jsonl"):
        with open(path, "rb") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def _check_encoding(ctx: RunContext) -> None:
    """strict mode: a non-UTF-8 input stops the run (and its work folder, so a fixed file is re-read)."""
    from tokensmith.trainer.data.report import bad_line_locations

    bad = [b for b in bad_line_locations(ctx.work / "bad_lines", 10**6) if b.get("encoding")]
    if bad:
        shutil.rmtree(ctx.work, ignore_errors=True)
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        raise TokensmithError(f"{bad[0]['error']}{more}")


# --- tokenizer -------------------------------------------------------------------------------------
def iter_jsonl_texts(
    folder: Path, valid_fraction: float, seed: int, split: str | None = "train"
) -> Iterator[str]:
    from tokensmith.trainer.data.steps import split_of

    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if split is None or split_of(str(record["id"]), valid_fraction, seed) == split:
                    yield record["text"]


def train_tokenizer(
    texts: Iterator[str], vocab_size: int, min_frequency: int, eos: str, progress: bool
) -> Any:
    """A byte-level BPE (Radford et al., 2019, GPT-2 sec. 2.2): no unknown token, exact round trip."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def check_tokenizer_file(path: str, eos_token: str) -> None:
    """A given tokenizer must load and know the end-of-document token (checked before any stage runs)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as err:
        raise TokensmithError(f"--tokenizer {path} is not a tokenizers JSON file ({err})") from err
    if tokenizer.token_to_id(eos_token) is None:
        raise TokensmithError(
            f"tokenizer {path} has no {eos_token!r} token: pass --eos-token with one it has"
        )


def ensure_tokenizer(ctx: RunContext) -> Path:
    """OUT/tokenizer.json: the given file, or a BPE trained on the curated train split (once)."""

    cfg = ctx.config.tokenizer
    target = ctx.out / TOKENIZER_FILE
    if target.is_file():
        return target
    if cfg.path:
        check_tokenizer_file(cfg.path, cfg.eos_token)
        shutil.copyfile(cfg.path, ctx.work / TOKENIZER_FILE)
    else:
        started = time.perf_counter()
        ctx.log(f"  tokenizer: training a byte-level BPE with {cfg.vocab_size} entries")
        texts = iter_jsonl_texts(ctx.work / "final", ctx.config.valid_fraction, ctx.config.split_seed)
        tokenizer = train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, cfg.eos_token, ctx.progress)
        tokenizer.save(str(ctx.work / TOKENIZER_FILE))
        ctx.timings["tokenizer"] = time.perf_counter() - started
    os.replace(ctx.work / TOKENIZER_FILE, target)
    return target


def tokenize_stages(ctx: RunContext, tokenizer_path: Path) -> list[Stage]:
    """One stage: each rank tokenizes its curated documents into its train and valid shards."""
    from tokensmith.trainer.data.steps import RankJsonlReader, SplitDocumentTokenizer

    tokenizer = SplitDocumentTokenizer(
        str(ctx.out),
        str(tokenizer_path),
        ctx.config.tokenizer.eos_token,
        ctx.config.valid_fraction,
        ctx.config.split_seed,
    )
    reader = RankJsonlReader(str(ctx.work / "final"), compression=None)
    return [Stage("tokenize", [reader, tokenizer], ctx.config.tasks)]


def write_manifests(ctx: RunContext, tokenizer_path: Path) -> dict[str, Any]:
    from tokenizers import Tokenizer

    from tokensmith.trainer.data.report import stage_stats
    from tokensmith.trainer.data.shards import write_manifest, write_shards

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    vocab = tokenizer.get_vocab_size()
    eos_id = tokenizer.token_to_id(ctx.config.tokenizer.eos_token)
    tokenize_stats = stage_stats(ctx.work / "logs", "tokenize")
    counters = tokenize_stats[1] if len(tokenize_stats) > 1 else {}
    manifests = {}
    for split in SPLITS:
        folder = ctx.out / split
        folder.mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in folder.glob("*.ds") if p.stat().st_size > 0)
        extra: dict[str, Any] = {
            "valid_fraction": ctx.config.valid_fraction,
            "split_seed": ctx.config.split_seed,
        }
        languages = split_languages(counters, split)
        if languages:
            extra["languages"] = languages
        if names:
            manifest = write_manifest(
                folder, names, vocab, eos_id, None, f"../{TOKENIZER_FILE}", split, extra
            )
        else:  # an empty split is still a complete, readable split
            manifest = write_shards(
                folder,
                [],
                vocab,
                eos_id,
                tokenizer=f"../{TOKENIZER_FILE}",
                split=split,
                prefix=f"{split}_empty",
            )
        manifests[split] = manifest
    return manifests


def split_languages(counters: dict[str, float], split: str) -> dict[str, dict[str, int]]:
    """{language: {documents, tokens}} of one split from the tokenize stage's counters."""
    prefix = f"lang_{split}_documents_"
    found = {
        key.removeprefix(prefix): {
            "documents": int(value),
            "tokens": int(counters.get(f"lang_{split}_tokens_{key.removeprefix(prefix)}", 0)),
        }
        for key, value in counters.items()
        if key.startswith(prefix)
    }
    return dict(sorted(found.items(), key=lambda kv: (-kv[1]["tokens"], kv[0])))


# --- the whole run ---------------------------------------------------------------------------------
def curate(
    inputs: Sequence[str],
    out: str | os.PathLike[str],
    config: CurateConfig | None = None,
    *,
    progress: bool | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run every stage (skipping completed ones) and return the report (also in OUT/report.json).

    `executor`: "local" (forked processes) or "ray" (datatrove's Ray executor on the cluster at
    `ray_address`, else RAY_ADDRESS, else a private local Ray with `config.workers` CPUs). Either one
    resumes what the other started: completed tasks are skipped."""
    from tokensmith.trainer.data.executors import EXECUTORS, ray_session

    if executor not in EXECUTORS:
        raise TokensmithError(f"unknown executor {executor!r}: choose {' or '.join(EXECUTORS)}")
    if executor == "ray":
        config = config or CurateConfig()
        with ray_session(ray_address, config.workers):
            return _curate(inputs, out, config, progress, force, log, executor)
    return _curate(inputs, out, config, progress, force, log, executor)


def _curate(
    inputs: Sequence[str],
    out: str | os.PathLike[str],
    config: CurateConfig | None,
    progress: bool | None,
    force: bool,
    log: Callable[[str], None] | None,
    executor: str,
) -> dict[str, Any]:
    show = progress if progress is not None else sys.stderr.isatty()
    if not show and "tqdm" not in sys.modules:
        os.environ["TQDM_DISABLE"] = "1"  # datatrove's own bars (dedup stages) only on a terminal
    from tokensmith.trainer.data.report import build_report, write_report
    from tokensmith.trainer.data.steps import quiet_datatrove

    config = config or CurateConfig()
    out_dir = Path(out).resolve()
    # An --out inside an input directory must not read its own shards back as text.
    files = [f for f in resolve_inputs(list(inputs)) if "://" in f or not _inside(Path(f), out_dir)]
    if not files:
        raise TokensmithError(f"no input file outside --out {out_dir}: check the INPUT paths")
    if config.tokenizer.path:
        check_tokenizer_file(config.tokenizer.path, config.tokenizer.eos_token)
    resumed = prepare_out_dir(out_dir, config, files, force)
    ctx = RunContext(out_dir, config, files, show, log or (lambda _msg: None), executor=executor)
    quiet_datatrove(ctx.work / "datatrove.log")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the stages fork: keep tokenizers serial
    ctx.log(f"curating {len(files)} file(s) into {out_dir}" + (" (resuming)" if resumed else ""))
    started = time.perf_counter()
    _warm_word_tokenizer(config)
    for stage in build_stages(ctx):
        run_stage(ctx, stage)
        if stage.name == "filter":
            _check_encoding(ctx)
    kept = _count_lines(ctx.work / "final")
    if kept == 0:
        report = build_report(ctx, manifests=None, seconds=time.perf_counter() - started)
        write_report(out_dir, report)
        raise TokensmithError(
            "no document is left: the input is empty or every document was removed "
            f"(see {out_dir / 'report.json'}); check the input or switch steps off with --skip"
        )
    tokenizer_path = ensure_tokenizer(ctx)
    for stage in tokenize_stages(ctx, tokenizer_path):
        run_stage(ctx, stage)
    manifests = write_manifests(ctx, tokenizer_path)
    report = build_report(ctx, manifests=manifests, seconds=time.perf_counter() - started)
    write_report(out_dir, report)
    return report
