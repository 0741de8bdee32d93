"""Shared by the inference tests: a tokenizer with emoji/CJK, a tiny overfit model, its files.

Not a test module (leading underscore): `from _infer_helpers import ...` works because pytest
puts tests/ on sys.path. Everything is seeded, so generation from the overfit model is exact.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from aethermind.artifacts.layout import final_dir, write_final
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text import chat_format as cf
from aethermind.text.tokenizer import Forge1Tokenizer

CONVERSATIONS = [
    cf.Conversation(turns=[cf.Turn("What is 2+2?", "The answer is 4.", "2 plus 2 makes 4.")]),
    cf.Conversation(turns=[cf.Turn("Say hello in Japanese", "こんにちは 😀 世界")]),
    cf.Conversation(turns=[cf.Turn("What is the capital of France?", "Paris 🗼 is the capital.")]),
    cf.Conversation(turns=[cf.Turn("Sort 3, 1, 2", "1, 2, 3", "Order them from small to big.")]),
]
BASE_TEXT = [
    "The quick brown fox jumps over the lazy dog. 12 + 30 = 42.",
    "What is the capital of France? The capital of France is Paris.",
    "Let me think step by step. 7 * 8 = 56, so the answer is 56.",
    "Hello! How can I help you today? I am Forge-1, a helpful assistant.",
] * 10


@functools.lru_cache(maxsize=1)
def make_tokenizer() -> Forge1Tokenizer:
    """Emoji and CJK appear once, so min_frequency=2 leaves them split into byte tokens."""
    texts = BASE_TEXT + [cf.render(c) for c in CONVERSATIONS]
    return Forge1Tokenizer.train(texts, vocab_size=360)


def tiny_config(tok: Forge1Tokenizer, max_seq_len: int = 128) -> Forge1Config:
    return Forge1Config(vocab_size=tok.get_vocab_size_padded(), dim=64, n_layers=2, n_heads=4,
                        n_kv_heads=2, ffn_dim=176, max_seq_len=max_seq_len)


def train_tiny(tok: Forge1Tokenizer, steps: int = 150, max_seq_len: int = 128) -> Forge1Model:
    """A fresh copy of the tiny model overfit on CONVERSATIONS (trained once per session)."""
    key = (tok.fingerprint(), steps, max_seq_len)
    if key not in _TRAINED:
        _TRAINED[key] = _train(tok, steps, max_seq_len)
    model = Forge1Model(tiny_config(tok, max_seq_len))
    model.load_state_dict(_TRAINED[key])
    return model.eval()


_TRAINED: dict[tuple, dict[str, torch.Tensor]] = {}


def fit_conversations(model: Forge1Model, tok: Forge1Tokenizer, steps: int, *,
                      stabilise: bool = True,
                      conversations: list[cf.Conversation] | None = None) -> float:
    """Overfit `model` on `conversations` (default CONVERSATIONS) with plain AdamW (lr 1e-2)
    on one thread; final loss.

    One thread because tiny ops on a busy shared CPU stall on OpenMP barriers. `stabilise` adds
    clipping and a linear decay to zero: at a constant 1e-2 the loss spikes now and then (to
    0.7 at step 130), so where it ends would depend on the step count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [cf.encode(c, tok)[0] for c in conversations or CONVERSATIONS]
        T = max(map(len, rows))
        tokens = torch.full((len(rows), T), tok.pad_id, dtype=torch.long)
        targets = torch.full((len(rows), T), -100, dtype=torch.long)
        for i, ids in enumerate(rows):
            tokens[i, :len(ids)] = torch.tensor(ids)
            targets[i, :len(ids) - 1] = torch.tensor(ids[1:])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        decay = torch.optim.lr_scheduler.LambdaLR(
            opt, (lambda step: 1 - step / steps) if stabilise else (lambda step: 1.0))
        model.train()
        for _ in range(steps):
            loss = model(tokens, targets=targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if stabilise:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            decay.step()
    finally:
        torch.set_num_threads(threads)
    return loss.item()


def _train(tok: Forge1Tokenizer, steps: int, max_seq_len: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = Forge1Model(tiny_config(tok, max_seq_len))
    loss = fit_conversations(model, tok, steps)
    assert loss < 0.05, f"tiny model failed to overfit (loss {loss:.3f})"
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_final(model: Forge1Model, tok: Forge1Tokenizer, out_dir: Path,
               variant: str = "tiny") -> Path:
    """The training layout, written by the code `aethermind train` uses for it."""
    return write_final(model.state_dict(), model.config, tok, final_dir(out_dir), variant)
