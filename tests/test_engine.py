"""Engine: KV-cache decoding, continuous batching, seeded and penalised sampling through the loop,
stops, context limits, streaming text. The sampling rules themselves: test_sampling.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from _infer_helpers import make_tokenizer

from aethermind.inference.engine import (
    PREFILL_TOKENS,
    REPLACEMENT_CHAR,
    Engine,
    GenerationError,
    PromptTooLongError,
    TextStream,
    TokenEvent,
    _prefill_groups,
)
from aethermind.inference.sampling import SamplingParams
from aethermind.model.transformer import Forge1Model


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.0, **kw)


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
        logits = model(torch.tensor([ids]))[0, -1]
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
    gen = Engine(model).generate(prompt, greedy(40))
    assert gen.tokens == _greedy_no_cache(model, prompt, 40)
    assert gen.finish_reason == "length"


def test_repetition_penalty_matches_reference_loop(model):
    prompt = _prompt(9, model.config.vocab_size, seed=1)
    params = greedy(30, repetition_penalty=1.8)
    gen = Engine(model).generate(prompt, params)
    assert gen.tokens == _greedy_no_cache(model, prompt, 30, penalty=1.8)
    assert gen.tokens != Engine(model).generate(prompt, greedy(30)).tokens


def test_batch_generation_equals_one_at_a_time(model):
    vocab = model.config.vocab_size
    prompts = [_prompt(n, vocab, seed=n) for n in (5, 23, 1, 12)]
    engine = Engine(model)
    single = [engine.generate(p, greedy(20)).tokens for p in prompts]
    # Stop on a token that appears mid-way in some rows so rows finish at different steps.
    stop = single[1][6]
    batch = engine.generate_batch(prompts, greedy(20), stop_ids=[stop])
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
    prompt = _prompt(6, model.config.vocab_size)
    with torch.no_grad():
        first = int(model(torch.tensor([prompt]))[0, -1].argmax())
    gen = Engine(model).generate(prompt, greedy(1))
    assert gen.tokens == [first]


def test_stop_token_ends_generation_and_is_not_returned(model):
    prompt = _prompt(10, model.config.vocab_size)
    engine = Engine(model)
    free = engine.generate(prompt, greedy(30)).tokens
    stop = free[5]
    gen = engine.generate(prompt, greedy(30), stop_ids={stop, 99999})
    assert gen.tokens == free[:free.index(stop)]
    assert (gen.finish_reason, gen.stop_token) == ("stop", stop)


def test_on_token_sees_every_returned_token(model):
    seen = []
    gen = Engine(model).generate(_prompt(4, model.config.vocab_size),
                                 greedy(12), on_token=seen.append)
    assert seen == gen.tokens and len(seen) == 12


def test_max_new_tokens_is_clipped_to_the_context(model):
    ctx = model.config.max_seq_len
    gen = Engine(model).generate(_prompt(ctx - 3, model.config.vocab_size),
                                 greedy(50))
    assert len(gen.tokens) == 3 and gen.finish_reason == "length"


def test_prompt_filling_the_context_is_refused(model):
    ctx = model.config.max_seq_len
    with pytest.raises(PromptTooLongError, match="shorten it by at least 1 tokens"):
        Engine(model).generate(_prompt(ctx, model.config.vocab_size))
    with pytest.raises(PromptTooLongError):
        Engine(model).generate_batch([[1, 2], _prompt(ctx + 5, model.config.vocab_size)])


def _drain(engine: Engine) -> dict[int, list[TokenEvent]]:
    events: dict[int, list[TokenEvent]] = {}
    while engine.has_work():
        for ev in engine.step():
            events.setdefault(ev.seq_id, []).append(ev)
    return events


def _tokens(events: list[TokenEvent]) -> list[int]:
    return [ev.token for ev in events if ev.token is not None]


def test_sequences_join_and_leave_without_changing_each_others_tokens(model):
    vocab = model.config.vocab_size
    prompts = [_prompt(n, vocab, seed=10 + n) for n in (7, 19, 3, 11)]
    # Penalised greedy: varied tokens, so any leak between rows would show.
    params = greedy(16, repetition_penalty=5.0)
    alone = [Engine(model, max_batch_size=1).generate(p, params).tokens for p in prompts]
    assert all(len(set(t)) > 8 for t in alone)
    engine = Engine(model, max_batch_size=3)
    a, b = engine.add(prompts[0], params), engine.add(prompts[1], params)
    events: dict[int, list[TokenEvent]] = {}
    for i in range(12):
        if i == 4:
            c = engine.add(prompts[2], params)  # joins mid-way, into the free third slot
        if i == 5:
            d = engine.add(prompts[3], params)  # queued: every slot is busy
        if i == 6:
            engine.cancel(b)  # leaves mid-way: d takes its slot, rows now non-contiguous
        for ev in engine.step():
            events.setdefault(ev.seq_id, []).append(ev)
    events_rest = _drain(engine)
    for k, v in events_rest.items():
        events.setdefault(k, []).extend(v)
    assert _tokens(events[a]) == alone[0]
    assert _tokens(events[c]) == alone[2]
    assert _tokens(events[d]) == alone[3]
    assert _tokens(events[b]) == alone[1][:6]  # six steps ran before the cancel
    assert events[b][-1] == TokenEvent(b, None, True, "cancelled")
    for seq in (a, c, d):
        assert [ev.finished for ev in events[seq]] == [False] * 15 + [True]
        assert events[seq][-1].finish_reason == "length"
    assert not engine.has_work()


def test_prompts_admitted_together_are_prefilled_as_one_padded_batch(model):
    """Neighbouring slots with prompts of similar length share one prefill call; a much longer
    prompt goes alone (its padding would cost more than it saves). Every sequence still gets
    the tokens it gets alone: the padding stays behind each row's mask."""
    vocab = model.config.vocab_size
    prompts = [_prompt(n, vocab, seed=30 + n) for n in (9, 11, 10, 40)]
    params = greedy(12, repetition_penalty=5.0)
    alone = [Engine(model, max_batch_size=1).generate(p, params).tokens for p in prompts]
    engine = Engine(model, max_batch_size=4)
    calls, real = [], engine.model.hidden
    engine.model.hidden = lambda ids, *a, **kw: calls.append(tuple(ids.shape)) or real(
        ids, *a, **kw)
    batch = engine.generate_batch(prompts, params)
    assert [g.tokens for g in batch] == alone
    assert calls[:2] == [(3, 11), (1, 40)]  # then one row per running sequence
    assert all(t == 1 for _, t in calls[2:])


def test_prefill_groups_follow_slots_padding_and_size():
    def seqs(*slot_len):
        return [SimpleNamespace(slot=slot, prompt=[1] * n) for slot, n in slot_len]

    def shape(groups):
        return [[s.slot for s in g] for g in groups]

    assert shape(_prefill_groups(seqs((0, 20), (1, 22), (2, 18)))) == [[0, 1, 2]]
    assert shape(_prefill_groups(seqs((0, 20), (2, 20)))) == [[0], [2]]  # not neighbours
    assert shape(_prefill_groups(seqs((0, 300), (1, 100)))) == [[0], [1]]  # 200 tokens of pad
    assert shape(_prefill_groups(seqs((0, 3), (1, 30)))) == [[0, 1]]  # little padding in all
    big = PREFILL_TOKENS // 2
    assert shape(_prefill_groups(seqs((0, big), (1, big), (2, big)))) == [[0, 1], [2]]
    assert shape(_prefill_groups(seqs((0, 3 * PREFILL_TOKENS)))) == [[0]]  # alone, any length


def test_each_sequence_keeps_its_own_params_and_seed_in_a_batch(model):
    vocab = model.config.vocab_size
    prompts = [_prompt(n, vocab, seed=n) for n in (6, 14, 9)]
    params = [SamplingParams(max_new_tokens=12, temperature=1.0, seed=5),
              greedy(12, repetition_penalty=1.5),
              SamplingParams(max_new_tokens=7, temperature=0.8, top_k=20, seed=9)]
    alone = [Engine(model, max_batch_size=1).generate(p, sp).tokens
             for p, sp in zip(prompts, params, strict=True)]
    batch = Engine(model, max_batch_size=2).generate_batch(prompts, params)
    assert [g.tokens for g in batch] == alone
    assert [len(g.tokens) for g in batch] == [12, 12, 7]


def _poison(engine: Engine, victim: set[int]) -> None:
    """NaN logits for the sequences in `victim` (what a broken model gives)."""
    real = engine._sample

    def sample(seqs, logits):
        for i, seq in enumerate(seqs):
            if seq.id in victim:
                logits[i, 3] = float("nan")
        return real(seqs, logits)

    engine._sample = sample


@pytest.mark.parametrize("victim_params", [greedy(12), SamplingParams(max_new_tokens=12)])
def test_a_sequence_that_cannot_be_sampled_fails_alone(model, victim_params):
    vocab = model.config.vocab_size
    prompts = [_prompt(6, vocab, seed=1), _prompt(9, vocab, seed=2)]
    params = greedy(12, repetition_penalty=5.0)
    alone = Engine(model, max_batch_size=1).generate(prompts[0], params).tokens
    engine = Engine(model, max_batch_size=2)
    a, b = engine.add(prompts[0], params), engine.add(prompts[1], victim_params)
    _poison(engine, {b})
    events = _drain(engine)
    assert _tokens(events[a]) == alone
    assert events[b] == [TokenEvent(b, None, True, "error")]
    assert not engine.has_work()


def test_generate_and_stream_raise_for_unsampleable_scores_and_free_the_engine(model):
    engine = Engine(model, max_batch_size=1)
    prompt = _prompt(5, model.config.vocab_size)
    _poison(engine, set(range(10)))
    with pytest.raises(GenerationError, match="could not be sampled"):
        engine.generate(prompt, greedy(4))
    with pytest.raises(GenerationError):
        list(engine.stream(prompt, greedy(4)))
    assert not engine.has_work()


def test_step_reports_one_event_per_advancing_sequence(model):
    engine = Engine(model, max_batch_size=2)
    prompt = _prompt(5, model.config.vocab_size)
    params = greedy(4, repetition_penalty=5.0)  # a random model repeats itself; this does not
    first = engine.generate(prompt, params).tokens
    assert len(set(first)) == 4
    stop = first[2]
    ids = [engine.add(prompt, params, stop_ids={stop}),
           engine.add(prompt, greedy(2, repetition_penalty=5.0)), engine.add(prompt, greedy(0))]
    steps = []
    while engine.has_work():
        steps.append([(ev.seq_id, ev.token, ev.finished, ev.finish_reason)
                      for ev in engine.step()])
    s0, s1, s2 = ids
    assert steps == [
        [(s0, first[0], False, None), (s1, first[0], False, None)],
        [(s0, first[1], False, None), (s1, first[1], True, "length")],
        [(s2, None, True, "length"), (s0, None, True, "stop")],  # s2 waited for a free slot
    ]


def test_stream_yields_generate_tokens_and_closing_it_frees_the_engine(model):
    engine = Engine(model, max_batch_size=1)
    prompt = _prompt(8, model.config.vocab_size)
    full = engine.generate(prompt, greedy(10)).tokens
    assert list(engine.stream(prompt, greedy(10))) == full
    it = engine.stream(prompt, greedy(10))
    assert [next(it) for _ in range(3)] == full[:3]
    it.close()
    assert not engine.has_work()
    assert engine.generate(prompt, greedy(10)).tokens == full


def test_a_driven_engine_refuses_generate_and_add_refuses_a_long_prompt(model):
    engine = Engine(model, max_batch_size=1, max_seq_len=32)
    with pytest.raises(PromptTooLongError, match="32-token context"):
        engine.add(_prompt(32, model.config.vocab_size))
    engine.add([1, 2, 3], greedy(5))
    with pytest.raises(RuntimeError, match="add\\(\\)/step\\(\\)"):
        engine.generate([1, 2], greedy(5))
    with pytest.raises(ValueError, match="max_seq_len=999"):
        Engine(model, max_seq_len=999)


def test_decode_step_traces_as_one_graph(model):
    """Fixed cache + explicit positions: torch.compile captures decode without graph breaks."""
    from aethermind.model.kv_cache import KVCache

    torch._dynamo.reset()  # other tests' compiles of forward must not use up its limit
    cache = KVCache.for_model(model, 2, 32)
    step = torch.compile(model, backend="eager", fullgraph=True)
    tokens = torch.randint(0, model.config.vocab_size, (2, 1))
    positions = torch.tensor([[3], [9]])
    with torch.no_grad():
        got = step(tokens, positions, kv_cache=cache)
        ref = model(tokens, positions, kv_cache=cache)
    torch.testing.assert_close(got, ref)


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
