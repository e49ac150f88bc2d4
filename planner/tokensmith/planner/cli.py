"""`tokensmith plan`."""

from tokensmith.core.errors import placeholder_command

plan = placeholder_command("plan", "Pick model size, tokens and cluster shape from scaling laws.")
