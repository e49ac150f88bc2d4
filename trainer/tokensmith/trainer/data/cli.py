"""`tokensmith curate` and `tokensmith data`."""

from tokensmith.core.errors import placeholder_command

curate = placeholder_command("curate", "Filter, de-duplicate, redact and tokenize raw text.")
data = placeholder_command("data", "Inspect curated token shards (cat, stats).")
