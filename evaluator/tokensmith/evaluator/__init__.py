"""Evaluator: multiple-choice benchmarks and perplexity through lm-evaluation-harness."""
