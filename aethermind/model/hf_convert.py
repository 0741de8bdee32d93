"""Convert Forge-1 weights to and from Hugging Face `LlamaForCausalLM`, both directions.

Forge-1 stores q/k/v and gate/up fused; HF stores them apart. RoPE already follows HF's
half-split convention, so no permutation is needed. The name map below is the single source
of truth. `transformers` is only needed by `to_hf_config`/`from_hf_config`'s callers, never here.
Usage: `hf_sd, hf_cfg = to_hf(model.state_dict(), model.config)`.
"""

from __future__ import annotations

from typing import Any

import torch

from aethermind.model.config import Forge1Config

# Forge-1 name -> HF name, for tensors that map one to one ({i} = layer index).
NAME_MAP = {
    "tok_emb.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
    "layers.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.attn.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.mlp.w_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
# Fused Forge-1 tensors -> the HF tensors they concatenate along dim 0, in order.
FUSED_MAP = {
    "layers.{i}.attn.wqkv.weight": ("model.layers.{i}.self_attn.q_proj.weight",
                                    "model.layers.{i}.self_attn.k_proj.weight",
                                    "model.layers.{i}.self_attn.v_proj.weight"),
    "layers.{i}.mlp.w_gate_up.weight": ("model.layers.{i}.mlp.gate_proj.weight",
                                        "model.layers.{i}.mlp.up_proj.weight"),
}


def to_hf_config_dict(cfg: Forge1Config) -> dict[str, Any]:
    """The `LlamaConfig` fields that reproduce `cfg` exactly."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "initializer_range": cfg.init_std,
        "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
    }


def rope_context(rope: dict[str, Any], max_positions: int) -> int:
    """The context length at which `rope` (an HF `rope_scaling`/`rope_parameters` dict) is
    exactly Forge-1's plain RoPE; raises ValueError for a scaling Forge-1 cannot represent.

    Legacy configs spell the kind "type", newer ones "rope_type". A `factor` of 1 makes linear,
    yarn (without an attention_factor) and llama3 scaling the identity. Dynamic NTK only
    changes the frequencies for sequences longer than the original context, so capping the
    context there is exact. Every other case would silently give other attention than the
    model was trained with.
    """
    if not isinstance(rope, dict):
        raise ValueError(f"HF config rope_scaling={rope!r}: expected a dict or null")
    kind = rope.get("rope_type", rope.get("type")) or "default"
    if kind == "default":
        return max_positions
    factor = rope.get("factor", 1.0)
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"HF config rope_scaling factor={factor!r}: must be a number >= 1")
    if kind == "dynamic":
        return min(max_positions, rope.get("original_max_position_embeddings") or max_positions)
    # yarn's attention_factor scales the rotary tables even at factor 1.
    if kind in ("linear", "yarn", "llama3") and factor == 1 \
            and rope.get("attention_factor") in (None, 1, 1.0):
        return max_positions
    raise ValueError(f"HF config rope_scaling {kind!r} with factor {factor}: Forge-1 has only "
                     "plain RoPE and cannot run this model as trained")


def from_hf_config_dict(hf: dict[str, Any]) -> Forge1Config:
    """A Forge1Config from a LlamaConfig dict; refuses features Forge-1 does not have."""
    for key, ok in (("attention_bias", False), ("mlp_bias", False), ("hidden_act", "silu")):
        if hf.get(key, ok) != ok:
            raise ValueError(f"HF config {key}={hf[key]!r}: Forge-1 supports only {ok!r}")
    # Newer configs say rope_parameters, older ones rope_scaling; one may hold a scaling
    # while the other is the plain default, so each present one is checked.
    max_len = hf.get("max_position_embeddings", 2048)
    for key in ("rope_scaling", "rope_parameters"):
        if hf.get(key) is not None:
            max_len = rope_context(hf[key], max_len)
    rope = hf.get("rope_parameters") or {}
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    if head_dim * heads != hf["hidden_size"]:
        raise ValueError("HF config head_dim * num_attention_heads != hidden_size: Forge-1 "
                         "needs dim = n_heads * head_dim")
    theta = hf.get("rope_theta") or rope.get("rope_theta") or 10000.0
    return Forge1Config(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=heads, n_kv_heads=hf.get("num_key_value_heads") or heads,
        ffn_dim=hf["intermediate_size"], max_seq_len=max_len,
        rope_theta=float(theta), norm_eps=hf.get("rms_norm_eps", 1e-6),
        init_std=hf.get("initializer_range", 0.02),
        tie_embeddings=hf.get("tie_word_embeddings", False))


def _split_sizes(cfg: Forge1Config, fused_name: str) -> list[int]:
    if "wqkv" in fused_name:
        kv = cfg.n_kv_heads * cfg.head_dim
        return [cfg.n_heads * cfg.head_dim, kv, kv]
    return [cfg.ffn_dim, cfg.ffn_dim]


def to_hf(state_dict: dict[str, torch.Tensor], cfg: Forge1Config
          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(HF state dict, LlamaConfig kwargs). Pass the dict to `LlamaConfig(**d)`."""
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.n_layers):
        for ours, theirs in NAME_MAP.items():
            if "{i}" in ours:
                out[theirs.format(i=i)] = state_dict[ours.format(i=i)]
        for ours, parts in FUSED_MAP.items():
            chunks = state_dict[ours.format(i=i)].split(_split_sizes(cfg, ours), dim=0)
            for name, chunk in zip(parts, chunks, strict=True):
                out[name.format(i=i)] = chunk.contiguous()
    for ours, theirs in NAME_MAP.items():
        if "{i}" not in ours and ours in state_dict:
            out[theirs] = state_dict[ours]
    if cfg.tie_embeddings:
        out.pop("lm_head.weight", None)  # HF re-ties it from embed_tokens
    return out, to_hf_config_dict(cfg)


def from_hf(hf_state_dict: dict[str, torch.Tensor], hf_config: dict[str, Any]
            ) -> tuple[dict[str, torch.Tensor], Forge1Config]:
    """(Forge-1 state dict, Forge1Config) from an HF Llama state dict and config dict."""
    cfg = from_hf_config_dict(hf_config)
    sd: dict[str, torch.Tensor] = {}
    for i in range(cfg.n_layers):
        for ours, theirs in NAME_MAP.items():
            if "{i}" in ours:
                sd[ours.format(i=i)] = hf_state_dict[theirs.format(i=i)]
        for ours, parts in FUSED_MAP.items():
            sd[ours.format(i=i)] = torch.cat([hf_state_dict[p.format(i=i)] for p in parts])
    sd["tok_emb.weight"] = hf_state_dict["model.embed_tokens.weight"]
    sd["norm.weight"] = hf_state_dict["model.norm.weight"]
    sd["lm_head.weight"] = (sd["tok_emb.weight"] if cfg.tie_embeddings
                            else hf_state_dict["lm_head.weight"])
    return sd, cfg
