"""Shared by the foreign-tokenizer tests: stand-ins for Hub Llamas, built offline.

Not a test module (leading underscore). Two tokenizer styles trained in-process with
`tokenizers`, both unlike ours (other merges, other special tokens at the low ids):
- "bytelevel": GPT-2-style byte-level BPE with <|endoftext|>, <|im_start|>, <|im_end|> (as
  SmolLM2), a tied head;
- "sentencepiece": BPE with byte fallback and the legacy Llama-2 normalizer (prepend and
  replace with "▁"), decoder Replace/ByteFallback/Fuse/Strip and a <s> post-processor (as
  TinyLlama), an untied head.
`hub_folder` saves a random `LlamaForCausalLM` of the tokenizer's exact vocabulary with it, as
`save_pretrained` does for a Hub model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from _infer_helpers import BASE_TEXT, CONVERSATIONS
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from aethermind.text import chat_format as cf

STYLES = ("bytelevel", "sentencepiece")
TIED = {"bytelevel": True, "sentencepiece": False}
# Template markup written without our special-token strings: a Hub tokenizer never saw them.
_TEXTS = BASE_TEXT + [cf.render(c).replace("<|", "<").replace("|>", ">") for c in CONVERSATIONS]


def _bytelevel() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_TEXTS, trainers.BpeTrainer(
        vocab_size=330, min_frequency=2, show_progress=False,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _sentencepiece() -> Tokenizer:
    """Merges trained on "▁"-prefixed words, then laid out as a Llama-2 tokenizer.json:
    <unk> <s> </s>, the 256 byte-fallback pieces, the merged pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(_TEXTS, trainers.BpeTrainer(
        vocab_size=200, min_frequency=2, show_progress=False, limit_alphabet=60,
        special_tokens=["<unk>", "<s>", "</s>"]))
    spec = json.loads(tok.to_str())
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    spec["model"].update(vocab=vocab, byte_fallback=True, fuse_unk=True)
    for added in spec["added_tokens"]:
        added["id"] = vocab[added["content"]]
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    spec["pre_tokenizer"] = None
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    out = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    out.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[
        ("<s>", 1)])
    return out


@functools.lru_cache(maxsize=2)
def hub_tokenizer_json(style: str) -> str:
    return {"bytelevel": _bytelevel, "sentencepiece": _sentencepiece}[style]().to_str()


def hub_folder(directory: Path, style: str, **config: object) -> Path:
    """A Hub-like Llama folder: random weights (wide init, so greedy tokens win by clear
    margins), config.json, tokenizer.json and tokenizer_config.json."""
    import transformers

    tok = Tokenizer.from_str(hub_tokenizer_json(style))
    cfg = transformers.LlamaConfig(**{
        "vocab_size": tok.get_vocab_size(), "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "initializer_range": 0.2, "tie_word_embeddings": TIED[style], "bos_token_id": 1,
        "eos_token_id": 2, **config})
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(directory)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.save_pretrained(directory)
    return directory
