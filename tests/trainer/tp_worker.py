"""Run under torchrun with 2 processes (tests/trainer/test_parallel.py): the tensor-sharded model's logits and
the gradients of its replicated parameters equal the unsharded model's, for model variants that stress the
split (grouped-query attention, SwiGLU and GELU, ALiBi's per-head biases, projection biases, an MLP width
that 2 does not divide). Prints one JSON line per variant on rank 0."""

from __future__ import annotations

import json
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed
import deepspeed.ops
import torch

from tokensmith.planner.arch import ModelConfig
from tokensmith.planner.capability import Layout
from tokensmith.trainer.model import Transformer
from tokensmith.trainer.parallel import groups, tensor

VARIANTS = [
    {"activation": "swiglu", "n_kv_heads": 2, "position": "alibi", "bias": True},
    {
        "activation": "gelu",
        "ffn_hidden": 45,
        "position": "learned",
        "norm": "layernorm",
        "tie_embeddings": False,
    },
    {"activation": "swiglu", "ffn_hidden": 45, "n_kv_heads": 2},
]

deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
deepspeed.init_distributed(dist_backend="gloo", verbose=False)
grid = groups.grid(Layout.for_world(2, tensor=2))
for variant in VARIANTS:
    cfg = ModelConfig(preset="tiny", vocab_size=256, seq_len=16, d_model=32, n_heads=4, **variant)
    torch.manual_seed(0)
    full = Transformer(cfg)
    torch.manual_seed(0)
    sharded = Transformer(cfg)
    tensor.shard(sharded, grid.get_slice_parallel_group(), 2, grid.get_slice_parallel_rank())
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    a, b = full(idx), sharded(idx)
    a.logsumexp(-1).mean().backward()
    b.logsumexp(-1).mean().backward()
    reference = dict(full.named_parameters())
    grad_diff = max(
        float((p.grad - reference[n].grad).abs().max())
        for n, p in sharded.named_parameters()
        if not tensor.is_sharded(p)
    )
    if torch.distributed.get_rank() == 0:
        print(json.dumps({"variant": variant, "logits": float((a - b).abs().max()), "grads": grad_diff}))
torch.distributed.destroy_process_group()
