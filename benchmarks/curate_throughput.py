"""Curation throughput (run by hand; numbers go to docs/benchmarks.md, section "Curation").

1. Whole pipeline: `tokensmith curate` (a fresh process, all default steps, 2 tasks on 2 workers) on
   synthetic English prose, in MB of input per second, with each word splitter (spaCy, regex).
2. Tokenization alone: our tokenize stages (datatrove's DocumentTokenizer over the curated JSONL, split
   filter, shard files, manifest with checksums) against calling the `tokenizers` library directly on the
   same texts (`encode_batch`, EOS appended, tokens written as uint16) in the same run. Goal: ratio >= 0.8.

Usage: .venv/bin/python benchmarks/curate_throughput.py [--mb 8] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_corpus(path: Path, megabytes: float) -> int:
    from tokensmith.trainer.data.samples import synthetic_prose

    written, seed = 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < megabytes * 1e6:
            text = synthetic_prose(seed, lines=20)
            handle.write(json.dumps({"id": f"doc-{seed}", "text": text}) + "\n")
            written += len(text.encode())
            seed += 1
    return seed


def run_curate(corpus: Path, out: Path, word_tokenizer: str) -> tuple[float, dict]:
    tokensmith = str(Path(sys.executable).parent / "tokensmith")
    args = [tokensmith, "curate", str(corpus), "--out", str(out), "--vocab-size", "8192"]
    args += [
        "--word-tokenizer",
        word_tokenizer,
        "--tasks",
        "2",
        "--workers",
        "2",
        "--force",
        "--format",
        "json",
    ]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(result.stdout)


def direct_tokenizers(out: Path) -> tuple[float, int]:
    """The peer: read the same curated texts, `Tokenizer.encode_batch`, append EOS, write uint16 tokens."""
    import numpy as np
    from tokenizers import Tokenizer

    started = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    eos = tokenizer.token_to_id("<|endoftext|>")
    texts = []
    for path in sorted((out / ".work" / "final").glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            texts.extend(json.loads(line)["text"] for line in handle)
    total = 0
    with open(out.parent / "direct.bin", "wb") as sink:
        for i in range(0, len(texts), 1000):
            for encoding in tokenizer.encode_batch(texts[i : i + 1000]):
                ids = np.asarray([*encoding.ids, eos], dtype=np.uint16)
                sink.write(ids.tobytes())
                total += ids.size
    return time.perf_counter() - started, total


def ours_tokenization(out: Path, corpus: Path) -> tuple[float, int]:
    """Re-run only our tokenize stages and manifests on the curated output."""
    from tokensmith.trainer.data.config import CurateConfig
    from tokensmith.trainer.data.pipeline import RunContext, run_stage, tokenize_stages, write_manifests
    from tokensmith.trainer.data.steps import quiet_datatrove

    quiet_datatrove(out / ".work" / "datatrove.log")
    stamp = json.loads((out / ".work" / "run.json").read_text())
    config = CurateConfig.model_validate(stamp["config"])
    shutil.rmtree(out / ".work" / "logs" / "tokenize", ignore_errors=True)
    for split in ("train", "valid"):
        shutil.rmtree(out / split, ignore_errors=True)
    ctx = RunContext(out, config, stamp["files"], False, lambda _m: None)
    started = time.perf_counter()
    for stage in tokenize_stages(ctx, out / "tokenizer.json"):
        run_stage(ctx, stage)
    manifests = write_manifests(ctx, out / "tokenizer.json")
    return time.perf_counter() - started, sum(m.num_tokens for m in manifests.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=8.0, help="input size in MB")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--tokenize-scale", type=int, default=1, help="repeat the curated text K times (tokenization part)"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse an earlier pipeline run in --work")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="curate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    docs = make_corpus(corpus, args.mb)
    size = corpus.stat().st_size
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"corpus: {docs} documents, {size / 1e6:.1f} MB JSONL ({args.mb} MB of text)")
    for word_tokenizer in () if args.reuse else ("regex", "spacy"):
        seconds, report = run_curate(corpus, work / f"out-{word_tokenizer}", word_tokenizer)
        print(
            f"whole pipeline ({word_tokenizer} words): {seconds:.1f} s, {size / 1e6 / seconds:.2f} MB/s, "
            f"{report['documents_out']}/{report['documents_in']} documents kept, "
            f"{report['tokens_out']} tokens; stages {report['stage_seconds']}"
        )
    out = work / "out-regex"
    if args.tokenize_scale > 1:
        scale_final(out, args.tokenize_scale)
    peer_s, peer_tokens = direct_tokenizers(out)
    ours_s, ours_tokens = ours_tokenization(out, corpus)
    text_mb = sum(len(t.encode()) for t in _texts(out)) / 1e6
    rows = (("tokenizers directly", peer_s, peer_tokens), ("tokensmith", ours_s, ours_tokens))
    for name, seconds, tokens in rows:
        print(f"tokenization, {name}: {seconds:.2f} s, {text_mb / seconds:.2f} MB/s, {tokens} tokens")
    print(f"ratio (ours / direct throughput): {peer_s / ours_s:.2f}  (goal >= 0.8)")


def scale_final(out: Path, times: int) -> None:
    """Repeat the curated documents (new ids) so fixed stage costs weigh less in the tokenization ratio."""
    for path in sorted((out / ".work" / "final").glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        base = [r for r in records if "#copy" not in str(r["id"])]
        scaled = [{**r, "id": f"{r['id']}#copy{k}"} if k else r for k in range(times) for r in base]
        path.write_text("".join(json.dumps(r) + "\n" for r in scaled), encoding="utf-8")


def _texts(out: Path) -> list[str]:
    texts: list[str] = []
    for path in sorted((out / ".work" / "final").glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            texts.extend(json.loads(line)["text"] for line in handle)
    return texts


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
