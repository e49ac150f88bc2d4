"""`tokensmith run JOB.yaml --local`."""

from tokensmith.core.errors import placeholder_command

run = placeholder_command("run", "Run an LLMTrainingJob manifest (--local: on this machine).")
