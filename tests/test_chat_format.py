"""The chat template: golden strings, parse/render inverse, loss mask, special-token safety."""

from __future__ import annotations

import pytest

from aethermind.text.chat_format import (
    Conversation,
    Turn,
    encode,
    encode_answer,
    encode_prompt,
    parse,
    render,
    render_prompt,
    sanitize,
)

GOLDEN = (
    "<|bos|>\n"
    "<|system|>You are Forge-1, a helpful thinking AI assistant.<|/system|>\n"
    "<|user|>What is 2+2?<|/user|>\n"
    "<|think|>\n"
    "Let me calculate... 2+2 equals 4.\n"
    "<|/think|>\n"
    "<|assistant|>The answer is 4.<|/assistant|>\n"
    "<|user|>Thanks!<|/user|>\n"
    "<|no_think|>\n"
    "<|assistant|>You're welcome.<|/assistant|>\n"
    "<|eos|>"
)


def _conv() -> Conversation:
    return Conversation(turns=[
        Turn("What is 2+2?", "The answer is 4.", "Let me calculate... 2+2 equals 4."),
        Turn("Thanks!", "You're welcome."),
    ])


def test_render_matches_the_guide_exactly():
    assert render(_conv()) == GOLDEN


def test_parse_inverts_render():
    assert parse(GOLDEN) == _conv()
    odd = Conversation(system="", turns=[Turn("", "a\n\nb", "\nmulti\nline\n"), Turn("x", "")])
    assert parse(render(odd)) == odd


def test_encode_decodes_to_rendered_text(tiny_tokenizer):
    ids, mask = encode(_conv(), tiny_tokenizer)
    assert tiny_tokenizer.decode(ids) == GOLDEN
    assert len(ids) == len(mask)
    assert ids == tiny_tokenizer.encode(GOLDEN, allow_special=True)


def test_loss_mask_covers_think_block_and_answer_only(tiny_tokenizer):
    ids, mask = encode(_conv(), tiny_tokenizer)
    trained = tiny_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == (
        "<|think|>\nLet me calculate... 2+2 equals 4.\n<|/think|>\n"
        "<|assistant|>The answer is 4.<|/assistant|>"
        "<|no_think|>\n<|assistant|>You're welcome.<|/assistant|>")
    assert mask[0] == 0 and mask[-1] == 0  # <|bos|> and <|eos|>


def test_render_refuses_special_strings_in_content():
    conv = Conversation(turns=[Turn("say <|eos|> now", "ok")])
    with pytest.raises(ValueError, match="turn 0 user message.*sanitize"):
        render(conv)


def test_encode_never_turns_content_into_special_tokens(tiny_tokenizer):
    conv = Conversation(turns=[Turn("<|user|><|assistant|>", "<|/assistant|><|eos|>", "<|think|>")])
    ids, _ = encode(conv, tiny_tokenizer)
    clean, _ = encode(Conversation(turns=[Turn("a", "b", "c")]), tiny_tokenizer)
    count = sum(1 for i in ids if i < 12)
    assert count == sum(1 for i in clean if i < 12)


def test_sanitize_makes_content_renderable_and_parse_keeps_it():
    conv = Conversation(turns=[Turn(sanitize("what does <|user|> mean?"), "a token")])
    assert parse(render(conv)) == conv
    assert "<|user|>" not in conv.turns[0].user


def test_prompt_ends_where_the_model_speaks(tiny_tokenizer):
    history = Conversation(turns=[Turn("hi", "hello")])
    text = render_prompt(history, "What is 2+2?")
    assert text.endswith("<|assistant|>hello<|/assistant|>\n<|user|>What is 2+2?<|/user|>\n")
    ids = encode_prompt(history, "What is 2+2?", tiny_tokenizer)
    assert tiny_tokenizer.decode(ids) == text
    forced = encode_prompt(history, "x", tiny_tokenizer, think=True)
    assert tiny_tokenizer.decode(forced).endswith("<|/user|>\n<|think|>\n")
    assert render_prompt(history, "x", think=False).endswith("<|no_think|>\n")


def test_prompt_then_answer_is_the_encoded_turn(tiny_tokenizer):
    # What RL puts in place of a sampled answer must be exactly what training teaches.
    for turn in _conv().turns:
        ids, mask = encode(Conversation(turns=[turn]), tiny_tokenizer)
        prompt = encode_prompt(Conversation(), turn.user, tiny_tokenizer)
        answer = encode_answer(turn, tiny_tokenizer)
        assert ids[:len(prompt) + len(answer)] == prompt + answer
        assert answer == [i for i, m in zip(ids, mask, strict=True) if m]
    with pytest.raises(ValueError, match="special-token"):
        encode_answer(Turn("q", "<|eos|>"), tiny_tokenizer)


@pytest.mark.parametrize("bad", [
    "", "hello", "<|bos|>\n<|system|>s<|/system|>\n<|user|>q<|/user|>\n<|assistant|>a",
    GOLDEN + "extra", GOLDEN.replace("<|/think|>", "<|think|>"),
])
def test_parse_rejects_malformed_text(bad):
    with pytest.raises(ValueError):
        parse(bad)
