"""Pipeline parallelism (Huang et al. 2019, GPipe; the 1F1B schedule of Narayanan et al. 2019,
PipeDream) of our `Transformer` through DeepSpeed's `PipelineModule` and pipeline engine.

The model becomes a sequence of layers: the embedding (token, learned or sinusoidal positions,
dropout), one layer per transformer block, the final norm, the output head. With tied embeddings the
embedding and the head are one `TiedLayerSpec`: the first and the last stage each hold the table and
DeepSpeed all-reduces its gradient between them. Each stage keeps the very parameter objects of the
canonical model it was cut from, so their names in that model (`blocks.3.attn.qkv.weight`) name them
in checkpoints whatever the layout.

Stages are balanced by forward FLOPs per token (`layer_costs`), so the output head, whose matrix
multiply is 2 x d_model x vocab FLOPs per token, counts like the blocks it replaces on the last stage;
`deepspeed.runtime.utils.partition_balanced` then cuts the sequence into contiguous stages
minimising the most expensive one.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokensmith.planner.arch import ModelConfig
from tokensmith.trainer.model import Transformer

TIED_KEY = "embedding"


def layer_costs(cfg: ModelConfig, tied: bool | None = None) -> list[float]:
    """Forward FLOPs per token of each pipeline layer: [embedding, block x n_layers, final norm, head].

    A block is 2 FLOPs per weight of its matrices plus attention's scores and weighted sum,
    2 x 2 x seq x d_model per token (Kaplan et al. 2020, Table 1); the head 2 x d_model x vocab;
    lookups and norms are counted as 1 so that the boundaries stay well defined."""
    d, q_out, kv_out = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    matrices = d * (q_out + 2 * kv_out) + q_out * d + (3 if cfg.is_glu else 2) * d * cfg.ffn
    block = 2.0 * matrices + 4.0 * cfg.seq_len * q_out
    return [1.0] + [block] * cfg.n_layers + [1.0, 2.0 * d * cfg.vocab_size]


def stage_bounds(costs: list[float], stages: int) -> list[int]:
    """Layer index where each stage starts, plus the end: stage s holds layers [b[s], b[s+1])."""
    from deepspeed.runtime.utils import partition_balanced

    return [int(b) for b in partition_balanced(weights=costs, num_parts=stages)]


class EmbeddingLayer(nn.Module):
    """Token (+ position) embedding and dropout; as the tied head (`head`) it applies the table."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.cfg = model.cfg
        self.tok_emb = model.tok_emb
        self.pos_emb = model.pos_emb
        self.drop = model.drop
        if model.cfg.position == "sinusoidal":
            self.register_buffer("sin_pos", model.sin_pos, persistent=False)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t, device=idx.device))
        elif self.cfg.position == "sinusoidal":
            x = x + cast(Tensor, self.sin_pos)[:t].to(x.dtype)
        out: Tensor = self.drop(x)
        return out


def tied_head(layer: EmbeddingLayer, x: Tensor) -> Tensor:
    from tokensmith.trainer.model import output_logits

    return output_logits(layer.tok_emb, None, x)


class BlockLayer(nn.Module):
    """One transformer block with the position tables it needs."""

    def __init__(self, model: Transformer, index: int, recompute_full: bool) -> None:
        super().__init__()
        self.block: nn.Module = model.blocks[index]
        self.position = model.cfg.position
        self.recompute_full = recompute_full
        if self.position == "rope":
            self.register_buffer("rope_cos", model.rope_cos, persistent=False)
            self.register_buffer("rope_sin", model.rope_sin, persistent=False)
        if self.position == "alibi":
            self.register_buffer("alibi", model.alibi, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        from torch.utils.checkpoint import checkpoint

        rope = (self.rope_cos, self.rope_sin) if self.position == "rope" else None
        bias = self.alibi if self.position == "alibi" else None
        if self.recompute_full and self.training:
            out: Tensor = checkpoint(self.block, x, rope, bias, use_reentrant=False)
            return out
        result: Tensor = self.block(x, rope, bias)
        return result


class NormLayer(nn.Module):
    def __init__(self, norm: nn.Module | None) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return x if self.norm is None else self.norm(x)


class HeadLayer(nn.Module):
    """The untied output projection."""

    def __init__(self, lm_head: nn.Module) -> None:
        super().__init__()
        self.lm_head = lm_head

    def forward(self, x: Tensor) -> Tensor:
        from tokensmith.trainer.model import output_logits

        return output_logits(nn.Identity(), self.lm_head, x)


def loss_fn(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1))


def layers(model: Transformer, recompute_full: bool) -> list[Any]:
    """The pipeline's layer sequence, cut from `model` (already tensor-sharded if TP > 1)."""
    from deepspeed.pipe import TiedLayerSpec

    cfg = model.cfg
    out: list[Any] = []
    # Tied: the first and the last stage each build an EmbeddingLayer around the same table object.
    if cfg.tie_embeddings:
        out.append(TiedLayerSpec(TIED_KEY, EmbeddingLayer, model, tied_weight_attr=["tok_emb.weight"]))
    else:
        out.append(EmbeddingLayer(model))
    out += [BlockLayer(model, i, recompute_full) for i in range(cfg.n_layers)]
    out.append(NormLayer(model.norm_f))
    if cfg.tie_embeddings:
        out.append(
            TiedLayerSpec(
                TIED_KEY, EmbeddingLayer, model, forward_fn=tied_head, tied_weight_attr=["tok_emb.weight"]
            )
        )
    else:
        assert model.lm_head is not None
        out.append(HeadLayer(model.lm_head))
    return out


def build(model: Transformer, topology: Any, recompute_full: bool) -> Any:
    """A `PipelineModule` over `topology` whose stages are balanced by `layer_costs`."""
    from deepspeed.pipe import PipelineModule

    class Balanced(PipelineModule):
        def _partition_layers(self, method: str = "uniform") -> None:
            self.parts = stage_bounds(layer_costs(model.cfg), self.num_stages)
            stage = self._topo.get_coord(self.global_rank).pipe
            self._set_bounds(start=self.parts[stage], stop=self.parts[stage + 1])

    return Balanced(
        layers=layers(model, recompute_full),
        topology=topology,
        loss_fn=loss_fn,
        partition_method="balanced",
        activation_checkpoint_interval=0,
    )
