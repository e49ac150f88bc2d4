"""The vocabulary-parallel token table, also used as the tied output head (DeepSpeed's
`VocabParallelEmbedding` plus the head's two collectives: Megatron's f before the local logits, a
gather of the V / TP logit slices after)."""

from __future__ import annotations

from deepspeed.module_inject.layers import (
    ColumnParallel,
    GatherFromTensorParallelRegion,
    VocabParallelEmbedding,
)
from torch import Tensor
from torch.nn import functional as F


class TiedVocabParallelEmbedding(VocabParallelEmbedding):
    def logits(self, x: Tensor) -> Tensor:
        """Full-vocabulary logits x W^T from this rank's rows of W (collective over the TP group)."""
        if not self.is_tp_parallel:
            return F.linear(x, self.weight)
        x = ColumnParallel.apply(self.mp_group, x)
        local = F.linear(x, self.weight)
        out: Tensor = GatherFromTensorParallelRegion.apply(self.mp_group, local, self._partition_sizes)
        return out
