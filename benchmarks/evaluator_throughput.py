"""Evaluator throughput (run by hand; numbers go to docs/benchmarks.md, section "Evaluator").

Items per second of the `tokensmith` lm-eval model class (what `tokensmith eval` runs) against
lm-evaluation-harness' own `hf` model class (`HFLM`), in the same run, on the same model: a Tokensmith
checkpoint and its Hugging Face export (`tokensmith export`, Llama layout), the same bundled tasks with
their default (Open LLM Leaderboard) few-shot counts, the same limit, batch size and seed, on CPU.
Only `simple_evaluate` is timed (model loading is not); each backend runs `--repeats` times,
alternating, and the best run counts. Both must give the same accuracies (same weights, same prompts).

Goal: ratio (tokensmith / hf) >= 1.0.

Usage: .venv/bin/python benchmarks/evaluator_throughput.py [--limit 24] [--batch-size 16] [--repeats 2]
       [--d-model 256 --layers 4 --seq-len 512 --vocab 8192]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

TASKS = ["arc_easy_local", "arc_challenge_local", "hellaswag_local", "mmlu_local", "truthfulqa_mc1_local"]


def make_model(work: Path, d_model: int, layers: int, seq_len: int, vocab: int) -> tuple[Path, Path]:
    """A randomly initialised Tokensmith checkpoint (with a BPE tokenizer trained on pydoc text) and its
    Hugging Face export. Throughput does not depend on whether the weights were trained."""
    import pydoc_data.topics as topics

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tokensmith.trainer.checkpoint import write_model_checkpoint
    from tokensmith.trainer.config import TrainerConfig
    from tokensmith.trainer.export import export_checkpoint
    from tokensmith.trainer.model import Transformer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        list(topics.topics.values()),
        trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok_path = work / "tokenizer.json"
    tok.save(str(tok_path))
    cfg = TrainerConfig.model_validate(
        {
            "model": {
                "n_layers": layers,
                "d_model": d_model,
                "n_heads": max(1, d_model // 64),
                "vocab_size": tok.get_vocab_size(),
                "seq_len": seq_len,
            },
            "train": {"micro_batch": 1, "global_batch_tokens": seq_len},
        }
    )
    torch.manual_seed(0)
    ckpt = write_model_checkpoint(work / "ckpt", Transformer(cfg.model), cfg, step=1, tokenizer=tok_path)
    hf = work / "hf"
    export_checkpoint(ckpt, hf)
    return ckpt, hf


def timed_run(lm: Any, limit: int, seed: int) -> tuple[float, float, int, dict[str, float]]:
    """(wall s, CPU s of this process, items, acc per task) of one `simple_evaluate` over TASKS."""
    from tokensmith.evaluator import harness

    manager = harness.prepare(TASKS)
    start, cpu = time.perf_counter(), time.process_time()
    results = harness.evaluate(lm, TASKS, num_fewshot=None, limit=limit, manager=manager, seed=seed)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    items = sum(int(results["n-samples"][t]["effective"]) for t in TASKS)
    accs = {t: float(results["results"][t]["acc,none"]) for t in TASKS}
    return elapsed, cpu, items, accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=24, help="items per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    from tokensmith.evaluator.harness import quiet_libraries
    from tokensmith.evaluator.lm import TokensmithLM

    quiet_libraries(verbose=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="ts-eval-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, hf = make_model(work, args.d_model, args.layers, args.seq_len, args.vocab)

    ours = TokensmithLM(checkpoint=str(ckpt), batch_size=args.batch_size, device="cpu")
    theirs = HFLM(pretrained=str(hf), batch_size=args.batch_size, device="cpu", dtype="float32")
    backends = (("tokensmith", ours), ("hf", theirs))
    for _, lm in backends:  # warm-up: dataset caches, first-call allocations
        timed_run(lm, 2, seed=0)
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    accs: dict[str, dict[str, float]] = {}
    items = 0
    for r in range(args.repeats):
        for name, lm in backends if r % 2 == 0 else reversed(backends):
            elapsed, cpu, items, accs[name] = timed_run(lm, args.limit, seed=0)
            best[name] = min(best.get(name, float("inf")), elapsed)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu)
            print(
                f"run {r + 1} {name:10s} {elapsed:7.2f} s wall {cpu:7.2f} s cpu  "
                f"{items / elapsed:7.2f} items/s",
                flush=True,
            )

    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"lm-eval {lm_eval.__version__}, torch {torch.__version__}"
    )
    print(
        f"model: {args.layers} layers, d_model {args.d_model}, seq_len {args.seq_len}, "
        f"vocab {args.vocab}; tasks {', '.join(TASKS)} (default few-shot), limit {args.limit}, "
        f"batch {args.batch_size}"
    )
    same = accs["tokensmith"] == accs["hf"]
    print(f"accuracies identical across backends: {same}  {accs['tokensmith']}")
    if not same:
        print(f"  hf: {accs['hf']}")
    for name in ("tokensmith", "hf"):
        print(
            f"{name:10s} best {best[name]:7.2f} s wall  {items / best[name]:7.2f} items/s; "
            f"{best_cpu[name]:7.2f} s cpu  {items / best_cpu[name]:7.2f} items per cpu-s"
        )
    print(f"ratio tokensmith / hf, items/s (wall): {best['hf'] / best['tokensmith']:.2f}")
    print(f"ratio tokensmith / hf, items per CPU second: {best_cpu['hf'] / best_cpu['tokensmith']:.2f}")


if __name__ == "__main__":
    main()
