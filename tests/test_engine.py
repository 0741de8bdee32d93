"""Engine: KV-cache decoding, batching, sampling rules, stops, context limits, streaming text."""

from __future__ import annotations

import pytest
import torch
from _infer_helpers import make_tokenizer

from aethermind.engine import (
    REPLACEMENT_CHAR,
    Engine,
    PromptTooLongError,
    SamplingParams,
    TextStream,
    apply_repetition_penalty,
    filter_logits,
    sample_next,
)
from aethermind.model import Forge1Model


@pytest.fixture
def model(tiny_config) -> Forge1Model:
    return Forge1Model(tiny_config).eval()


def _prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(12, vocab, (n,), generator=g).tolist()


@torch.no_grad()
def _greedy_no_cache(model, prompt, n, penalty=1.0):
    """Reference: a full forward over the whole sequence for every new token."""
    ids = list(prompt)
    out = []
    for _ in range(n):
        logits = model(torch.tensor([ids]))[0][0, -1]
        if penalty != 1.0 and out:
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen[out] = True
            logits = torch.where(seen, torch.where(logits > 0, logits / penalty,
                                                   logits * penalty), logits)
        out.append(int(logits.argmax()))
        ids.append(out[-1])
    return out


def test_greedy_with_kv_cache_equals_no_cache_loop(model):
    prompt = _prompt(17, model.config.vocab_size)
    gen = Engine(model).generate(prompt, SamplingParams(max_new_tokens=40))
    assert gen.tokens == _greedy_no_cache(model, prompt, 40)
    assert gen.finish_reason == "length"


def test_repetition_penalty_matches_reference_loop(model):
    prompt = _prompt(9, model.config.vocab_size, seed=1)
    params = SamplingParams(max_new_tokens=30, repetition_penalty=1.8)
    gen = Engine(model).generate(prompt, params)
    assert gen.tokens == _greedy_no_cache(model, prompt, 30, penalty=1.8)
    assert gen.tokens != Engine(model).generate(prompt, SamplingParams(max_new_tokens=30)).tokens


def test_repetition_penalty_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_batch_generation_equals_one_at_a_time(model):
    vocab = model.config.vocab_size
    prompts = [_prompt(n, vocab, seed=n) for n in (5, 23, 1, 12)]
    engine = Engine(model)
    single = [engine.generate(p, SamplingParams(max_new_tokens=20)).tokens for p in prompts]
    # Stop on a token that appears mid-way in some rows so rows finish at different steps.
    stop = single[1][6]
    batch = engine.generate_batch(prompts, SamplingParams(max_new_tokens=20), stop_ids=[stop])
    for ref, got in zip(single, batch, strict=True):
        expected = ref[:ref.index(stop)] if stop in ref else ref
        assert got.tokens == expected
        assert got.finish_reason == ("stop" if stop in ref else "length")


def test_seeded_sampling_is_deterministic(model):
    prompt = _prompt(8, model.config.vocab_size)
    engine = Engine(model)

    def run(seed):
        return engine.generate(prompt, SamplingParams(max_new_tokens=30, temperature=1.0,
                                                      seed=seed)).tokens

    state = torch.random.get_rng_state()
    assert run(123) == run(123)
    assert run(123) != run(124)
    assert torch.equal(state, torch.random.get_rng_state()), "sampling touched the global RNG"


def test_temperature_zero_is_argmax(model):
    logits = torch.randn(3, 50)
    assert torch.equal(sample_next(logits, SamplingParams(temperature=0)), logits.argmax(-1))
    prompt = _prompt(6, model.config.vocab_size)
    with torch.no_grad():
        first = int(model(torch.tensor([prompt]))[0][0, -1].argmax())
    gen = Engine(model).generate(prompt, SamplingParams(max_new_tokens=1, temperature=0))
    assert gen.tokens == [first]


def test_top_k_samples_only_the_k_most_likely():
    logits = torch.randn(1, 100)
    top3 = set(torch.topk(logits, 3).indices[0].tolist())
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=2.0, top_k=3)
    drawn = {int(sample_next(logits, params, gen)) for _ in range(200)}
    assert drawn == top3
    assert int(sample_next(logits, SamplingParams(temperature=1.0, top_k=1), gen)) == \
        int(logits.argmax())


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(filter_logits(logits, None, p))[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.5) == [1]
    assert kept(0.7) == [1, 3]
    assert kept(0.9) == [1, 2, 3]
    assert kept(1.0) == [0, 1, 2, 3]
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=1.0, top_p=0.7)
    assert {int(sample_next(logits, params, gen)) for _ in range(200)} == {1, 3}


def test_stop_token_ends_generation_and_is_not_returned(model):
    prompt = _prompt(10, model.config.vocab_size)
    engine = Engine(model)
    free = engine.generate(prompt, SamplingParams(max_new_tokens=30)).tokens
    stop = free[5]
    gen = engine.generate(prompt, SamplingParams(max_new_tokens=30), stop_ids={stop, 99999})
    assert gen.tokens == free[:free.index(stop)]
    assert (gen.finish_reason, gen.stop_token) == ("stop", stop)


def test_on_token_sees_every_returned_token(model):
    seen = []
    gen = Engine(model).generate(_prompt(4, model.config.vocab_size),
                                 SamplingParams(max_new_tokens=12), on_token=seen.append)
    assert seen == gen.tokens and len(seen) == 12


def test_max_new_tokens_is_clipped_to_the_context(model):
    ctx = model.config.max_seq_len
    gen = Engine(model).generate(_prompt(ctx - 3, model.config.vocab_size),
                                 SamplingParams(max_new_tokens=50))
    assert len(gen.tokens) == 3 and gen.finish_reason == "length"


def test_prompt_filling_the_context_is_refused(model):
    ctx = model.config.max_seq_len
    with pytest.raises(PromptTooLongError, match="shorten it by at least 1 tokens"):
        Engine(model).generate(_prompt(ctx, model.config.vocab_size))
    with pytest.raises(PromptTooLongError):
        Engine(model).generate_batch([[1, 2], _prompt(ctx + 5, model.config.vocab_size)])


def test_sampling_params_reject_bad_values():
    for bad in (dict(temperature=-1), dict(top_p=0.0), dict(top_k=-2),
                dict(repetition_penalty=0), dict(max_new_tokens=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


TEXTS = ["こんにちは 😀 世界", "héllo wörld 🗼🚀 ok", "plain ascii text", "混合 mixed 😀😀"]


@pytest.fixture(scope="module")
def emoji_tokenizer():
    return make_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_text_stream_never_splits_a_character(text, emoji_tokenizer):
    tok = emoji_tokenizer
    ids = tok.encode(text)
    stream = TextStream(tok.decode)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any(REPLACEMENT_CHAR in p for p in pieces)
    if not text.isascii():  # a multi-byte character spans tokens: some must be held back
        assert any(p == "" for p in pieces[:-1])
