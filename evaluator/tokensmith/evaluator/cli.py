"""`tokensmith eval`."""

from tokensmith.core.errors import placeholder_command

eval_ = placeholder_command("eval", "Score a checkpoint on benchmarks and perplexity.")
