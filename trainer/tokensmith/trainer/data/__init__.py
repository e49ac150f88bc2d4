"""Data curation (`tokensmith curate`) and the token-shard format the trainer reads."""
