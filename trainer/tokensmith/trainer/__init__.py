"""Trainer: data curation, DeepSpeed pretraining loop, checkpoints, export."""
