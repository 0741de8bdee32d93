"""Forge-1 as a GGUF file for llama.cpp, Ollama and LM Studio (`llama` architecture).

Tensors take their GGUF names from the `gguf` package's own Hugging Face name map (the one
llama.cpp's converter uses), so this module only adds what differs from a plain copy:
- Q and K rows are permuted. Forge-1, like HF Llama, rotates the two halves of each head
  (rotate-half RoPE); llama.cpp's `llama` architecture rotates adjacent pairs, so, as
  llama.cpp's convert_hf_to_gguf.py does, row j of each head is moved so that halves become
  pairs. V, O and the MLP are untouched.
- The tokenizer is written as llama.cpp's "gpt2" (byte-level BPE) vocabulary with pre-tokenizer
  "smollm": in llama.cpp's src/llama-vocab.cpp that type splits on `\\p{N}` (single digits) and
  then applies the GPT-2 regex, which is exactly our `Digits(individual_digits=True)` followed by
  `ByteLevel(use_regex=True)`. `test_interop.py` checks the ids against llama.cpp itself.
  An adopted Hub tokenizer is written only when llama.cpp has its pre-tokenizer
  (`gguf_pre_tokenizer`: ours/SmolLM2's, or plain GPT-2 byte-level); any other (SentencePiece
  style, a normalizer, byte fallback) is refused in one line naming `--format hf`, since
  llama.cpp would silently give other ids than the model was trained on.
- Weights: f32, f16, or q8_0 (2-D weights quantized with `gguf.quants`; a row length that is not
  a multiple of 32 falls back to f16, as llama.cpp's converter does). Norms stay f32.
- The think tags are USER_DEFINED tokens, the other special tokens CONTROL (see `_vocab`).
- End of generation: `chat_format.STOP_TOKENS` under the eos/eot/eom keys (`STOP_KEYS`), so
  llama.cpp stops on exactly the tokens our engine and transformers stop on.
Usage: `write_gguf(model, tok, meta, Path("forge1_nano-f16.gguf"), "f16")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

import gguf
import numpy as np
import torch

from aethermind.artifacts.exported import ExportMeta
from aethermind.model.hf_convert import to_hf
from aethermind.model.transformer import Forge1Model
from aethermind.text import chat_format as cf
from aethermind.text.chat_template import CHAT_TEMPLATE
from aethermind.text.special_tokens import VISIBLE_TOKENS
from aethermind.text.tokenizer import Forge1Tokenizer

GgufDtype = Literal["f32", "f16", "q8_0"]
GGUF_DTYPES: tuple[GgufDtype, ...] = get_args(GgufDtype)
DEFAULT_GGUF_DTYPE: GgufDtype = "f16"
# llama.cpp ends generation on the tokens under these keys (its `special_eog_ids`, built in
# src/llama-vocab.cpp), so each stop token goes under the key whose role it has; <|user|> has
# no such role, and eom ("end of message") is the one key llama.cpp only uses for stopping.
STOP_KEYS = {cf.END_ASSISTANT: "eot", cf.EOS: "eos", cf.USER: "eom"}
PRE_TOKENIZER = "smollm"  # llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM = \p{N} split + GPT-2 regex
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}
# `tokenizers` pre-tokenizer (trim_offsets aside: it only moves offsets) -> llama.cpp pre type
# that splits text identically (src/llama-vocab.cpp: "smollm" = \p{N} + GPT-2 regex, "gpt-2").
KNOWN_PRE_TOKENIZERS = (
    ({"type": "Sequence", "pretokenizers": [_DIGITS, _BYTE_LEVEL]}, PRE_TOKENIZER),
    (_BYTE_LEVEL, "gpt-2"),
)
META_PREFIX = "forge1."


def permute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rotate-half row order -> interleaved pairs, per head (llama.cpp's `permute`)."""
    out_dim = w.shape[0]
    return w.reshape(n_heads, 2, out_dim // n_heads // 2, *w.shape[1:]).transpose(1, 2) \
        .reshape(w.shape)


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_rope` (to read a GGUF back into Forge-1 order)."""
    out_dim = w.shape[0]
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2) \
        .reshape(w.shape)


def gguf_tensors(model: Forge1Model) -> dict[str, torch.Tensor]:
    """GGUF name -> float32 tensor (Q/K permuted; `output` absent when embeddings are tied)."""
    cfg = model.config
    hf_sd, _ = to_hf({k: v.detach().cpu().float() for k, v in model.state_dict().items()}, cfg)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.n_layers)
    out: dict[str, torch.Tensor] = {}
    for hf_name, tensor in hf_sd.items():
        if hf_name.endswith("q_proj.weight"):
            tensor = permute_rope(tensor, cfg.n_heads)
        elif hf_name.endswith("k_proj.weight"):
            tensor = permute_rope(tensor, cfg.n_kv_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        out[name] = tensor
    return out


def _without_offsets(node: object) -> object:
    if isinstance(node, dict):
        return {k: _without_offsets(v) for k, v in node.items() if k != "trim_offsets"}
    if isinstance(node, list):
        return [_without_offsets(v) for v in node]
    return node


def gguf_pre_tokenizer(tok: Forge1Tokenizer) -> str:
    """llama.cpp's name for `tok`'s pre-tokenizer; ValueError when llama.cpp has none that
    tokenizes exactly as `tok` does (only byte-level BPE without a normalizer qualifies)."""
    spec = json.loads(tok.to_json())
    model, pre = spec["model"], _without_offsets(spec.get("pre_tokenizer"))
    byte_level = (model.get("type") == "BPE" and not model.get("byte_fallback")
                  and spec.get("normalizer") is None
                  and (spec.get("decoder") or {}).get("type") == "ByteLevel")
    name = next((n for p, n in KNOWN_PRE_TOKENIZERS if p == pre), None)
    if not byte_level or name is None:
        kind = "byte-level BPE" if byte_level else f"{model.get('type')} with " + (
            "byte fallback" if model.get("byte_fallback") else
            f"normalizer {(spec.get('normalizer') or {}).get('type')}"
            if spec.get("normalizer") else "no byte-level decoder")
        raise ValueError(f"GGUF: llama.cpp has no pre-tokenizer that matches this tokenizer "
                         f"({kind}, pre-tokenizer {(pre or {}).get('type')}): export it with "
                         "--format hf instead")
    return name


def _vocab(tok: Forge1Tokenizer, n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges); ids past the tokenizer (vocab padding) are UNUSED.

    Special tokens are CONTROL, except the think tags (`VISIBLE_TOKENS`): USER_DEFINED, which
    llama.cpp's token_to_piece renders even without `special` (CONTROL ones it drops), so
    chat completions keep the thinking splittable. llama.cpp matches USER_DEFINED tokens
    before BPE even with parse_special off, so they stay one token in any text.
    """
    spec = json.loads(tok.to_json())
    by_id = {i: piece for piece, i in spec["model"]["vocab"].items()}
    by_id.update({t["id"]: t["content"] for t in spec["added_tokens"]})
    visible = {tok.special_ids[s] for s in VISIBLE_TOKENS}
    # An adopted tokenizer's own special tokens (<|endoftext|>, ...) are CONTROL like ours.
    special = {t["id"] for t in spec["added_tokens"] if t["special"]} - visible
    visible |= {t["id"] for t in spec["added_tokens"] if not t["special"]}
    tokens, types = [], []
    for i in range(n_vocab):
        piece = by_id.get(i)
        if piece is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(piece)
            types.append(gguf.TokenType.CONTROL if i in special else
                         gguf.TokenType.USER_DEFINED if i in visible else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return tokens, types, merges


def _encode(name: str, tensor: torch.Tensor, dtype: GgufDtype) -> tuple[np.ndarray, object]:
    """(data, GGML type) for one tensor under the file's weight type."""
    data = tensor.numpy().astype(np.float32)
    qt = gguf.GGMLQuantizationType
    if data.ndim == 1 or dtype == "f32":
        return data, qt.F32
    if dtype == "q8_0":
        try:
            return gguf.quants.quantize(data, qt.Q8_0), qt.Q8_0
        except gguf.QuantError:
            pass  # row length not a multiple of the block size
    return data.astype(np.float16), qt.F16


def _add_stop_tokens(w: gguf.GGUFWriter, tok: Forge1Tokenizer) -> None:
    """eos/eot/eom from `chat_format.STOP_TOKENS`: llama.cpp then stops where our engine does."""
    assert set(STOP_KEYS) == set(cf.STOP_TOKENS), "each stop token needs a GGUF key"
    adders = {"eos": w.add_eos_token_id, "eot": w.add_eot_token_id, "eom": w.add_eom_token_id}
    for token in cf.STOP_TOKENS:
        adders[STOP_KEYS[token]](tok.special_ids[token])


def write_gguf(model: Forge1Model, tok: Forge1Tokenizer, meta: ExportMeta, path: Path,
               dtype: GgufDtype = DEFAULT_GGUF_DTYPE) -> Path:
    """Write the GGUF file (`dtype`: the weight type, as `export`'s --dtype resolved it).
    Raises ValueError (`gguf_pre_tokenizer`) before writing for a tokenizer llama.cpp lacks."""
    cfg = model.config
    pre = gguf_pre_tokenizer(tok)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(f"Forge-1 {meta.variant}")
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    tokens, types, merges = _vocab(tok, cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_id)
    _add_stop_tokens(w, tok)
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(False)  # the chat template writes <|bos|> itself
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for key, value in meta.to_strings().items():
        w.add_string(META_PREFIX + key, value)
    for name, tensor in gguf_tensors(model).items():
        data, ggml_type = _encode(name, tensor, dtype)
        w.add_tensor(name, data, raw_dtype=ggml_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
