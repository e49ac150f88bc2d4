"""`tokensmith train` and `tokensmith export`."""

from tokensmith.core.errors import placeholder_command

train = placeholder_command("train", "Train a decoder-only transformer with DeepSpeed.")
export = placeholder_command("export", "Export a checkpoint as a Hugging Face model.")
