"""Shared fixtures: a tiny model config, a tokenizer trained in-process, seeded torch on one
thread, and the read-only artifacts several test files need (built once per session).

Session artifacts are shared: a test may read them but must never write into their folders
(copy one to tmp_path first). Helpers that build them live in _infer_helpers / _export_helpers.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _export_helpers import trained_folder
from _infer_helpers import make_tokenizer, save_final, train_tiny

from aethermind.model import cpu_gemv
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


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU the spinning OpenMP
    workers slow them down 10-30x; subprocesses that train get OMP_NUM_THREADS=1 likewise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["ours", "torch"])
def cpu_kernels(request, monkeypatch) -> str:
    """Run a decode-layer test twice: on our C kernels (`cpu_gemv.c`), and on torch's, which
    is what a machine without a C compiler or without AVX2 gets."""
    if request.param == "ours" and cpu_gemv.kernels() is None:
        pytest.skip("cpu_gemv.c does not build here (test_cpu_gemv checks where it must)")
    if request.param == "torch":
        monkeypatch.setattr(cpu_gemv, "kernels", lambda: None)
    return request.param


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


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_tokenizer: Forge1Tokenizer, tmp_path_factory) -> Path:
    """`tiny_tokenizer` saved once, for configs and commands that take a folder (read-only)."""
    return tiny_tokenizer.save(tmp_path_factory.mktemp("tiny_tokenizer") / "tokenizer")


@pytest.fixture(scope="session")
def overfit_final(tmp_path_factory) -> Path:
    """final_model/forge1_tiny_final.pt of the tiny model overfit on _infer_helpers'
    CONVERSATIONS (it thinks, then answers), in the training layout (read-only)."""
    tok = make_tokenizer()
    return save_final(train_tiny(tok), tok, tmp_path_factory.mktemp("overfit"))


@pytest.fixture(scope="session")
def export_run_dir(tmp_path_factory) -> Path:
    """An outputs-like folder holding the tied export test model (read-only: export elsewhere)."""
    out = tmp_path_factory.mktemp("export_run")
    trained_folder(out)
    return out


@pytest.fixture(scope="session")
def export_untied_dir(tmp_path_factory) -> Path:
    """As export_run_dir, with untied embeddings (read-only)."""
    out = tmp_path_factory.mktemp("export_untied")
    trained_folder(out, tied=False)
    return out
