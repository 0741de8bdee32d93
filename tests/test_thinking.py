"""Thinking pipeline: parsing edge cases, streaming, forced modes, trimming, `answer` and the
guide's `run_thinking_pipeline` wrapper, the guide snippet."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from _infer_helpers import CONVERSATIONS, make_tokenizer, train_tiny

from aethermind.inference.engine import REPLACEMENT_CHAR, Engine, PromptTooLongError
from aethermind.inference.sampling import SamplingParams
from aethermind.inference.thinking import (
    answer,
    build_prompt,
    parse_completion,
    run_thinking_pipeline,
)
from aethermind.text import chat_format as cf
from aethermind.text.thinking_split import split_thinking


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def trained(tok):
    return train_tiny(tok)


def _parse(tok, text, think=None):
    return parse_completion(tok.encode(text, allow_special=True), tok, think)


PARSE_CASES = [
    ("<|think|>\nA then B.\n<|/think|>\n<|assistant|>B<|/assistant|>", ("A then B.", "B", True)),
    ("<|no_think|>\n<|assistant|>Just B.", ("", "Just B.", False)),
    # missing <|/think|>: the answer tag still closes the thinking
    ("<|think|>\nhmm\n<|assistant|>yes", ("hmm", "yes", True)),
    # ran out of tokens while thinking
    ("<|think|>\nstill going and", ("still going and", "", True)),
    # empty answer
    ("<|no_think|>\n<|assistant|>", ("", "", False)),
    ("<|think|>\nx\n<|/think|>\n<|assistant|>   \n", ("x", "", True)),
    # missing <|assistant|>: loose text after the choice is the answer
    ("<|no_think|>\nHello there", ("", "Hello there", False)),
    ("<|think|>\nq\n<|/think|>\nloose answer", ("q", "loose answer", True)),
    # no tags at all
    ("  plain words ", ("", "plain words", False)),
    ("", ("", "", False)),
]


@pytest.mark.parametrize("text, expected", PARSE_CASES)
def test_parse_completion_edge_cases(tok, text, expected):
    assert _parse(tok, text) == expected


@pytest.mark.parametrize("text, expected", PARSE_CASES)
def test_split_thinking_on_text_follows_the_same_rule(text, expected):
    """The text helper other tools' output goes through splits as our id-based router does."""
    assert split_thinking(text) == expected[:2]


@pytest.mark.parametrize("text, expected", [
    # what transformers decode(skip_special_tokens=True) and llama.cpp return: the think tags
    # stay, <|assistant|> and <|/assistant|> are dropped
    ("<|think|>\nA then B.\n<|/think|>\nB", ("A then B.", "B")),
    ("\nJust B.", ("", "Just B.")),
    # enable_thinking=True put <|think|> in the prompt: the reply only closes the block
    ("reasoning\n<|/think|>\n42", ("reasoning", "42")),
    ("<|think|>\ncut off while thinking", ("cut off while thinking", "")),
])
def test_split_thinking_on_what_tools_decode(text, expected):
    assert split_thinking(text) == expected


def test_split_thinking_forced_modes_match_the_router(tok):
    for think in (True, False):
        for text in ("reasoning\n<|/think|>\n<|assistant|>42", "<|assistant|>42", "plain"):
            assert split_thinking(text, think) == _parse(tok, text, think)[:2], (text, think)


def test_parse_forced_thinking_starts_inside_the_block(tok):
    assert _parse(tok, "reasoning\n<|/think|>\n<|assistant|>42", think=True) == \
        ("reasoning", "42", True)
    assert _parse(tok, "<|assistant|>42", think=False) == ("", "42", False)


def test_tag_text_typed_as_plain_text_is_not_a_tag(tok):
    ids = cf.encode_prompt(cf.Conversation(), "x", tok)[:0] + tok.encode("<|think|> hi")
    assert parse_completion(ids, tok) == ("", "<|think|> hi", False)


def test_pipeline_thinks_and_answers(trained, tok):
    r = run_thinking_pipeline(trained, tok, "What is 2+2?", max_new_tokens=60, temperature=0)
    assert (r.used_thinking, r.thinking, r.answer) == (True, "2 plus 2 makes 4.",
                                                       "The answer is 4.")
    assert r.finish_reason == "stop"
    assert r.prompt_tokens == len(cf.encode_prompt(cf.Conversation(), "What is 2+2?", tok))
    assert 0 < r.time_to_first_token_s <= r.seconds
    assert r.completion_tokens > len(tok.encode("2 plus 2 makes 4. The answer is 4."))


def test_pipeline_streams_pieces_that_concatenate_to_the_result(trained, tok):
    for conv in CONVERSATIONS:
        parts: dict[str, list[str]] = {"thinking": [], "answer": []}

        def collect(part, text, parts=parts):
            parts[part].append(text)

        r = run_thinking_pipeline(trained, tok, conv.turns[0].user, max_new_tokens=60,
                                  temperature=0, stream=collect)
        assert "".join(parts["thinking"]) == r.thinking == (conv.turns[0].thinking or "")
        assert "".join(parts["answer"]) == r.answer == conv.turns[0].assistant
        assert not any(REPLACEMENT_CHAR in p for p in parts["thinking"] + parts["answer"])
    assert any(not c.isascii() for c in r.answer + CONVERSATIONS[1].turns[0].assistant)


def test_force_thinking_off_and_on(trained, tok):
    off = run_thinking_pipeline(trained, tok, "What is 2+2?", 60, 0, force_thinking=False)
    assert not off.used_thinking and off.thinking == ""
    on = run_thinking_pipeline(trained, tok, "What is the capital of France?", 40, 0,
                               force_thinking=True)
    assert on.used_thinking


def test_ran_out_of_tokens_reports_length(trained, tok):
    r = run_thinking_pipeline(trained, tok, "What is 2+2?", max_new_tokens=4, temperature=0)
    assert r.finish_reason == "length" and r.completion_tokens == 4
    assert r.used_thinking and r.answer == ""


def test_seeded_pipeline_is_reproducible(trained, tok):
    kw = dict(max_new_tokens=30, temperature=1.5, top_k=20, top_p=0.95, seed=7)
    a = run_thinking_pipeline(trained, tok, "Sort 3, 1, 2", **kw)
    b = run_thinking_pipeline(trained, tok, "Sort 3, 1, 2", **kw)
    assert (a.thinking, a.answer) == (b.thinking, b.answer)


def _texts(r):
    return r.thinking, r.answer, r.used_thinking, r.finish_reason, r.completion_tokens


def test_wrapper_maps_each_sampling_option_to_its_field(trained, tok, monkeypatch):
    """The guide's wrapper hands the engine one SamplingParams holding exactly its loose options,
    and gives what `answer` gives with that SamplingParams (same seed, same tokens)."""
    kw = dict(max_new_tokens=30, temperature=1.5, top_k=20, top_p=0.95, seed=7,
              repetition_penalty=1.3)
    given = []
    real_generate = Engine.generate

    def spy(self, prompt_ids, params, *args, **kwargs):
        given.append(params)
        return real_generate(self, prompt_ids, params, *args, **kwargs)

    monkeypatch.setattr(Engine, "generate", spy)
    wrapped = run_thinking_pipeline(trained, tok, "Sort 3, 1, 2", **kw)
    assert given == [SamplingParams(**kw)]
    direct = answer(Engine(trained, max_batch_size=1), tok, "Sort 3, 1, 2", SamplingParams(**kw))
    assert _texts(direct) == _texts(wrapped)


def test_answer_passes_history_system_and_think_on(trained, tok, monkeypatch):
    seen = {}
    real_generate = Engine.generate

    def spy(self, prompt_ids, *args, **kwargs):
        seen["prompt"] = list(prompt_ids)
        return real_generate(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(Engine, "generate", spy)
    history = [cf.Turn("What is 2+2?", "The answer is 4.")]
    r = answer(Engine(trained), tok, "What is 2+2?", SamplingParams(max_new_tokens=8,
               temperature=0), history=history, system="SYS", think=False)
    conv = cf.Conversation(turns=history, system="SYS")
    assert seen["prompt"] == cf.encode_prompt(conv, "What is 2+2?", tok, think=False)
    assert not r.used_thinking and r.prompt_tokens == len(seen["prompt"])


def test_answer_reuses_one_engine_across_messages(trained, tok):
    engine = Engine(trained, max_batch_size=1)
    greedy = SamplingParams(max_new_tokens=60, temperature=0)
    first = answer(engine, tok, "What is 2+2?", greedy)
    assert not engine.has_work()
    assert _texts(answer(engine, tok, "What is 2+2?", greedy)) == _texts(first)
    assert first.answer == "The answer is 4."


def test_history_turns_are_trimmed_oldest_first_keeping_the_system_prompt(tok):
    history = [cf.Turn(f"question number {i}", f"answer {i}") for i in range(30)]
    ids, dropped = build_prompt(tok, "last question", history=history, system_prompt="SYS",
                                max_seq_len=128, max_new_tokens=32)
    assert 0 < dropped < 30 and len(ids) + 32 <= 128
    text = tok.decode(ids)
    assert text.startswith("<|bos|>\n<|system|>SYS<|/system|>")
    assert "question number 29" in text and "question number 0<" not in text
    assert text.endswith("<|user|>last question<|/user|>\n")


def test_message_that_cannot_fit_is_refused(trained, tok):
    with pytest.raises(PromptTooLongError, match="message too long"):
        run_thinking_pipeline(trained, tok, "word " * 200, max_new_tokens=16)


def test_pipeline_trims_history_instead_of_failing(trained, tok):
    history = [{"user": "What is 2+2?" * 3, "assistant": "The answer is 4.",
                "thinking": "2 plus 2 makes 4."}] * 10
    r = run_thinking_pipeline(trained, tok, "What is 2+2?", 16, 0, history=history)
    assert r.dropped_turns > 0 and r.prompt_tokens + 16 <= 128


def test_guide_manual_testing_snippet_shape(tmp_path, monkeypatch):
    """The guide's snippet (section 5), tiny instead of nano, through the guide's import paths."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # its sys.path line
    from inference.thinking_pipeline import run_thinking_pipeline as guide_run
    from model.architecture import Forge1Config, Forge1Model
    from model.tokenizer import Forge1Tokenizer

    config = Forge1Config.tiny(n_layers=1, dim=64, ffn_dim=128)
    tokenizer = Forge1Tokenizer()
    config.vocab_size = tokenizer.get_vocab_size_padded()
    path = tmp_path / "forge1_tiny_final.pt"
    torch.save(Forge1Model(config).state_dict(), path)
    model = Forge1Model(config)
    model.load_state_dict(torch.load(path, map_location="cpu"))
    model.eval()
    assert guide_run is run_thinking_pipeline
    result = guide_run(model=model, tokenizer=tokenizer, user_message="What is the meaning of "
                       "life?", max_new_tokens=8, temperature=0.7, device="cpu")
    assert isinstance(result.thinking, str) and isinstance(result.answer, str)
    if not torch.cuda.is_available():  # the guide says device="cuda": fall back, with a warning
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            guide_run(model=model, tokenizer=tokenizer, user_message="hi", max_new_tokens=2,
                      temperature=0.7, device="cuda")
        assert any("CPU" in str(w.message) for w in caught)
