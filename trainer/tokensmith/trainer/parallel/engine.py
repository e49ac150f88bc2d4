"""Build the DeepSpeed engine of a layout from the canonical `Transformer`.

Every rank builds the whole model from the run's seed first, then keeps its share (tensor shard,
pipeline stage): the initial weights are therefore the same numbers under every layout, which is what
makes a TP or PP run reproduce the loss curve of a DP run. (For models too large to build on one
host this initialisation would have to be sharded too; the presets we train fit.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokensmith.planner.capability import Layout, rank_coordinates
from tokensmith.trainer.config import TrainerConfig


@dataclass
class Built:
    """A running engine and what the loop and checkpoints need to know about the layout."""

    engine: Any
    optimizer: Any
    layout: Layout
    pp_rank: int
    dp_rank: int
    tp_rank: int
    pipeline: bool
    names: dict[int, str] = field(default_factory=dict)  # id(parameter) -> name in the Transformer
    owners: dict[int, Any] = field(default_factory=dict)  # id(parameter) -> its AutoTP layer
    grid: Any = None

    def named_parameters(self) -> list[tuple[str, Any]]:
        """This rank's parameters under their canonical names (a tied table once per stage)."""
        seen: set[int] = set()
        out = []
        for p in self.engine.module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append((self.names[id(p)], p))
        return out


def build(cfg: TrainerConfig, world: int, rank: int, ds_config: dict[str, Any], cuda: bool) -> Built:
    import deepspeed
    import torch

    from tokensmith.trainer.model import Transformer, named_decay_groups
    from tokensmith.trainer.parallel import groups, pipeline, tensor

    layout = cfg.layout(world)
    pp_rank, dp_rank, tp_rank = rank_coordinates(rank, layout)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank, layout and attempt
    if cfg.deepspeed.zero_stage == 3:
        reference = Transformer(cfg.model)  # the initial weights of every other stage and layout
        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            model = Transformer(cfg.model)
        # zero.Init partitions each submodule's parameters as soon as it is built, so the Transformer's
        # own initialisation (the end of its __init__) saw empty partitions and the modules' defaults
        # stayed (nn.Embedding's N(0, 1): a first loss of 32 instead of ln(vocab)). Copy the reference in.
        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0), torch.no_grad():
            for p, ref in zip(model.parameters(), reference.parameters(), strict=True):
                p.copy_(ref)
        del reference
    else:
        model = Transformer(cfg.model)
    recompute = cfg.parallelism.recompute
    model.set_recompute(recompute)
    names = {id(p): n for n, p in model.named_parameters()}

    def make_optimizer(named: list[tuple[str, Any]]) -> Any:
        t = cfg.train
        return torch.optim.AdamW(
            named_decay_groups(named, t.weight_decay),
            lr=t.lr,
            betas=(t.beta1, t.beta2),
            eps=t.eps,
            fused=cuda or None,
        )

    grid = None
    if layout.tensor == 1 and layout.pipeline == 1:
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=make_optimizer(list(model.named_parameters())), config=ds_config
        )
        return Built(engine, optimizer, layout, pp_rank, dp_rank, tp_rank, False, names)
    grid = groups.grid(layout)
    tensor.shard(model, grid.get_slice_parallel_group(), layout.tensor, tp_rank)
    owners = tensor.owner_layers(model)
    if layout.pipeline > 1:
        module = pipeline.build(model, groups.topology(layout), recompute == "full")
        named = [(names[id(p)], p) for p in module.parameters()]
        engine, optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=make_optimizer(named), config=ds_config
        )
    else:
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model,
            optimizer=make_optimizer(list(model.named_parameters())),
            config=ds_config,
            mpu=grid,
        )
    return Built(
        engine, optimizer, layout, pp_rank, dp_rank, tp_rank, layout.pipeline > 1, names, owners, grid
    )
