"""Operator: reconciles LLMTrainingJob resources into gangs of DeepSpeed worker pods."""
