"""Shared by the export tests: a small model overfit on a few chats, and its training folder.

Not a test module (leading underscore). The shapes are multiples of 32 so q8_0 GGUF quantizes
every matrix; the model is overfit so greedy tokens are decided by wide logit margins and any
two correct implementations agree on them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from _infer_helpers import fit_conversations, make_tokenizer, save_final

from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer


def export_config(tok: Forge1Tokenizer, tied: bool = True) -> Forge1Config:
    return Forge1Config(vocab_size=tok.get_vocab_size_padded(), dim=64, n_layers=2, n_heads=4,
                        n_kv_heads=2, ffn_dim=128, max_seq_len=128, rope_theta=50000.0,
                        tie_embeddings=tied)


@functools.lru_cache(maxsize=2)
def _trained(tied: bool) -> dict[str, torch.Tensor]:
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = Forge1Model(export_config(tok, tied))
    loss = fit_conversations(model, tok, 120, stabilise=False)
    assert loss < 0.3, f"export test model failed to fit (loss {loss:.3f})"
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_model(tied: bool = True) -> tuple[Forge1Model, Forge1Tokenizer]:
    tok = make_tokenizer()
    model = Forge1Model(export_config(tok, tied))
    model.load_state_dict(_trained(tied))
    return model.eval(), tok


def trained_folder(out: Path, tied: bool = True) -> Path:
    """outputs-like folder with final_model/{forge1_custom_final.pt, config.json, tokenizer/}."""
    model, tok = trained_model(tied)
    return save_final(model, tok, out, variant="custom")

