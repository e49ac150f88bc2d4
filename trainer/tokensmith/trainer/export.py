"""`tokensmith export --hf DIR`: a checkpoint as a Hugging Face `transformers` model.

The mapping is exact (same logits), so it is offered only where a Hugging Face architecture computes the
same function as our module:

| ours                                         | Hugging Face   |
|----------------------------------------------|----------------|
| pre-LN, RMSNorm, SwiGLU or GeGLU, RoPE        | `LlamaForCausalLM` (GQA, biases, tied or not) |
| pre-LN, LayerNorm, GELU or ReLU, learned pos  | `GPT2LMHeadModel` (GQA expanded to MHA)        |
| pre-LN, LayerNorm, GELU or ReLU, RoPE         | `GPTNeoXForCausalLM` (sequential residual)     |

Post-LN, ALiBi and sinusoidal positions have no such equivalent and are refused with a clear message.
Our fused `qkv` and GLU `fc` matrices are split (Llama), transposed into Conv1D layout (GPT-2) or
re-interleaved per head (GPT-NeoX); missing biases are written as zeros where the target always has them.
The output directory holds `config.json`, `model.safetensors`, `generation_config.json` and the tokenizer
(`tokenizer.json` + `tokenizer_config.json`), so it loads with `AutoModelForCausalLM.from_pretrained`,
vLLM and lm-evaluation-harness (`--model hf --model_args pretrained=DIR`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokensmith.planner.arch import ModelConfig

if TYPE_CHECKING:
    from torch import Tensor

Weights = dict[str, "Tensor"]


def choose_architecture(m: ModelConfig, requested: str = "auto") -> str:
    """The Hugging Face architecture that represents `m` exactly; ValueError says why there is none."""
    why: list[str] = []
    if m.norm_position != "pre":
        why.append("post-LN (Hugging Face's Llama, GPT-2 and GPT-NeoX are pre-LN)")
    if m.position in ("alibi", "sinusoidal"):
        why.append(f"{m.position} positions")
    options = []
    if not why:
        if m.norm == "rmsnorm" and m.is_glu and m.position == "rope":
            options.append("llama")
        if m.norm == "layernorm" and not m.is_glu and m.position == "learned":
            options.append("gpt2")
        if m.norm == "layernorm" and not m.is_glu and m.position == "rope":
            options.append("gpt-neox")
        if not options:
            why.append(f"{m.norm} + {m.activation} + {m.position} positions")
    if requested != "auto" and requested not in options:
        options = []
        why.append(f"--arch {requested} needs " + _NEEDS[requested])
    if not options:
        raise ValueError(
            "no Hugging Face architecture computes this model exactly: "
            + "; ".join(why)
            + ". Exportable: RMSNorm+SwiGLU/GeGLU+RoPE (llama), LayerNorm+GELU/ReLU+learned (gpt2), "
            "LayerNorm+GELU/ReLU+RoPE (gpt-neox), all pre-LN"
        )
    return options[0] if requested == "auto" else requested


_NEEDS = {
    "llama": "pre-LN, RMSNorm, SwiGLU or GeGLU and RoPE",
    "gpt2": "pre-LN, LayerNorm, GELU or ReLU and learned positions",
    "gpt-neox": "pre-LN, LayerNorm, GELU or ReLU and RoPE",
}


def _split_qkv(m: ModelConfig, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    q_out, kv_out = m.n_heads * m.head_dim, m.kv_heads * m.head_dim
    q, k, v = w.split([q_out, kv_out, kv_out], dim=0)
    return q, k, v


def _expand_kv(m: ModelConfig, kv: Tensor) -> Tensor:
    """Grouped K/V heads repeated to one per query head (exact: GQA is MHA with shared K/V)."""
    import torch

    group = m.n_heads // m.kv_heads
    if group == 1:
        return kv
    shape = kv.shape
    heads = kv.reshape(m.kv_heads, m.head_dim, *shape[1:])
    return torch.repeat_interleave(heads, group, dim=0).reshape(m.n_heads * m.head_dim, *shape[1:])


def _bias(sd: Weights, name: str, size: int, like: Tensor) -> Tensor:
    import torch

    return sd[name] if name in sd else torch.zeros(size, dtype=like.dtype)


def llama_weights(m: ModelConfig, sd: Weights) -> Weights:
    out: Weights = {
        "model.embed_tokens.weight": sd["tok_emb.weight"],
        "model.norm.weight": sd["norm_f.weight"],
    }
    if not m.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(m.n_layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        for name, part in zip("qkv", _split_qkv(m, sd[src + "attn.qkv.weight"]), strict=True):
            out[f"{dst}self_attn.{name}_proj.weight"] = part
        out[f"{dst}self_attn.o_proj.weight"] = sd[src + "attn.o.weight"]
        gate, up = sd[src + "mlp.fc.weight"].split(m.ffn, dim=0)
        out[f"{dst}mlp.gate_proj.weight"], out[f"{dst}mlp.up_proj.weight"] = gate, up
        out[f"{dst}mlp.down_proj.weight"] = sd[src + "mlp.proj.weight"]
        if m.bias:
            for name, part in zip("qkv", _split_qkv(m, sd[src + "attn.qkv.bias"]), strict=True):
                out[f"{dst}self_attn.{name}_proj.bias"] = part
            out[f"{dst}self_attn.o_proj.bias"] = sd[src + "attn.o.bias"]
            gate_b, up_b = sd[src + "mlp.fc.bias"].split(m.ffn, dim=0)
            out[f"{dst}mlp.gate_proj.bias"], out[f"{dst}mlp.up_proj.bias"] = gate_b, up_b
            out[f"{dst}mlp.down_proj.bias"] = sd[src + "mlp.proj.bias"]
        out[f"{dst}input_layernorm.weight"] = sd[src + "norm1.weight"]
        out[f"{dst}post_attention_layernorm.weight"] = sd[src + "norm2.weight"]
    return out


def gpt2_weights(m: ModelConfig, sd: Weights) -> Weights:
    """GPT-2's Conv1D stores weights as [in, out]: our Linear weights transposed."""
    import torch

    emb = sd["tok_emb.weight"]
    out: Weights = {
        "transformer.wte.weight": emb,
        "transformer.wpe.weight": sd["pos_emb.weight"],
        "transformer.ln_f.weight": sd["norm_f.weight"],
        "transformer.ln_f.bias": sd["norm_f.bias"],
    }
    if not m.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    d = m.d_model
    for i in range(m.n_layers):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        q, k, v = _split_qkv(m, sd[src + "attn.qkv.weight"])
        qkv = torch.cat([q, _expand_kv(m, k), _expand_kv(m, v)], dim=0)
        qkv_b = _bias(sd, src + "attn.qkv.bias", m.n_heads * m.head_dim + 2 * m.kv_heads * m.head_dim, emb)
        qb, kb, vb = _split_qkv(m, qkv_b)
        out[dst + "attn.c_attn.weight"] = qkv.t()
        out[dst + "attn.c_attn.bias"] = torch.cat([qb, _expand_kv(m, kb), _expand_kv(m, vb)])
        out[dst + "attn.c_proj.weight"] = sd[src + "attn.o.weight"].t()
        out[dst + "attn.c_proj.bias"] = _bias(sd, src + "attn.o.bias", d, emb)
        out[dst + "mlp.c_fc.weight"] = sd[src + "mlp.fc.weight"].t()
        out[dst + "mlp.c_fc.bias"] = _bias(sd, src + "mlp.fc.bias", m.ffn, emb)
        out[dst + "mlp.c_proj.weight"] = sd[src + "mlp.proj.weight"].t()
        out[dst + "mlp.c_proj.bias"] = _bias(sd, src + "mlp.proj.bias", d, emb)
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[f"{dst}{theirs}.weight"] = sd[f"{src}{ours}.weight"]
            out[f"{dst}{theirs}.bias"] = sd[f"{src}{ours}.bias"]
    return out


def neox_weights(m: ModelConfig, sd: Weights) -> Weights:
    """GPT-NeoX fuses q, k, v per head: rows [q_h; k_h; v_h] for each head h."""
    import torch

    emb = sd["tok_emb.weight"]
    out: Weights = {
        "gpt_neox.embed_in.weight": emb,
        "gpt_neox.final_layer_norm.weight": sd["norm_f.weight"],
        "gpt_neox.final_layer_norm.bias": sd["norm_f.bias"],
    }
    if not m.tie_embeddings:
        out["embed_out.weight"] = sd["lm_head.weight"]
    d, hd, h = m.d_model, m.head_dim, m.n_heads

    def per_head(t: Tensor) -> Tensor:
        q, k, v = _split_qkv(m, t)
        parts = [x.reshape(h, hd, *x.shape[1:]) for x in (q, _expand_kv(m, k), _expand_kv(m, v))]
        return torch.stack(parts, dim=1).reshape(3 * h * hd, *t.shape[1:])

    for i in range(m.n_layers):
        src, dst = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        qkv_b = _bias(sd, src + "attn.qkv.bias", h * hd + 2 * m.kv_heads * hd, emb)
        out[dst + "attention.query_key_value.weight"] = per_head(sd[src + "attn.qkv.weight"])
        out[dst + "attention.query_key_value.bias"] = per_head(qkv_b)
        out[dst + "attention.dense.weight"] = sd[src + "attn.o.weight"]
        out[dst + "attention.dense.bias"] = _bias(sd, src + "attn.o.bias", d, emb)
        out[dst + "mlp.dense_h_to_4h.weight"] = sd[src + "mlp.fc.weight"]
        out[dst + "mlp.dense_h_to_4h.bias"] = _bias(sd, src + "mlp.fc.bias", m.ffn, emb)
        out[dst + "mlp.dense_4h_to_h.weight"] = sd[src + "mlp.proj.weight"]
        out[dst + "mlp.dense_4h_to_h.bias"] = _bias(sd, src + "mlp.proj.bias", d, emb)
        for ours, theirs in (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm")):
            out[f"{dst}{theirs}.weight"] = sd[f"{src}{ours}.weight"]
            out[f"{dst}{theirs}.bias"] = sd[f"{src}{ours}.bias"]
    return out


def hf_config(m: ModelConfig, arch: str, bos_id: int | None, eos_id: int | None) -> Any:
    """The `transformers` config object for `arch`."""
    common: dict[str, Any] = dict(
        vocab_size=m.vocab_size,
        tie_word_embeddings=m.tie_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    rope = {"rope_type": "default", "rope_theta": m.rope_theta}
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=m.d_model,
            intermediate_size=m.ffn,
            num_hidden_layers=m.n_layers,
            num_attention_heads=m.n_heads,
            num_key_value_heads=m.kv_heads,
            head_dim=m.head_dim,
            hidden_act="silu" if m.activation == "swiglu" else "gelu",
            max_position_embeddings=m.seq_len,
            rms_norm_eps=m.norm_eps,
            rope_parameters=rope,
            attention_bias=m.bias,
            mlp_bias=m.bias,
            architectures=["LlamaForCausalLM"],
            **common,
        )
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            n_positions=m.seq_len,
            n_embd=m.d_model,
            n_layer=m.n_layers,
            n_head=m.n_heads,
            n_inner=m.ffn,
            activation_function=m.activation,  # "gelu" is the exact erf GELU in transformers, as ours
            layer_norm_epsilon=m.norm_eps,
            resid_pdrop=m.dropout,
            embd_pdrop=m.dropout,
            attn_pdrop=m.dropout,
            architectures=["GPT2LMHeadModel"],
            **common,
        )
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=m.d_model,
        num_hidden_layers=m.n_layers,
        num_attention_heads=m.n_heads,
        intermediate_size=m.ffn,
        hidden_act=m.activation,
        max_position_embeddings=m.seq_len,
        layer_norm_eps=m.norm_eps,
        rope_parameters={**rope, "partial_rotary_factor": 1.0},
        use_parallel_residual=False,
        attention_bias=True,
        architectures=["GPTNeoXForCausalLM"],
        **common,
    )


CONVERTERS = {"llama": llama_weights, "gpt2": gpt2_weights, "gpt-neox": neox_weights}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    architecture: str
    step: int


def _save_tokenizer(tokenizer_file: Path | None, out: Path, seq_len: int) -> tuple[int | None, int | None]:
    """tokenizer.json + tokenizer_config.json via PreTrainedTokenizerFast; returns (bos, eos) ids."""
    if tokenizer_file is None:
        return None, None
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), model_max_length=seq_len)
    specials = [
        t for t in ("<|endoftext|>", "</s>", "<eos>", "[EOS]") if tok.convert_tokens_to_ids(t) is not None
    ]
    specials = [t for t in specials if tok.convert_tokens_to_ids(t) != tok.unk_token_id]
    if specials:
        tok.eos_token = specials[0]
        tok.bos_token = specials[0]  # GPT-2 convention: one separator token
    tok.save_pretrained(str(out))
    return tok.bos_token_id, tok.eos_token_id


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    arch: str = "auto",
    dtype: str = "float32",
    force: bool = False,
) -> ExportResult:
    """Write the checkpoint as a Hugging Face model directory (atomically: a temporary directory beside
    the target, renamed at the end)."""
    import torch
    from safetensors.torch import save_file

    from tokensmith.trainer.checkpoint import load_model

    loaded = load_model(checkpoint)
    m = loaded.config.model
    chosen = choose_architecture(m, arch)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} exists and is not empty; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        bos, eos = _save_tokenizer(loaded.tokenizer_path, tmp, m.seq_len)
        torch_dtype = getattr(torch, dtype)
        sd = {k: v.detach().to("cpu") for k, v in loaded.model.state_dict().items()}
        weights = {k: v.to(torch_dtype).contiguous().clone() for k, v in CONVERTERS[chosen](m, sd).items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = hf_config(m, chosen, bos, eos)
        config.dtype = dtype
        config.save_pretrained(str(tmp))
        from transformers import GenerationConfig

        GenerationConfig(bos_token_id=bos, eos_token_id=eos).save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(path=out, architecture=chosen, step=loaded.step)
