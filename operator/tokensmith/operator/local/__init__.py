"""The local runner: executes an LLMTrainingJob on one machine with the operator's own decisions."""
