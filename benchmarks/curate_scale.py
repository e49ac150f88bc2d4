"""Curation at scale (run by hand; numbers go to docs/benchmarks.md, section "Curation on Ray").

1. The whole default pipeline (normalize, language ID, Gopher repetition and quality, C4, FineWeb,
   exact dedup, MinHash, PII, BPE training, tokenization; regex word splitter for both) two ways on the
   same input in the same run, each timed as a fresh process (start-up and imports included), alternated:
   `tokensmith curate` (local executor; its report and checksummed manifests included) and the same
   datatrove steps composed directly with datatrove's `LocalPipelineExecutor`, readers and writers, as
   a datatrove user writes them (no Tokensmith layer: no tee'd writers, rank-exact readers, reports,
   manifests or resume checks). Goal: ours / direct throughput >= 0.9.
2. `tokensmith curate --executor ray` on a private local Ray with 1 and 2 CPUs against the local
   executor with 1 and 2 workers (scaling, and Ray's overhead at equal cores).

Usage: .venv/bin/python benchmarks/curate_scale.py [--mb 4] [--files 4] [--work DIR] [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = 2


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and their waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_corpus(folder: Path, megabytes: float, files: int) -> int:
    """Synthetic English prose (passes every default rule) in `files` JSONL files (datatrove shards by
    file, so one file would leave all but one task idle)."""
    from tokensmith.trainer.data.samples import synthetic_prose

    folder.mkdir(parents=True, exist_ok=True)
    parts: list[list[str]] = [[] for _ in range(files)]
    written, seed = 0, 0
    while written < megabytes * 1e6:
        text = synthetic_prose(seed, lines=20)
        parts[seed % files].append(json.dumps({"id": f"doc-{seed}", "text": text}) + "\n")
        written += len(text.encode())
        seed += 1
    for i, lines in enumerate(parts):
        (folder / f"part-{i}.jsonl").write_text("".join(lines), encoding="utf-8")
    return seed


def ours(corpus: Path, out: Path, workers: int, executor: str = "local") -> tuple[float, dict, float]:
    tokensmith = str(Path(sys.executable).parent / "tokensmith")
    args = [tokensmith, "curate", str(corpus), "--out", str(out), "--vocab-size", "8192", "--word-tokenizer"]
    args += ["regex", "--tasks", str(TASKS), "--workers", str(workers), "--executor", executor]
    args += ["--force", "--no-progress", "--format", "json"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return seconds, json.loads(done.stdout), cpu


def direct(corpus: Path, work: Path, workers: int) -> tuple[float, int]:
    """The same steps composed with datatrove's own executor, readers and writers."""
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter

    from tokensmith.trainer.data.config import CurateConfig
    from tokensmith.trainer.data.pipeline import minhash_config, train_tokenizer
    from tokensmith.trainer.data.steps import (
        LanguageFilter,
        MinhashSignatureTee,
        PIIRedactor,
        QuietLocalExecutor,
        RegexWordTokenizer,
        UnicodeNormalizer,
        document_bytes,
        quiet_datatrove,
    )

    class Signatures(MinhashDedupSignature):
        # datatrove 0.10's MinHash signatures hand str to xxhash, which wants bytes: the one-line fix
        # a datatrove user needs too (ours, in MinhashSignatureTee).
        get_shingles = MinhashSignatureTee.get_shingles

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    quiet_datatrove(work / "datatrove.log")
    cfg = CurateConfig(word_tokenizer="regex")
    words = RegexWordTokenizer()
    exact = ExactDedupConfig(content_getter=document_bytes)
    mh = minhash_config(cfg)

    def run(name: str, pipeline: list, tasks: int = TASKS) -> None:
        # datatrove's LocalPipelineExecutor; the Quiet subclass only keeps its INFO logs off stderr (in
        # both runs), it changes nothing else.
        QuietLocalExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(workers, tasks),
            logging_dir=str(work / "logs" / name),
            start_method="fork",
        ).run()

    def read(folder: str) -> JsonlReader:
        return JsonlReader(str(work / folder), compression=None)

    started = time.perf_counter()
    run(
        "filter",
        [
            JsonlReader(str(corpus), compression=None),
            UnicodeNormalizer(),
            LanguageFilter(["en"], 0.65),
            GopherRepetitionFilter(**cfg.gopher_repetition.model_dump(exclude={"enabled"}), language=words),
            GopherQualityFilter(**cfg.gopher_quality.model_dump(exclude={"enabled"}), language=words),
            C4QualityFilter(**cfg.c4.model_dump(exclude={"enabled"}), language=words),
            FineWebQualityFilter(**cfg.fineweb.model_dump(exclude={"enabled"}), language=words),
            JsonlWriter(str(work / "filtered"), compression=None),
        ],
    )
    run("exact_sig", [read("filtered"), ExactDedupSignature(str(work / "exact_sigs"), exact)])
    run("exact_find", [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), exact)], 1)
    run(
        "exact_filter",
        [
            read("filtered"),
            ExactDedupFilter(str(work / "exact_dups"), exact),
            JsonlWriter(str(work / "exact"), compression=None),
        ],
    )
    run("mh_sig", [read("exact"), Signatures(str(work / "mh_sigs"), mh, language=words)])
    run(
        "mh_buckets",
        [MinhashDedupBuckets(str(work / "mh_sigs"), str(work / "mh_buckets"), config=mh)],
        mh.num_buckets,
    )
    run(
        "mh_cluster", [MinhashDedupCluster(str(work / "mh_buckets"), str(work / "mh_clusters"), config=mh)], 1
    )
    run(
        "finalize",
        [
            read("exact"),
            MinhashDedupFilter(str(work / "mh_clusters")),
            PIIRedactor(),
            JsonlWriter(str(work / "final"), compression=None),
        ],
    )
    texts = (
        json.loads(line)["text"]
        for path in sorted((work / "final").glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    )
    train_tokenizer(texts, 8192, 2, "<|endoftext|>", False).save(str(work / "tokenizer.json"))
    run(
        "tokenize",
        [
            read("final"),
            DocumentTokenizer(
                str(work / "tokens"),
                str(work / "tokenizer.json"),
                eos_token="<|endoftext|>",
                shuffle_documents=False,
            ),
        ],
    )
    seconds = time.perf_counter() - started
    kept = sum(len(p.read_text().splitlines()) for p in (work / "final").glob("*.jsonl"))
    return seconds, kept


def direct_process(corpus: Path, work: Path, workers: int) -> tuple[float, int, float]:
    """`direct` in a fresh interpreter, timed from outside like `ours` (start-up and imports included)."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); from curate_scale import direct; "
        "from pathlib import Path; a = sys.argv; "
        "print(json.dumps(direct(Path(a[2]), Path(a[3]), int(a[4]))))"
    )
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(corpus), str(work), str(workers)],
        capture_output=True,
        text=True,
    )
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return seconds, json.loads(done.stdout.splitlines()[-1])[1], cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="alternate ours/direct this many times")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="curate-scale-"))
    corpus = work / "corpus"
    docs = make_corpus(corpus, args.mb, args.files)
    size = sum(p.stat().st_size for p in corpus.iterdir())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}")
    print(f"corpus: {docs} documents, {size / 1e6:.1f} MB JSONL in {args.files} files")
    # Wall time swings several-fold on a shared machine; CPU seconds of the whole process tree are the
    # steadier measure of the work each way does (throughput per CPU-second), wall time is shown too.
    best_ours = best_direct = best_ours_cpu = best_direct_cpu = float("inf")
    for _ in range(args.repeat):
        ours_s, report, ours_cpu = ours(corpus, work / "ours", 2)
        direct_s, kept, direct_cpu = direct_process(corpus, work / "direct", 2)
        best_ours, best_direct = min(best_ours, ours_s), min(best_direct, direct_s)
        best_ours_cpu, best_direct_cpu = min(best_ours_cpu, ours_cpu), min(best_direct_cpu, direct_cpu)
        print(
            f"ours (local, 2 workers): {ours_s:.1f} s wall, {ours_cpu:.1f} CPU-s, "
            f"{report['documents_out']} kept; datatrove direct: {direct_s:.1f} s wall, "
            f"{direct_cpu:.1f} CPU-s, {kept} kept",
            flush=True,
        )
    print(
        f"ratio ours / direct, best of {args.repeat}: per CPU-second {best_direct_cpu / best_ours_cpu:.2f}, "
        f"wall {best_direct / best_ours:.2f} (goal >= 0.9)"
    )
    print(f"load after: {os.getloadavg()}")
    if args.skip_ray:
        return
    for executor in ("local", "ray"):
        for workers in (1, 2):
            seconds, report, _ = ours(corpus, work / f"{executor}-{workers}", workers, executor)
            print(
                f"{executor}, {workers} CPU(s): {seconds:.1f} s, {size / 1e6 / seconds:.3f} MB/s; "
                f"stages {report['stage_seconds']}",
                flush=True,
            )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
