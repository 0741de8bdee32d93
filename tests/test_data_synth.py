"""Built-in reasoning data: determinism, disjoint splits, checkable answers, the JSONL output."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from decimal import Decimal

import pytest

from aethermind.data import synth, synth_questions
from aethermind.data import synth_tables as tables
from aethermind.text.chat_format import parse
from aethermind.text.tokenizer import Forge1Tokenizer


def test_make_split_is_deterministic_for_a_seed():
    assert synth.make_split("train", 300, seed=3) == synth.make_split("train", 300, seed=3)
    assert synth.make_split("train", 300, seed=3) != synth.make_split("train", 300, seed=4)


def test_train_and_test_never_share_an_operand_combination_across_seeds():
    train = {synth.split_key(e.question) for e in synth.make_split("train", 4000, seed=0)}
    test = {synth.split_key(e.question) for e in synth.make_split("test", 1000, seed=1)}
    assert train and test and not train & test


def test_split_key_ignores_phrasing_but_not_operands():
    key = synth.split_key
    assert key("What is 12 + 5?") == key("Calculate 12 + 5.") != key("What is 12 + 6?")
    assert key("I have 9 pens and eat five. How many pens are left?") == \
        key("Zoe has 9 books and sells 5. How many books are left?")
    assert key("What is the capital of Peru?") != key("Name the capital of Peru.")


def test_every_task_appears_in_both_splits_and_test_is_balanced():
    assert {e.task for e in synth.make_split("train", 200)} == {*synth.TASKS, synth.DRILL}
    counts = Counter(e.task for e in synth.make_split("test", 40 * len(synth.TASKS)))
    assert counts == {task: 40 for task in synth.TASKS}


def test_test_split_has_40_distinct_questions_per_family():
    test = synth.make_split("test", 40 * len(synth.TASKS))
    for task in synth.TASKS:
        assert len({e.question for e in test if e.task == task}) == 40, task


_FACT = re.compile(r"(\d+)([*+-])(\d+)(?:([+-])(\d+))?(?:([+-])(\d+))?=(\d+)")


def _facts(line: str) -> list[tuple[list[int], str, int]]:
    out = []
    for m in _FACT.finditer(line):
        g = m.groups()
        nums = [int(g[0]), int(g[2])] + [int(x) for x in (g[4], g[6]) if x]
        ops = [g[1]] + [o for o in (g[3], g[5]) if o]
        out.append((nums, "".join(ops), int(g[7])))
    return out


def _value(nums: list[int], ops: str) -> int:
    value = nums[0]
    for op, n in zip(ops, nums[1:], strict=True):
        value = value * n if op == "*" else value + n if op == "+" else value - n
    return value


@pytest.mark.parametrize("task", ["add", "sub", "mul", "convert", "rate", "word"])
def test_traces_compute_only_single_digit_facts(task):
    """Every fact a trace computes (not one it restates after "So" or a shift by a power of
    ten) is true and single-digit: a digit op a digit (plus a carry), or a product up to 81
    plus a carry. Only duration questions list a speed's whole-hour multiples."""
    examples = [e for e in synth.make_split("train", 3000) if e.task == task]
    assert examples
    for ex in examples:
        for line in ex.thinking.splitlines():
            for nums, ops, result in _facts(line):
                assert _value(nums, ops) == result, (ex.question, line)
                if line.startswith("So ") or line.endswith(":") or \
                        "Try whole hours" in ex.thinking:
                    continue
                if ops == "*" and nums[1] == 1:
                    continue  # times one: a copy
                if ops == "*" and re.search(rf"{nums[0]}\*{nums[1]}={result}\.$", line) \
                        and str(nums[1]).rstrip("0") in "123456789" and nums[1] >= 10:
                    continue  # x*d0=...0: the product by d with its place's zeros appended
                if ops in ("-", "--") and nums[0] >= 10:  # a borrow: 13-5, 13-1-5
                    assert nums[0] <= 19 and all(n <= 9 for n in nums[1:]), (ex.question, line)
                    continue
                assert nums[0] <= 81 and all(n <= 9 for n in nums[1:]), (ex.question, line)


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
        synth.score("Why is the sky blue?", "anything")


def test_think_tasks_have_traces_and_chat_and_drills_have_none():
    for ex in synth.make_split("train", 400):
        assert (ex.thinking is None) == (ex.task in ("chat", "other", synth.DRILL)), ex


def test_repeat_after_me_is_a_token_exact_copy():
    tok = Forge1Tokenizer()
    q = "Repeat after me: kitten bottle"
    words = tok.encode(" kitten bottle")
    answer = tok.encode(synth.solve(q)[1].answer)
    assert any(answer[i:i + len(words)] == words for i in range(len(answer)))
    assert synth.score(q, "You said: kitten bottle.") and synth.score(q, "kitten bottle")
    assert not synth.score(q, "You said: kitten.")


def test_copy_drills_answer_as_a_repeat_request_does():
    """The drill trains the reply users get: "Copy: ..." answered "Copy: ..." leaked into
    repeat requests ("Copy this: sunny tunnel market" -> "Copy: sunny tunnel market market.")."""
    drills = [ex for ex in synth.make_split("train", 3000) if ex.question.startswith("Copy: ")]
    assert len(drills) > 20 and {ex.task for ex in drills} == {synth.DRILL}
    for ex in drills:
        words = ex.question.removeprefix("Copy: ")
        assert ex.answer == f"You said: {words}.", ex
        if not words[0].isdigit():  # numbers are copied too, but nobody says "Repeat 12 345"
            assert ex.answer == synth.solve(f"Repeat after me: {words}")[1].answer, ex


def test_letter_drills_answer_each_match_as_counting_does_half_of_them_yes():
    """Counting's one fact, "t = r? no", drilled with the letters equal half the time (in the
    trace most differ, and a seed learned "a = a? no"); the reply is the trace's own words."""
    drills = [ex for ex in synth.make_split("train", 6000)
              if ex.task == synth.DRILL and "=" in ex.question and "?" in ex.question]
    assert len(drills) > 20
    answers = []
    for ex in drills:
        pairs = re.findall(r"([a-z]) = ([a-z])\?", ex.question)
        assert len(pairs) == 8, ex.question
        assert ex.answer == ", ".join(f"{a} = {b}? {'yes' if a == b else 'no'}"
                                      for a, b in pairs) + ".", ex
        answers += [a == b for a, b in pairs]
    assert 0.4 < sum(answers) / len(answers) < 0.6
    assert "s = r? no" in synth.solve("Facts: s = r?, r = r?")[1].answer


def test_copy_drills_copy_every_kind_of_word_a_chat_or_trace_copies():
    """Copying practised on three short lists was learned word by word (a seed answered
    "Repeat after me please: blanket" with "bubble"): the drills copy words, names, countries,
    cities, objects and vehicles, one to eight of them."""
    drills = [ex.question.removeprefix("Copy: ").split()
              for ex in synth.make_split("train", 6000) if ex.question.startswith("Copy: ")]
    words = {w.lower() for d in drills if not d[0].isdigit() for w in d}
    kinds = {"names": tables.NAMES, "countries": tables.CAPITALS, "vehicles": tables.VEHICLES,
             "cities": [c for c, _ in tables.CAPITALS.values()],
             "objects": [many for _, many in tables.ITEMS]}
    for kind, pool in kinds.items():
        assert words & {w.lower() for w in pool}, kind
    assert len(words) > 200
    assert set(range(1, 9)) <= {len(d) for d in drills if not d[0].isdigit()}  # + 2-word names


def test_sort_trace_inserts_each_number_of_the_copied_list_into_the_line_above():
    """Insertion on padded numbers: the first line copies the list, the order asked and the
    width of the longest number; each line after it takes the next number of that list,
    padded with zeros to that width, and writes the line above with it put in place; the
    answer drops the zeros again."""
    thinking = synth.solve("Sort these numbers: 29, 7, 31, 3")[1].thinking
    assert thinking.splitlines() == [
        "Smallest first, 2 digits each: 29, 7, 31, 3.", "Insert 29: 29.", "Insert 07: 07,29.",
        "Insert 31: 07,29,31.", "Insert 03: 03,07,29,31.", "So the sorted list is 3, 7, 29, 31."]
    down = synth.solve("Arrange 5 and 400 and 70 from largest to smallest.")[1]
    assert down.thinking.splitlines()[:4] == [
        "Largest first, 3 digits each: 5, 400, 70.", "Insert 005: 005.", "Insert 400: 400,005.",
        "Insert 070: 400,070,005."]
    assert down.value == (400, 70, 5)
    for ex in (e for e in synth.make_split("train", 2000) if e.task == "sort"):
        first, *steps, last = ex.thinking.splitlines()
        head, _, listed = first.partition(": ")
        order, _, width_text = head.partition(", ")
        nums = [int(x) for x in listed.rstrip(".").split(", ")]
        width = max(len(str(x)) for x in nums)
        assert width_text == f"{width} digits each"
        above: list[int] = []
        for x, line in zip(nums, steps, strict=True):
            head, _, body = line.partition(": ")
            cells = body.rstrip(".").split(",")
            assert {len(c) for c in cells} == {width}, line
            row = [int(v) for v in cells]
            assert head == f"Insert {x:0{width}d}" and sorted(row) == sorted([*above, x]), line
            assert row == sorted(row, reverse=order == "Largest first"), line
            rest = list(row)
            rest.remove(x)
            assert rest == above, line  # the line above, copied in its order
            above = row
        assert last == f"So the sorted list is {', '.join(map(str, above))}."


def test_comparison_finds_the_longer_number_by_dropping_last_digits_until_one_runs_out():
    """No digit count is read off (five-digit pairs were counted as four): both numbers lose
    their last digit a line until one runs out, and the line where it does says which has
    more digits, or that they have the same number and are compared from the left."""
    assert synth.solve("Which is larger, 95903 or 523?")[1].thinking.splitlines() == [
        "Compare 95903 and 523.", "Rest 9590 and 52.", "Rest 959 and 5.",
        "Rest 95 and nothing: 95903 has more digits.", "So the first is larger.",
        "The larger one is 95903."]
    assert synth.solve("Which is smaller, 7 or 3?")[1].thinking.splitlines()[1:3] == [
        "Rest nothing and nothing: the same number of digits. Compare from the left.", "7 > 3."]
    n = 0
    for ex in (e for e in synth.make_split("train", 3000) if e.task == "compare"):
        first, *lines = ex.thinking.splitlines()
        state = re.fullmatch(r"Compare (\d+) and (\d+)\.", first).groups()
        for line in lines:
            state = tuple(x[:-1] for x in state)
            if all(state):
                assert line == f"Rest {state[0]} and {state[1]}.", (ex.question, line)
                continue
            shown = [x or "nothing" for x in state]
            assert line.startswith(f"Rest {shown[0]} and {shown[1]}: "), (ex.question, line)
            a, b = re.fullmatch(r"Compare (\d+) and (\d+)\.", first).groups()
            same = len(a) == len(b)
            assert line.endswith("Compare from the left.") == same, (ex.question, line)
            if not same:
                assert line.endswith(f" {max(a, b, key=len)} has more digits."), line
            n += 1
            break
    assert n > 50


def test_comparison_copies_the_answer_once_after_naming_the_larger_by_its_place():
    """Past the range, copies of five-digit numbers lost a digit in the `So` line that wrote
    both ("So 9590 is larger and 5237 is smaller"); it names the larger by its place in the
    first line instead, so the answer is the one number copied after the first line."""
    n = 0
    for ex in (e for e in synth.make_split("train", 3000) if e.task == "compare"):
        first, *lines = ex.thinking.splitlines()
        a, b = map(int, re.fullmatch(r"Compare (\d+) and (\d+)\.", first).groups())
        assert lines[-2] == f"So the {'first' if a > b else 'second'} is larger.", ex
        kind, pick = re.fullmatch(r"The (larger|smaller) one is (\d+)\.", lines[-1]).groups()
        assert int(pick) == (max(a, b) if kind == "larger" else min(a, b)), ex
        assert ex.answer == f"The answer is {pick}.", ex
        n += 1
    assert n > 100


def test_products_by_several_digits_list_their_parts_first_and_take_them_in_that_order():
    """A product by a number with several non-zero digits names its parts first ("46 = 6 +
    40."), so which part comes next is read off that line, not from the operands' lengths:
    products of four by two digits (never trained) ended after the first part."""
    lines = synth.solve("What is 7168 * 46?")[1].thinking.splitlines()
    assert lines[:3] == ["7168*46:", "46 = 6 + 40.", "7168*6:"]
    assert "7168*4:" in lines and "7168*40=286720." in lines
    assert synth.solve("What is 7168 * 4?")[1].thinking.splitlines()[:3] == [
        "7168*4:", "7168*4:", "8*4=32, carry 3."]  # one part: no list
    seen = 0
    for ex in (e for e in synth.make_split("train", 3000) if e.task == "mul"):
        plan = [line for line in ex.thinking.splitlines() if re.fullmatch(r"\d+ = \d+( \+ \d+)+\.",
                                                                          line)]
        if not plan:
            continue
        y, parts = plan[0].rstrip(".").split(" = ")
        parts = parts.split(" + ")
        assert sum(map(int, parts)) == int(y) and len(plan) == 1, ex.question
        a, b = re.match(r"(\d+)\*(\d+):", ex.thinking).groups()
        x = a if b == y else b
        lines = ex.thinking.splitlines()
        at = [next(i for i, line in enumerate(lines) if line.startswith((f"{x}*{p[0]}:",
                                                                          f"{x}*{p[0]}=")))
              for p in parts]
        assert at == sorted(at), (ex.question, parts)
        seen += 1
    assert seen > 30


def test_column_traces_take_each_digit_from_the_line_above_and_build_the_result_there():
    """Column addition and subtraction: each line takes the last digits of the line above
    (the copied operands, else its "Rest"), ends with what is left of them (a used-up operand
    written 0) and with the result so far, one digit more on its left ("Built"), and the
    answer is the last "Built": no step looks n digits or n lines back."""
    assert synth.solve("What is 4567 + 89?")[1].thinking.splitlines() == [
        "4567+89:", "7+9=16, carry 1. Rest 456+8. Built 6.",
        "6+8+1=15, carry 1. Rest 45+0. Built 56.", "5+0+1=6. Rest 4+0. Built 656.",
        "4+0=4. Built 4656.", "So 4567+89=4656."]
    assert synth.solve("What is 95 + 17?")[1].thinking.splitlines()[2:] == [
        "9+1+1=11, carry 1. Built 12.", "Write the last carry 1. Built 112.", "So 95+17=112."]
    assert synth.solve("What is 5003 - 1287?")[1].thinking.splitlines()[1:3] == [
        "3-7 needs a borrow: 13-7=6. Rest 500-128. Built 6.",
        "0-1-8 needs a borrow: 10-1-8=1. Rest 50-12. Built 16."]
    head = re.compile(r"(\d+)([+-])(\d+):")
    step = re.compile(r"(\d+)([+-])(?:1-)?(\d+)(?:\+1)?(?: needs a borrow: [\d+-]+)?=(\d+)"
                      r"(?:, carry 1)?\.(?: Rest (\d+)[+-](\d+)\.)? Built (\d+)\.")
    seen: Counter = Counter()
    for ex in synth.make_split("train", 3000):
        state: list[str] | None = None
        for line in (ex.thinking or "").splitlines():
            if m := head.fullmatch(line):
                state, op, built = [m[1], m[3]], m[2], ""
                continue
            if state is None:
                continue
            if m := step.fullmatch(line):
                first, line_op, second, value, rest_a, rest_b, now = m.groups()
                assert line_op == op, (ex.question, line)
                ends = [x[-1] if x else "0" for x in state]
                assert [first, second] == ends or (op == "-" and first == "1" + ends[0]), \
                    (ex.question, line)
                state = [x[:-1] for x in state]
                left = [x or "0" for x in state] if any(state) else [None, None]
                assert [rest_a, rest_b] == left, (ex.question, line)
                assert now == value[-1] + built, (ex.question, line)
                built = now
                seen[op] += 1
            elif line.startswith("Write the last carry 1."):
                assert line == f"Write the last carry 1. Built 1{built}.", (ex.question, line)
                built = "1" + built
            else:
                assert not any(state), (ex.question, line)
                assert line.startswith("So ") and line.endswith(f"={int(built)}."), (ex.question,
                                                                                     line)
                state = None
    assert seen["+"] > 200 and seen["-"] > 200


def test_rest_and_build_drills_reply_with_a_column_traces_own_lines_past_four_digits():
    """The drills practise the two chains of the column traces at up to 8 digits (the
    families stop at 4): a "Rest" drill's reply is the "Rest" lines of the same sum or
    difference, a "Build" drill's the "Built" lines of digits written right to left."""
    drills = [ex for ex in synth.make_split("train", 8000) if ex.task == synth.DRILL]
    rests = [ex for ex in drills if ex.question.lower().startswith("rest: ")]
    builds = [ex for ex in drills if ex.question.lower().startswith("build from the right: ")]
    assert len(rests) > 20 and len(builds) > 20
    ops = Counter()
    for ex in rests:
        a, op, b = re.fullmatch(r"rest: (\d+)([+-]| and )(\d+)", ex.question, re.I).groups()
        ops[op] += 1
        if op == " and " and a != b:  # comparison's length check (equal: nothing to compare)
            trace = synth.solve(f"Which is larger, {a} or {b}?")[1].thinking
            ends = trace.splitlines()[1:]
            ends = ends[:next(i for i, line in enumerate(ends) if ":" in line) + 1]
            assert ex.answer == " ".join(ends), ex
            continue
        if op == " and ":
            continue
        trace = synth.solve(f"What is {a} {op} {b}?")[1].thinking
        assert ex.answer == " ".join(re.findall(r"Rest \d+[+-]\d+\.", trace)), ex
    assert set(ops) == {"+", "-", " and "}
    assert max(len(re.findall(r"\d", ex.question)) for ex in rests) > 10
    for ex in builds:
        digits = ex.question.split(": ")[1].split(", ")
        chain = ["".join(reversed(digits[:i])) for i in range(1, len(digits) + 1)]
        assert ex.answer == " ".join(f"Built {c}." for c in chain), ex
    assert max(len(ex.question.split(", ")) for ex in builds) > 4
    trace = synth.solve("What is 50133 + 77548?")[1].thinking
    assert " ".join(re.findall(r"Built \d+\.", trace)) == synth.solve(
        "Build from the right: 1, 8, 6, 7, 2, 1")[1].answer


def test_rate_traces_copy_each_number_with_its_unit_before_naming_a_formula():
    """Distance and duration questions open with "Speed S mph and N unit.": N and its unit are
    written as the question has them, and the formula on the next line is the one that unit
    calls for, so no role is chosen before its number is copied."""
    rng = random.Random(5)
    formulas = set()
    for held in (False, True):
        for _ in range(200):
            q = synth_questions.q_rate(rng, held, False)
            lines = synth.solve(q)[1].thinking.splitlines()
            if lines[0].startswith("Price "):
                continue
            m = re.fullmatch(r"Speed (\S+) mph and (\S+) (miles|hours?)\.", lines[0])
            assert m, lines[0]
            assert f"{m.group(2)} {m.group(3)}" in q, q
            formula = ("Time = distance / speed." if m.group(3) == "miles"
                       else "Distance = speed * time.")
            assert lines[1].startswith(formula), (q, lines[1])
            formulas.add(formula)
    assert len(formulas) == 2


def test_decimal_traces_pad_both_operands_to_the_most_places_first():
    """A sum or difference with a decimal counts each operand's places and pads both to the
    most (33.3+5.91 -> 33.30+5.91) before the point is dropped: the padded operands are the
    question's numbers, and the whole numbers used are them without the point."""
    examples = [e for e in synth.make_split("train", 4000)
                if e.task in ("add", "sub") and "so pad to" in (e.thinking or "")]
    assert len(examples) > 30
    for ex in examples:
        first, second = ex.thinking.splitlines()[:2]
        m = re.fullmatch(r"(\S+?)([+-])(\S+): decimals (\d) and (\d), so pad to (\d)\.", first)
        assert m, first
        places = int(m[6])
        assert places == max(int(m[4]), int(m[5])), first
        for text, count in ((m[1], m[4]), (m[3], m[5])):
            assert len(text.partition(".")[2]) == int(count), first
        p = re.fullmatch(r"(\S+?)[+-](\S+): use (\d+)[+-](\d+), then put the point back\.", second)
        assert p, second
        for asked, padded, used in ((m[1], p[1], p[3]), (m[3], p[2], p[4])):
            assert Decimal(asked) == Decimal(padded) and len(padded.partition(".")[2]) == places
            assert int(padded.replace(".", "")) == int(used), second


def test_duration_trace_compares_each_product_with_the_distance_digit_by_digit():
    """Every whole-hour line reads "speed*k=product vs distance: steps, verdict": the lengths
    when they differ ("2 digits vs 3"), else the digits from the left up to the first that
    differs ("1 = 1, 0 < 2"), as comparison's trace goes; the verdict is the true order (equal
    ends the trip, more halves back)."""
    examples = [e for e in synth.make_split("train", 4000) if e.thinking and
                "Try whole hours" in e.thinking]
    assert len(examples) > 20
    verdict = {-1: "less", 0: "equal", 1: "more"}
    for ex in examples:
        steps = [line for line in ex.thinking.splitlines() if " vs " in line]
        assert steps, ex.question
        for i, line in enumerate(steps):
            m = re.fullmatch(r"([\d.]+)\*(\d+)=([\d.]+) vs ([\d.]+): (.*?)(less|equal|more)"
                             r"(?:, so half an hour less: [\d.]+)?\.", line)
            assert m, line
            product, dist = Decimal(m.group(3)), Decimal(m.group(4))
            assert Decimal(m.group(1)) * int(m.group(2)) == product and int(m.group(2)) == i + 1
            assert m.group(6) == verdict[(product > dist) - (product < dist)], line
            a, b = str(int(product)), str(int(dist))
            if len(a) != len(b):
                want = f"{len(a)} digits vs {len(b)}, "
            else:
                pairs = list(zip(a, b, strict=True))
                upto = next((k for k, (x, y) in enumerate(pairs) if x != y), len(pairs) - 1)
                want = "".join(f"{x} {'=' if x == y else '>' if x > y else '<'} {y}, "
                               for x, y in pairs[:upto + 1])
            assert m.group(5) == want, line
            # only the last line reaches the distance; "more" there halves back
            assert (m.group(6) != "less") == (i == len(steps) - 1), ex.question
            assert ("so half an hour less" in line) == (m.group(6) == "more"), line


def test_count_trace_steps_every_letter():
    thinking = synth.solve('How many times does the letter "r" appear in "strawberry"?')[1]
    assert "r = r? yes 1" in thinking.thinking and "r = r? yes 3" in thinking.thinking
    assert thinking.answer == "The answer is 3."


def test_guide_questions_are_fresh_and_in_the_guides_phrasing():
    fresh = synth.guide_questions(12)
    train = {synth.split_key(e.question) for e in synth.make_split("train", 4000)}
    assert len({e.question for e in fresh}) == 12
    assert {e.task for e in fresh} >= {"mul", "rate", "capital", "sort"}
    assert not {synth.split_key(e.question) for e in fresh} & train
    assert all(synth.score(e.question, e.answer) for e in fresh)


def test_some_conversations_have_several_turns():
    convs = synth.to_conversations(synth.make_split("train", 400))
    turns = Counter(len(c.turns) for c in convs)
    assert turns[1] and turns[2] + turns[3] > 0.1 * len(convs)
    assert sum(len(c.turns) for c in convs) == 400


def test_corpus_texts_holds_message_text_only():
    texts = list(synth.corpus_texts(50))
    assert len(texts) == 50
    assert not any("<|" in t for t in texts)


def test_write_synth_writes_parseable_train_and_val(tmp_path):
    train, val = synth.write_synth(tmp_path, n_train=120, n_val=30, seed=0)
    rows = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
    assert sum(len(parse(r["text"]).turns) for r in rows) == 120
    assert sum(len(parse(json.loads(line)["text"]).turns)
               for line in val.read_text(encoding="utf-8").splitlines()) == 30
    conv = parse(rows[0]["text"])
    assert synth.to_conversations(synth.make_split("train", 120))[0] == conv
    assert not list(tmp_path.glob(".*.tmp*"))


def test_test_split_questions_are_unique_where_the_task_space_allows():
    big = ("add", "sub", "mul", "sort", "compare")  # small spaces (capitals) must repeat
    questions = [e.question for e in synth.make_split("test", 400) if e.task in big]
    assert len(set(questions)) == len(questions)


def test_some_train_questions_are_typed_in_lower_case_and_nothing_else_moves(monkeypatch):
    """LOWER_CASE of train questions are lowered whole (the country too: "capital of canada"),
    answered as their cased form is, with the same operands and split keys in the same order;
    evaluation splits never see it."""
    cased = synth.make_split("train", 1500)
    test = synth.make_split("test", 200)
    monkeypatch.setattr(synth, "LOWER_CASE", 0.0)
    plain = synth.make_split("train", 1500)
    assert synth.make_split("test", 200) == test
    lowered = [(a, b) for a, b in zip(cased, plain, strict=True) if a != b]
    assert 0.1 * len(cased) < len(lowered) < 0.3 * len(cased)
    for a, b in lowered:
        assert a.question == b.question.lower() != b.question and a.task == b.task
        assert synth.split_key(a.question) == synth.split_key(b.question)
        assert a.answer == b.answer or a.task == "drill", a  # a copy drill copies the case
    capitals = [a for a, _ in lowered if a.task == "capital"]
    assert capitals and all(a.answer.split()[3][0].isupper() for a in capitals)


def test_number_copies_and_rest_drills_hold_near_twins():
    """Past the range, differences mixed up two numbers alike ("14241-14245" for 14341 and
    14245): a good share of the number copies and "Rest" drills hold numbers one digit apart
    (one changed, added or dropped after the first), at up to eight digits."""
    def apart(a: str, b: str) -> bool:
        if len(a) == len(b):
            return a[0] == b[0] and sum(x != y for x, y in zip(a, b, strict=True)) <= 1
        short, long_ = sorted((a, b), key=len)
        return len(long_) - len(short) == 1 and any(long_[:i] + long_[i + 1:] == short
                                                    for i in range(1, len(long_)))

    drills = [ex.question for ex in synth.make_split("train", 20000) if ex.task == synth.DRILL]
    copies = [re.findall(r"\d+", q) for q in drills if re.fullmatch(r"Copy: [\d ]+", q, re.I)]
    rests = [re.findall(r"\d+", q) for q in drills if q.lower().startswith("rest: ")]
    for kind, low in ((copies, 0.25), (rests, 0.15)):
        long_ = [d for d in kind if len(d[0]) > 3]
        twins = [d for d in long_ if all(apart(d[0], x) for x in d[1:])]
        assert len(twins) / len(long_) > low, (len(twins), len(long_))
    assert max(len(x) for d in copies for x in d) >= 8
