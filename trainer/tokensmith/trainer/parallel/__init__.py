"""Tensor and pipeline parallelism for `tokensmith train`, on DeepSpeed.

The layouts themselves (which combinations run, the rank order) are `tokensmith.planner.capability`;
this package realises them:

- `groups`: the process grid (DeepSpeed's `PipeModelDataParallelTopology`, axes pipe, data, model),
- `tensor`: Megatron-style tensor parallelism of attention and MLP with DeepSpeed's AutoTP layers,
- `vocab`: the vocabulary-parallel token table that is also the tied output head,
- `pipeline`: the model as a DeepSpeed `PipelineModule` (1F1B) with compute-balanced stages,
- `portable`: a layout-free copy of the training state, so a checkpoint resumes under any layout,
- `engine`: builds the DeepSpeed engine of a layout from the canonical `Transformer`,
- `accounting`: model-state bytes per rank, measured and expected (the planner's formula per precision).
"""
