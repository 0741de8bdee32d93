"""RL rewards on real record formats: built-in families, GSM8K `####`, `\\boxed{}`, malformed."""

from __future__ import annotations

import json

import pytest

from aethermind.data import synth
from aethermind.rl import rewards as rw
from aethermind.rl.sources import PromptSource, jsonl_records, parse_families, synth_records

GSM8K = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half "
                     "as many clips in May. How many clips did Natalia sell altogether?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
                   "<<48+24=72>>72 clips altogether in April and May.\n#### 72"}
MATH = {"problem": "What is $1,000 + 234$?", "solution": "Add them: $\\boxed{1{,}234}$."}


def completion(thinking: str | None, answer: str, closed: bool = True) -> str:
    head = f"<|think|>\n{thinking}\n<|/think|>\n" if thinking is not None else "<|no_think|>\n"
    return f"{head}<|assistant|>{answer}" + ("<|/assistant|>" if closed else "")


def test_reference_completion_earns_every_reward_in_every_family():
    for ex in synth.make_split("test", len(synth.TASKS)):
        record = {"task": ex.task, "question": ex.question, "thinking": ex.thinking,
                  "answer": ex.answer}
        text = completion(ex.thinking, ex.answer)
        assert rw.exact(text, record) == 1.0, ex
        if ex.thinking is not None:
            assert rw.format_reward(text, record) == 1.0, ex
            assert rw.trace(text, record) == 1.0, ex


def test_wrong_answer_scores_zero_and_partial_trace_scores_its_share():
    ex = next(e for e in synth.make_split("test", 40) if e.task == "mul")
    record = {"question": ex.question, "thinking": ex.thinking, "answer": ex.answer}
    lines = ex.thinking.splitlines()
    broken = "\n".join(lines[:2] + ["9*9=80."] + lines[3:])
    text = completion(broken, "The answer is 1.")
    assert rw.exact(text, record) == 0.0
    assert rw.trace(text, record) == pytest.approx(2 / len(lines))
    assert 0 < rw.facts(text, record) < 1


def test_digit_facts_are_checked_one_by_one():
    text = completion("7*6=42.\n7+5+1=13, carry 1.\n13-1-5=7.\n3*3=10.", "x")
    assert rw.facts(text, {}) == pytest.approx(3 / 4)
    assert rw.facts(completion("no facts here", "x"), {}) == 0.0


@pytest.mark.parametrize("answer, want", [("#### 72", 1.0), ("They sold 72 clips.", 1.0),
                                          ("\\boxed{72}", 1.0), ("72 or 24", 0.0),
                                          ("#### 71", 0.0), ("", 0.0)])
def test_gsm8k_final_number(answer, want):
    assert rw.numeric(completion("48/2=24", answer), GSM8K) == want
    assert rw.exact(completion("48/2=24", answer), GSM8K) == want


def test_boxed_reference_with_thousands_separator():
    assert rw.reference_number(MATH) == 1234
    assert rw.numeric(completion(None, "\\boxed{1234}"), MATH) == 1.0


@pytest.mark.parametrize("text", ["", "<|think|>", "<|think|>\nnever closed", "\x00\udcff",
                                  "<|assistant|>" * 50, "#### \\boxed{", "9" * 5000,
                                  completion("a", "line one\nline two")])
def test_malformed_completions_score_zero_and_never_raise(text):
    record = {"question": "What is 12 + 30?", "thinking": "12+30:\n2+0=2.", "answer": "42"}
    for name, fn in rw.REWARDS.items():
        if name == "facts":
            continue  # "never closed" etc. hold no facts: 0 too, checked below
        assert fn(text, record) == 0.0, (name, text)
    assert rw.facts(text, record) == 0.0
    assert rw.exact(text, {"question": "not a family"}) == 0.0  # no reference: 0, no error


def test_format_wants_a_closed_think_block_and_one_closed_answer_line():
    assert rw.format_reward(completion("t", "It is 4."), {}) == 1.0
    assert rw.format_reward(completion("t", "It is 4.", closed=False), {}) == 0.0
    assert rw.format_reward(completion(None, "It is 4."), {}) == 0.0


def test_weighted_sum_and_user_rewards():
    spec = rw.parse_rewards("exact, format=0.5, _rl_helpers:fours=2")
    assert [(n, w) for n, w, _ in spec] == [("exact", 1.0), ("format", 0.5),
                                            ("_rl_helpers:fours", 2.0)]
    text = completion("4", "#### 72")  # one "4": fours gives 1/8
    assert rw.score_all(spec, text, GSM8K) == pytest.approx(1 + 0.5 + 2 * 1 / 8)
    for bad in ("", "nope", "exact=heavy", "os:no_such_function"):
        with pytest.raises(ValueError):
            rw.parse_rewards(bad)


def test_a_reward_that_raises_counts_zero():
    def broken(text, record):
        raise KeyError("boom")
    assert rw.score_all([("broken", 1.0, broken), ("exact", 1.0, rw.exact)],
                        completion("x", "#### 72"), GSM8K) == 1.0


def test_jsonl_source_keeps_checkable_records_only(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([json.dumps(GSM8K), json.dumps(MATH), "not json", "[1]",
                               json.dumps({"question": "Why?", "answer": "Because."})]))
    pool = jsonl_records(path)[0]
    assert [r["question"][:8] for r in pool] == ["Natalia ", "What is "]


def test_every_family_stays_in_the_mix_and_ranks_draw_their_own():
    pools = synth_records(parse_families("all"), per_family=20)
    one = PromptSource(pools, seed=0)
    assert {r["task"] for _, r in one.take(len(synth.TASKS))} == set(synth.TASKS)
    ranks = [PromptSource(pools, seed=0, rank=r, world=2) for r in (0, 1)]
    drawn = [src.take(10) for src in ranks]
    assert not {g for g, _ in drawn[0]} & {g for g, _ in drawn[1]}
    # two processes draw between them exactly what one process draws, position for position
    assert sorted(drawn[0] + drawn[1], key=lambda d: d[0]) == PromptSource(pools, 0).take(20)
    test_questions = {e.question for e in synth.make_split("test", 440)}
    assert not test_questions & {r["question"] for pool in pools for r in pool}
