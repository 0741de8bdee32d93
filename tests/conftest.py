"""Shared fixtures: a tiny model config, a tokenizer trained in-process, seeded torch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from aethermind.model.config import Forge1Config
from aethermind.text.tokenizer import Forge1Tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog. 12 + 30 = 42.",
    "What is the capital of France? The capital of France is Paris.",
    "Let me think step by step. 7 * 8 = 56, so the answer is 56.",
    "Sort these numbers: 5, 2, 8, 1, 9 -> 1, 2, 5, 8, 9.",
    "A train travels at 60 mph for 2.5 hours, so it covers 150 miles.",
    "Hello! How can I help you today? I am Forge-1, a helpful assistant.",
] * 20


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    """Seed every RNG and restore torch's default dtype, so tests cannot leak into each other."""
    dtype = torch.get_default_dtype()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Forge1Tokenizer:
    return Forge1Tokenizer.train(CORPUS, vocab_size=400)


@pytest.fixture
def tiny_config(tiny_tokenizer: Forge1Tokenizer) -> Forge1Config:
    """2 layers, dim 64, GQA 4/2, vocab of the tiny tokenizer padded to 64."""
    return Forge1Config(vocab_size=tiny_tokenizer.get_vocab_size_padded(), dim=64, n_layers=2,
                        n_heads=4, n_kv_heads=2, ffn_dim=176, max_seq_len=128)


@pytest.fixture(scope="session")
def default_tokenizer() -> Forge1Tokenizer:
    return Forge1Tokenizer()
