"""The whole eager decode step in one C call (`cpu_decode.DecodeStep`, `aek_decode`): the same
logits and KV cache as the torch step it replaces, on shapes that exercise every padding and
tail (head size not a multiple of 8, widths not a multiple of 16 or 32, rows at different
positions), and the torch step wherever it cannot run the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.model import cpu_gemv
from aethermind.model.config import Forge1Config
from aethermind.model.cpu_decode import DecodeStep
from aethermind.model.transformer import Forge1Model

# Rounding apart, the C step must be the torch step; int8's activation codes may flip where
# the two sums differ in the last bit, one quantization step of one value.
TOLERANCE = {"fp32": 2e-5, "bf16": 2e-5, "int8": 2e-3}


@pytest.fixture
def odd_model() -> Forge1Model:
    """Head size 18, width 72, FFN 100, vocabulary 322: no multiple of 8, 16 or 32 anywhere
    (nor of 4 in the output rows)."""
    torch.manual_seed(0)
    cfg = Forge1Config(vocab_size=322, dim=72, n_layers=2, n_heads=4, n_kv_heads=2,
                       ffn_dim=100, max_seq_len=64)
    return Forge1Model(cfg).eval()


def _running(engine: Engine, lengths: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Prefill prompts of `lengths` and decode two steps; the next step's ids and positions,
    with the middle slot freed (a filler row, as the engine sends)."""
    vocab = engine.model.config.vocab_size
    seqs = [engine.add(torch.randint(3, vocab, (n,)).tolist(),
                       SamplingParams(temperature=0, max_new_tokens=30)) for n in lengths]
    for _ in range(3):
        engine.step()
    engine.cancel(seqs[1])
    engine.step()
    ids, positions = [0] * len(lengths), [0] * len(lengths)
    for seq in engine._slots:
        if seq is not None:
            ids[seq.slot] = seq.tokens[-1]
            positions[seq.slot] = len(seq.prompt) + len(seq.tokens) - 1
    return ids, positions


def _head_model(head_dim: int, n_heads: int, n_kv_heads: int) -> Forge1Model:
    """Head sizes the C step has its own attention for (32: tiny, 64: nano, mini), with two
    and three query heads a KV head."""
    torch.manual_seed(0)
    cfg = Forge1Config(vocab_size=322, dim=head_dim * n_heads, n_layers=2, n_heads=n_heads,
                       n_kv_heads=n_kv_heads, ffn_dim=100, max_seq_len=128)
    return Forge1Model(cfg).eval()


@pytest.mark.parametrize(("dtype", "shape"), [
    ("fp32", None), ("bf16", None), ("int8", None),
    # past a block of 32 positions, lengths not a multiple of 4: every loop's tail
    ("fp32", (32, 6, 2)), ("fp32", (64, 4, 2)), ("bf16", (64, 3, 1))])
def test_one_c_call_gives_the_torch_steps_logits_and_cache(odd_model, dtype, shape):
    if cpu_gemv.kernels() is None:
        pytest.skip("cpu_gemv.c does not build here: the engine keeps the torch step")
    model = odd_model if shape is None else _head_model(*shape)
    engine = Engine(model, max_batch_size=3, dtype=dtype)
    assert engine._c_step is not None
    ids, positions = _running(engine, (5, 9, 17) if shape is None else (5, 38, 71))
    assert len(set(positions)) == 3  # three rows, three lengths (the middle one a filler)
    k, v = engine.cache.k.clone(), engine.cache.v.clone()
    with torch.inference_mode():
        ours = engine._c_step(ids, positions)
        ours_k, ours_v = engine.cache.k.clone(), engine.cache.v.clone()
        engine.cache.k.copy_(k)
        engine.cache.v.copy_(v)
        want = engine._torch_decode(ids, positions)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(ours, want, atol=tol, rtol=tol)
    torch.testing.assert_close(ours_k, engine.cache.k, atol=tol, rtol=tol)
    torch.testing.assert_close(ours_v, engine.cache.v, atol=tol, rtol=tol)
    assert not torch.equal(ours_k, k)  # it did write this step's keys


def test_greedy_tokens_through_the_c_step_are_the_torch_steps(odd_model, cpu_kernels):
    """The same engine run with and without our kernels: the same tokens, many steps on."""
    prompts = [torch.randint(3, 322, (n,), generator=torch.Generator().manual_seed(n)).tolist()
               for n in (4, 11, 7)]
    engine = Engine(odd_model, max_batch_size=3)
    assert (engine._c_step is not None) == (cpu_kernels == "ours")
    got = [g.tokens for g in engine.generate_batch(
        prompts, SamplingParams(temperature=0, max_new_tokens=40))]
    with torch.inference_mode():
        want = []
        for p in prompts:  # a full forward per token: no cache, no kernels of ours
            ids = list(p)
            for _ in range(40):
                ids.append(int(odd_model(torch.tensor([ids]))[0, -1].argmax()))
            want.append(ids[len(p):])
    assert got == want


def test_a_model_it_does_not_know_keeps_the_torch_step(odd_model):
    if cpu_gemv.kernels() is None:
        pytest.skip("cpu_gemv.c does not build here")
    engine = Engine(odd_model, max_batch_size=2)
    assert engine._c_step is not None
    wrapped = engine.model
    wrapped.layers[1].mlp.w_down = nn.Linear(100, 72, bias=False)  # e.g. an unmerged adapter
    assert DecodeStep.for_model(wrapped, engine.cache) is None
    assert DecodeStep.for_model(engine.model.train(), engine.cache) is None


def test_a_position_past_the_cache_is_an_error_not_a_crash(odd_model):
    if cpu_gemv.kernels() is None:
        pytest.skip("cpu_gemv.c does not build here")
    step = Engine(odd_model, max_batch_size=2, max_seq_len=32)._c_step
    with pytest.raises(RuntimeError, match="kernel error -1"):
        step([1], [32])
    with pytest.raises(RuntimeError, match="kernel error -1"):
        step([322], [0])  # a token id past the vocabulary
    with pytest.raises(RuntimeError, match="kernel error -1"):
        step([1, 1, 1], [0, 0, 0])  # more rows than the cache has slots
