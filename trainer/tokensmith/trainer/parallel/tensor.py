"""Tensor parallelism (Shoeybi et al. 2019, arXiv:1909.08053, §3) of our `Transformer` with DeepSpeed's
own AutoTP training layers (`deepspeed.module_inject.layers`), applied to the module names we know:

- attention: the fused q/k/v projection is column parallel per sub-parameter (each rank keeps its
  heads of q, of k and of v: `SubParamLinearLayer` with shape ((q, kv, kv), -1)), the output
  projection row parallel (`LinearAllreduce`: partial products all-reduced in the forward pass);
- MLP: the up (and, for GLUs, gate) projection column parallel per sub-parameter, the down
  projection row parallel;
- vocabulary: the token embedding is vocabulary parallel (`VocabParallelEmbedding`: each rank holds
  V / TP rows, looks up its tokens, an all-reduce assembles the rows); the output head (the same table
  when tied, else a column-parallel `LinearLayer`) computes V / TP logits per rank, which are gathered
  (`GatherFromTensorParallelRegion`), so the loss stays a plain cross-entropy over full logits (a
  vocabulary-parallel loss would also save the logits' activation memory; not done);
- norms and learned positions stay replicated; their gradients are equal on every TP rank by
  construction.

Megatron's f / g operators are DeepSpeed's `ColumnParallel` (identity forward, all-reduce backward)
and `RowParallel` (all-reduce forward, identity backward) inside those layers. The replacement keeps
every parameter's name and object, so checkpoints and the pipeline wrapper see the same names as the
unsharded model.
"""

from __future__ import annotations

from typing import Any, cast

from tokensmith.trainer.model import Transformer


def shard(model: Transformer, group: Any, tp: int, tp_rank: int) -> None:
    """Split `model`'s blocks over the `tp` ranks of `group` in place (every rank holds the full,
    identically initialised model before, its shard after)."""
    if tp == 1:
        return
    from deepspeed.module_inject.layers import (
        LinearAllreduce,
        LinearLayer,
        SubParamLinearLayer,
        set_autotp_mode,
    )

    from tokensmith.trainer.parallel.vocab import TiedVocabParallelEmbedding

    set_autotp_mode(training=True)
    cfg = model.cfg
    model.tok_emb = TiedVocabParallelEmbedding(model.tok_emb, group, name="tok_emb")
    if model.lm_head is not None:
        model.lm_head = LinearLayer(model.lm_head, group, gather_output=True, name="lm_head")
    q_out, kv_out = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    for i, block in enumerate(model.blocks):
        attn, mlp = cast(Any, block).attn, cast(Any, block).mlp
        attn.qkv = SubParamLinearLayer(
            attn.qkv, group, shape=((q_out, kv_out, kv_out), -1), partition_dim=0, name=f"blocks.{i}.attn.qkv"
        )
        attn.o = LinearAllreduce(attn.o, group, name=f"blocks.{i}.attn.o")
        attn.n_heads //= tp
        attn.n_kv_heads //= tp
        attn.head_start = tp_rank * attn.n_heads  # this rank's heads, for per-head biases (ALiBi)
        if cfg.is_glu:
            mlp.fc = SubParamLinearLayer(
                mlp.fc, group, shape=((cfg.ffn, cfg.ffn), -1), partition_dim=0, name=f"blocks.{i}.mlp.fc"
            )
        else:
            mlp.fc = LinearLayer(mlp.fc, group, name=f"blocks.{i}.mlp.fc")
        mlp.proj = LinearAllreduce(mlp.proj, group, name=f"blocks.{i}.mlp.proj")
        # this rank's hidden width (DeepSpeed splits a width TP does not divide unevenly)
        mlp.ffn = mlp.fc.weight.shape[0] // (2 if cfg.is_glu else 1)


def is_sharded(param: Any) -> bool:
    """Whether `param` is a tensor-parallel shard (DeepSpeed marks them for its gradient-norm and
    checkpoint code); replicated parameters (norms, embeddings, row-parallel biases) are not."""
    from deepspeed.module_inject.layers import DS_TENSOR_MODEL_PARALLEL

    return bool(getattr(param, DS_TENSOR_MODEL_PARALLEL, False))


def owner_layers(model: Any) -> dict[int, Any]:
    """id(parameter) -> the AutoTP layer holding it, for gathering and re-splitting shards."""
    from deepspeed.module_inject.layers import TensorParallel_Layer

    out: dict[int, Any] = {}
    for module in model.modules():
        if isinstance(module, TensorParallel_Layer):
            for p in module.parameters(recurse=False):
                out[id(p)] = module
    return out
