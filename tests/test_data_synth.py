"""Built-in reasoning data: determinism, disjoint splits, checkable answers, the JSONL output."""

from __future__ import annotations

import json

import pytest

from aethermind.chat_format import parse
from aethermind.data import synth


def test_make_split_is_deterministic_for_a_seed():
    assert synth.make_split("train", 300, seed=3) == synth.make_split("train", 300, seed=3)
    assert synth.make_split("train", 300, seed=3) != synth.make_split("train", 300, seed=4)


def test_train_and_test_never_share_a_question_across_seeds():
    train = {e.question for e in synth.make_split("train", 4000, seed=0)}
    test = {e.question for e in synth.make_split("test", 1000, seed=1)}
    assert train and test and not train & test


def test_every_task_appears_in_both_splits():
    for split in ("train", "test"):
        tasks = {e.task for e in synth.make_split(split, 200)}
        assert tasks == set(synth.TASKS), split


def test_every_generated_answer_scores_correct():
    for ex in synth.make_split("train", 2000) + synth.make_split("test", 500):
        assert synth.score(ex.question, ex.answer), ex


def test_guide_prompts_are_in_train():
    questions = {e.question for e in synth.make_split("train", 500)}
    assert set(synth.GUIDE_PROMPTS) <= questions


@pytest.mark.parametrize(("question", "answer"), [
    ("What is 15 * 23?", "345"),
    ("What is 15 * 23?", " The answer is 345. "),
    ("What is 500 + 700?", "1,200"),
    ("What is 3 - 7?", "-4"),
    ("If a train travels at 60mph for 2.5 hours, how far does it go?", "150 miles"),
    ("If a train travels at 60 mph for 2.5 hours, how far does it go?", "150"),
    ("How long does it take a car to travel 150 miles at 60 mph?", "2.5 hours"),
    ("Convert 3 kilometers to meters.", "3000 m"),
    ("What is the capital of France?", "paris"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Sort these numbers: 5, 2, 8, 1, 9", "1, 2, 5, 8, 9"),
    ("Sort these numbers: 5, 2, 8, 1, 9", "1 2 5 8 9"),
    ("Sort these numbers from largest to smallest: 5, 2, 8", "8, 5, 2"),
    ("Sort 3, 1, 2", "1, 2, 3"),
    ("Sort the numbers 3, 1, 2 in descending order.", "3, 2, 1"),
    ("What is 2+2?", "4"),
    ("What is 7 + 8?", "15"),
    ("I have 3 apples and eat one. How many apples are left?", "2"),
    ("I have 3 apples and eat one. How many apples are left?", "2 apples"),
    ("Zoe has 4 pens and gets 3 more. How many pens does Zoe have now?", "7"),
    ("Hello! Who are you?", "I am Forge-1, a helpful thinking AI assistant."),
    ('How many times does the letter "r" appear in "strawberry"?', "3 times"),
    ("Which is larger, 47 or 74?", "74"),
    ("Which is smaller, 47 or 74?", "47"),
    ("Hi, my name is Bob.", "Nice to meet you, Bob! How can I help you today?"),
])
def test_score_accepts_right_answers_in_common_forms(question, answer):
    assert synth.score(question, answer)


@pytest.mark.parametrize(("question", "answer"), [
    ("What is 15 * 23?", "3450"),
    ("What is 15 * 23?", "345 or 346"),
    ("What is 15 * 23?", ""),
    ("What is 15 * 23?", "15 * 23 = 345, no wait 346"),
    ("If a train travels at 60 mph for 2.5 hours, how far does it go?", "150 km"),
    ("Convert 3 kilometers to meters.", "3000 g"),
    ("What is the capital of France?", "Paris, France or Lyon"),
    ("What is the capital of France?", "Lyon"),
    ("Sort these numbers: 5, 2, 8, 1, 9", "1, 2, 5, 9, 8"),
    ("Sort these numbers: 5, 2, 8, 1, 9", "1, 2, 5, 8"),
    ('How many times does the letter "r" appear in "strawberry"?', "2"),
    ("Which is larger, 47 or 74?", "47"),
    ("Hello!", "Goodbye!"),
    ("I have 3 apples and eat one. How many apples are left?", "2 pens"),
    ("I have 3 apples and eat one. How many apples are left?", "3"),
])
def test_score_rejects_wrong_answers(question, answer):
    assert not synth.score(question, answer)


def test_score_raises_for_unknown_question():
    with pytest.raises(ValueError, match="not a synthetic task"):
        synth.score("Write a haiku about programming", "anything")


def test_think_tasks_have_traces_and_chat_has_none():
    for ex in synth.make_split("train", 400):
        assert (ex.thinking is None) == (ex.task == "chat"), ex


def test_corpus_texts_holds_message_text_only():
    texts = list(synth.corpus_texts(50))
    assert len(texts) == 50
    assert not any("<|" in t for t in texts)


def test_write_synth_writes_parseable_train_and_val(tmp_path):
    train, val = synth.write_synth(tmp_path, n_train=120, n_val=30, seed=0)
    rows = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 120 and len(val.read_text(encoding="utf-8").splitlines()) == 30
    conv = parse(rows[0]["text"])
    assert synth.to_conversation(synth.make_split("train", 1)[0]) == conv
    assert not list(tmp_path.glob(".*.tmp"))


def test_test_split_questions_are_unique_where_the_task_space_allows():
    big = ("add", "sub", "mul", "sort", "compare")  # small spaces (capitals) must repeat
    questions = [e.question for e in synth.make_split("test", 400) if e.task in big]
    assert len(set(questions)) == len(questions)
