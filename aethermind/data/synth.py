"""Built-in reasoning data: seeded Forge-1 conversations with step-by-step think traces.

Every task pairs a question template with a solver that writes a short, regular trace (one
mechanical step per line, the same wording every time) and an exactly checkable answer, so a
2-5M parameter model learns the format, and the easier tasks, in minutes on a CPU. `score`
re-solves the question from its text, so it needs no stored answers. Train and test are
disjoint by a hash of the question (fixed across seeds); the guide's demo prompts are pinned to
train. This module knows nothing about tokens or files beyond `write_synth`'s JSONL.
Usage: `write_synth("data", n_train=20000, n_val=500, seed=0)` or `aethermind data synth`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from aethermind.data import synth_questions as questions
from aethermind.data import synth_tables as tables
from aethermind.data.synth_questions import fmt as _fmt
from aethermind.runtime.files import staged_path
from aethermind.text import prompts
from aethermind.text.chat_format import Conversation, Turn, render

TASKS = ("add", "sub", "mul", "compare", "sort", "count", "convert", "rate", "word", "capital",
         "chat")
DRILL = "drill"  # train-only practice of the facts and spellings the traces use; never scored
# Round-robin order of training tasks: the families whose traces take longest to learn come
# most often; sort stays at two slots (it is learned last, BENCHMARKS "Demo").
_MIX = ("add", "mul", "rate", "chat", "sub", "count", "drill", "compare", "capital", "convert",
        "mul", "sort", "rate", "add", "word", "chat", "sub", "mul", "drill", "convert", "rate",
        "count", "compare", "capital", "add", "sort", "chat", "drill", "sub", "word")
MULTI_TURN = 0.25  # share of written conversations that hold 2-3 turns (chat keeps context)
_MULTI_TURN_CHARS = 420  # only short exchanges are joined, so a conversation fits one row
# The guide's prompts that have a checkable answer (all but the haiku).
GUIDE_PROMPTS = tuple(p for p in prompts.GUIDE_PROMPTS if p != prompts.CREATIVE)
# Never in test: the demo's prompts and every fixed chat question as written in the table
# (their replies must be learned; test asks them with other punctuation or case).
_PINNED = frozenset((*GUIDE_PROMPTS, prompts.GREETING, *tables.CHAT_REPLIES))
_PIN_EVERY = 100  # every 100th train example is a guide prompt, so the demo prompts are known
_TEST_BUCKETS = 10  # 1 in 10 question strings belongs to the test split


@dataclass(frozen=True)
class SynthExample:
    task: str
    question: str
    thinking: str | None
    answer: str


@dataclass(frozen=True)
class _Solution:
    """A solved question plus what `score` accepts: kind num|list|text, value, unit words."""

    thinking: str | None
    answer: str
    kind: str
    value: object
    accept: tuple[str, ...] = ()  # unit words (num) or lead-in phrases (text)


# --- number helpers ---------------------------------------------------------------------------
def _num(text: str) -> Decimal:
    return Decimal(text)


def _norm_question(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _norm_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).lower().split()).rstrip(".!? ")


# --- digit-local traces -------------------------------------------------------------------
# Every computed step below is one single-digit fact written the same way in every family
# ("7*6=42", "7+5+1=13", "13-1-5=7"), so the facts a small model must learn are few (about
# 300) and shared: a multi-digit result is always assembled from written-down digits, never
# produced in one step (`57 * 6 = 342` in one step is 2,000 facts, most seen twice an epoch).
def _add_lines(a: int, b: int) -> list[str]:
    """Column addition, right to left: one digit sum per line with its carry."""
    da, db = str(a)[::-1], str(b)[::-1]
    lines, carry = [f"{a}+{b}:"], 0
    for i in range(max(len(da), len(db))):
        terms = [int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0]
        terms += [carry] if carry else []
        s = sum(terms)
        carry = s // 10
        lines.append("+".join(map(str, terms)) + f"={s}" + (f", carry {carry}." if carry else "."))
    if carry:
        lines.append(f"Write the last carry {carry}.")
    lines.append(f"So {a}+{b}={a + b}.")
    return lines


def _sub_lines(a: int, b: int) -> list[str]:
    """Column subtraction of b <= a, right to left: one digit difference (and borrow) a line."""
    da, db = str(a)[::-1], str(b)[::-1]
    lines, borrow = [f"{a}-{b}:"], 0
    for i in range(len(da)):
        x, y = int(da[i]), int(db[i]) if i < len(db) else 0
        left = f"{x}-1-{y}" if borrow else f"{x}-{y}"
        if x - borrow < y:
            lines.append(f"{left} needs a borrow: 1{left}={x + 10 - borrow - y}.")
            borrow = 1
        else:
            lines.append(f"{left}={x - borrow - y}.")
            borrow = 0
    lines.append(f"So {a}-{b}={a - b}.")
    return lines


def _times_digit_lines(x: int, d: int) -> list[str]:
    """x * d (d one digit), right to left: one single-digit product per line, carry explicit."""
    digits, lines, carry = str(x)[::-1], [f"{x}*{d}:"], 0
    for i, c in enumerate(digits):
        v = int(c) * d
        s = v + carry
        line = f"{c}*{d}={v}" + (f", {v}+{carry}={s}" if carry else "")
        last = i == len(digits) - 1
        lines.append(f"{line}." if last else f"{line}, carry {s // 10}.")
        carry = s // 10
    lines.append(f"So {x}*{d}={x * d}.")
    return lines


def _mul_lines(a: int, b: int) -> list[str]:
    """a * b for whole numbers: one `_times_digit_lines` per non-zero digit of the operand with
    fewer non-zero digits, zeros appended for its place, partial products added in columns."""
    def cost(n: int) -> tuple[int, int]:
        return sum(c != "0" for c in str(n)), n

    x, y = (a, b) if cost(b) <= cost(a) else (b, a)  # y: the multiplier
    if x < 10 and y < 10:
        return [f"{x}*{y}={x * y}."]
    if y == 0:
        return [f"Anything times 0 is 0: {a}*{b}=0."]
    lines, partials = [], []
    for place, c in enumerate(str(y)[::-1]):
        if c == "0":
            continue
        d = int(c)
        if x < 10 or d == 1:
            lines.append(f"{x}*{d}={x * d}.")
        else:
            lines += _times_digit_lines(x, d)
        if place:
            zeros = "0" * place
            lines.append(f"{x}*{d}{zeros}={x * d}{zeros}.")
        partials.append(x * d * 10 ** place)
    total = partials[0]
    for part in partials[1:]:
        lines += _add_lines(total, part)
        total += part
    final = f"So {a}*{b}={a * b}."
    return lines if lines[-1] == final else [*lines, final]


def _decimal_mul_lines(a: Decimal, b: Decimal) -> list[str]:
    """a * b where either may have one decimal place: multiply the digits, then put the point
    back (one place per decimal operand), so the arithmetic is `_mul_lines` unchanged."""
    places = sum(_fmt(v).count(".") and len(_fmt(v).split(".")[1]) for v in (a, b))
    ia, ib = (int(_fmt(v).replace(".", "")) for v in (a, b))
    if not places:
        return _mul_lines(ia, ib)
    lines = [f"{_fmt(a)}*{_fmt(b)}: use {ia}*{ib}, then put the point back."]
    lines += _mul_lines(ia, ib)
    lines.append(f"{ia * ib} with the point {places} place{'s' if places > 1 else ''} left is "
                 f"{_fmt(a * b)}.")
    return lines


def _solve_add(m: re.Match) -> _Solution:
    a, b = int(m.group(1)), int(m.group(2))
    return _Solution("\n".join(_add_lines(a, b)), f"The answer is {a + b}.", "num",
                     Decimal(a + b))


def _solve_sub(m: re.Match) -> _Solution:
    a, b = int(m.group(1)), int(m.group(2))
    if a < b:  # keep the column method honest: answer -(b - a)
        lines = [f"{a} is less than {b}, so compute {b}-{a} and make it negative.",
                 *_sub_lines(b, a), f"So {a}-{b}={a - b}."]
    else:
        lines = _sub_lines(a, b)
    return _Solution("\n".join(lines), f"The answer is {a - b}.", "num", Decimal(a - b))


def _solve_mul(m: re.Match) -> _Solution:
    a, b = int(m.group(1)), int(m.group(2))
    return _Solution("\n".join(_mul_lines(a, b)), f"The answer is {a * b}.", "num",
                     Decimal(a * b))


def _solve_compare(m: re.Match) -> _Solution:
    word, a, b = m.group(1).lower(), int(m.group(2)), int(m.group(3))
    want_max = word in ("larger", "bigger", "greater")
    sa, sb = str(a), str(b)
    if len(sa) != len(sb):
        lines = [f"{a} has {len(sa)} digits and {b} has {len(sb)} digits."]
    else:
        lines = [f"Both have {len(sa)} digits. Compare from the left."]
        for x, y in zip(sa, sb, strict=True):
            sign = "=" if x == y else ">" if x > y else "<"
            lines.append(f"{x} {sign} {y}.")
            if x != y:
                break
    pick = max(a, b) if want_max else min(a, b)
    lines.append(f"So {max(a, b)} is larger and {min(a, b)} is smaller.")
    lines.append(f"The {'larger' if want_max else 'smaller'} one is {pick}.")
    return _Solution("\n".join(lines), f"The answer is {pick}.", "num", Decimal(pick))


def _solve_sort(m: re.Match) -> _Solution:
    """Bucket by the tens digit (a one-digit number has tens digit 0), then order each small
    bucket by its ones digit: every comparison is between single digits, so 7 never loses
    to 29 for looking shorter, and six numbers stay about 100 tokens. (A sweep over all ten
    buckets, so the next bucket is never a choice, measured no better at 900 steps, 0% vs
    5%, and costs 40% more tokens.)"""
    order = f"{m.group(1)} {m.group(3)}".lower()
    descending = "largest to" in order or "descending" in order
    nums = [int(x) for x in re.findall(r"\d+", m.group(2))]
    lines = ["Tens digits: " + ", ".join(f"{n} has {n // 10}" for n in nums) + "."]
    for tens in sorted({n // 10 for n in nums}, reverse=descending):
        bucket = sorted((n for n in nums if n // 10 == tens), reverse=descending)
        lines.append(f"Tens {tens}: {', '.join(map(str, bucket))}.")
    out = sorted(nums, reverse=descending)
    joined = ", ".join(map(str, out))
    lines.append(f"So the sorted list is {joined}.")
    return _Solution("\n".join(lines), f"The answer is {joined}.", "list", tuple(out))


def _spell_line(word: str) -> str:
    return f"Spell {word}: {' '.join(word)}."


def _solve_count(m: re.Match) -> _Solution:
    """Spell the word, then one match step per letter that sets the letter beside the one
    sought ("t = r? no 1"), so the yes/no is a look at two neighbouring tokens and the tally
    only ever grows by one."""
    letter, word = m.group(1).lower(), m.group(2).lower()
    running, steps = 0, []
    for ch in word:
        hit = ch == letter
        running += hit
        steps.append(f"{ch} = {letter}? {'yes' if hit else 'no'} {running}")
    lines = [_spell_line(word), f"Count {letter}: {', '.join(steps)}.",
             f"So {letter} appears {running} times."]
    return _Solution("\n".join(lines), f"The answer is {running}.", "num", Decimal(running),
                     ("times", "time"))


def _solve_convert(m: re.Match) -> _Solution:
    value, src, dst = _num(m.group(1)), m.group(2).lower(), m.group(3).lower()
    factor = tables.CONVERSIONS[(src, dst)]
    out = value * factor
    lines = [f"1 {tables.UNITS[src][1]} = {factor} {dst}.", *_decimal_mul_lines(value, factor),
             f"So {_fmt(value)} {src} = {_fmt(out)} {dst}."]
    return _Solution("\n".join(lines), f"The answer is {_fmt(out)} {dst}.", "num", out,
                     tables.UNITS[dst])


def _solve_distance(m: re.Match) -> _Solution:
    speed, hours = _num(m.group(2)), _num(m.group(3))
    dist = speed * hours
    lines = ["Distance = speed * time.", *_decimal_mul_lines(speed, hours),
             f"So it travels {_fmt(dist)} miles."]
    return _Solution("\n".join(lines), f"The answer is {_fmt(dist)} miles.", "num", dist,
                     tables.UNITS["miles"])


def _solve_duration(m: re.Match) -> _Solution:
    """Division as multiplication: whole hours times the speed until the distance is reached
    (the trips last a whole or half number of hours, so it is hit or halfway passed)."""
    dist, speed = _num(m.group(2)), _num(m.group(3))
    hours = dist / speed
    lines = ["Time = distance / speed. Try whole hours:"]
    k = 1
    while speed * k < dist:
        lines.append(f"{_fmt(speed)}*{k}={_fmt(speed * k)}, less than {_fmt(dist)}.")
        k += 1
    if speed * k == dist:
        lines.append(f"{_fmt(speed)}*{k}={_fmt(speed * k)}, exactly {_fmt(dist)}.")
    else:
        lines.append(f"{_fmt(speed)}*{k}={_fmt(speed * k)}, more than {_fmt(dist)}, so "
                     f"half an hour less: {_fmt(hours)}.")
    lines.append(f"So it takes {_fmt(hours)} hours.")
    return _Solution("\n".join(lines), f"The answer is {_fmt(hours)} hours.", "num", hours,
                     tables.UNITS["hours"])


def _solve_cost(m: re.Match) -> _Solution:
    price, count, item = _num(m.group(2)), _num(m.group(3)), m.group(4).lower()
    total = price * count
    lines = ["Total = price * count.", *_decimal_mul_lines(price, count),
             f"So {_fmt(count)} {item} cost {_fmt(total)} dollars."]
    return _Solution("\n".join(lines), f"The answer is {_fmt(total)} dollars.", "num", total,
                     tables.UNITS["dollars"])


def _solve_word(m: re.Match) -> _Solution:
    """The story becomes one column addition or subtraction (the same trace as add/sub)."""
    a, items, verb = int(m.group(2)), m.group(3).lower(), m.group(4).lower()
    b_text = m.group(5).lower()
    b = questions.NUMBER_WORDS.index(b_text) if b_text.isalpha() else int(b_text)
    adding = verb in ("buy", "buys", "get", "gets")
    result = a + b if adding else a - b
    lines = [f"Start with {a} {items}.", f"Add {b}." if adding else f"Take away {b}."]
    lines += _add_lines(a, b) if adding else _sub_lines(a, b)
    lines.append(f"So there are {result} {items} now." if adding else
                 f"So {result} {items} are left.")
    units = (items, _SINGULAR.get(items, items.rstrip("s")))
    return _Solution("\n".join(lines), f"The answer is {result}.", "num", Decimal(result), units)


def _solve_capital(m: re.Match) -> _Solution:
    country = _COUNTRY_CASE[m.group(1).lower()]
    capital, continent = tables.CAPITALS[country]
    lines = [f"{country} is a country in {continent}.", f"Its capital is {capital}."]
    lead = (f"the capital of {country.lower()} is", f"{country.lower()}'s capital is", "it is")
    return _Solution("\n".join(lines), f"The capital of {country} is {capital}.", "text",
                     capital.lower(), lead)


def _solve_chat_fixed(m: re.Match) -> _Solution:
    reply = _CHAT_FIXED[_norm_text(m.group(0))]
    return _Solution(None, reply, "text", _norm_text(reply))


def _solve_chat_name(m: re.Match) -> _Solution:
    reply = f"Nice to meet you, {m.group(1)}! How can I help you today?"
    return _Solution(None, reply, "text", _norm_text(reply))


def _solve_chat_repeat(m: re.Match) -> _Solution:
    # "You said:" keeps every word after a space, as in the question: " kitten" and "kitten"
    # are different tokens, and an identity copy must copy tokens, not respell them.
    return _Solution(None, f"You said: {m.group(1)}.", "text", _norm_text(m.group(1)),
                     ("you said",))


def _solve_drill_facts(m: re.Match) -> _Solution:
    """Single-digit fact drills (train only): the facts every trace is built from, each
    written exactly as the traces write it."""
    facts = [f.strip() for f in m.group(1).split(",")]
    out = []
    for fact in facts:
        nums = [int(x) for x in re.findall(r"\d+", fact)]
        value = nums[0] * nums[1] if "*" in fact else \
            nums[0] - sum(nums[1:]) if "-" in fact else sum(nums)
        out.append(f"{fact}={value}")
    reply = ". ".join(out) + "."
    return _Solution(None, reply, "text", _norm_text(reply))


def _solve_drill_copy(m: re.Match) -> _Solution:
    """Copy drill (train only): word-for-word copying, the skill behind "Repeat after me",
    names in greetings and country names carried from question to trace to answer."""
    reply = f"Copy: {m.group(1)}."  # the same tokens as the question: " pencil" != "pencil"
    return _Solution(None, reply, "text", _norm_text(reply))


def _solve_drill_spell(m: re.Match) -> _Solution:
    reply = _spell_line(m.group(1).lower())
    return _Solution(None, reply, "text", _norm_text(reply))


_N = r"(\d+(?:\.\d+)?)"
_ORDER = r"(from smallest to largest|from largest to smallest|in ascending order|" \
    r"in descending order)"
_FIXED = "|".join(re.escape(q.rstrip("!?.")) for q in tables.CHAT_REPLIES)
_CHAT_FIXED = {_norm_text(q): r for q, r in tables.CHAT_REPLIES.items()}
_UNIT_NAMES = "|".join(tables.UNITS)
_COUNTRIES = "|".join(re.escape(c) for c in tables.CAPITALS)
_COUNTRY_CASE = {c.lower(): c for c in tables.CAPITALS}
_SINGULAR = {many: one for one, many in tables.ITEMS}
_SMALL = "|".join(questions.NUMBER_WORDS)
_VERBS = "eat|eats|give away|gives away|lose|loses|sell|sells|buy|buys|get|gets"
# (task, pattern, solver). Patterns are matched against the whole question, case-insensitive.
_SOLVERS: tuple[tuple[str, str, Callable[[re.Match], _Solution]], ...] = (
    ("add", r"(?:what is|calculate) (\d+) ?\+ ?(\d+) ?[?.]?", _solve_add),
    ("sub", r"(?:what is|calculate) (\d+) ?- ?(\d+) ?[?.]?", _solve_sub),
    ("mul", r"(?:what is|calculate) (\d+) ?[*x×] ?(\d+) ?[?.]?", _solve_mul),
    ("compare", r"which (?:number )?is (larger|bigger|greater|smaller),? (\d+) or (\d+) ?\??",
     _solve_compare),
    ("sort", rf"sort(?: these| the following| the)?(?: numbers)?(?: {_ORDER})?:? "
     rf"(\d+(?:,? \d+)+)(?: {_ORDER})?\.?", _solve_sort),
    ("count", r"how many times does the letter \"?([a-z])\"? appear in \"?([a-z]+)\"? ?\??",
     _solve_count),
    ("convert", rf"convert {_N} ({_UNIT_NAMES}) to ({_UNIT_NAMES})\.?", _solve_convert),
    ("rate", r"(?:if )?an? (\w+) travels at " + _N + r" ?mph for " + _N
     + r" hours?[,.] how far does it (?:go|travel)\??", _solve_distance),
    ("rate", r"how long does it take an? (\w+) to travel " + _N + r" miles at " + _N
     + r" ?mph\??", _solve_duration),
    ("rate", rf"(?:one|an?) (\w+) costs {_N} dollars?\. how much do {_N} (\w+) cost\??",
     _solve_cost),
    ("word", rf"(?:i have|([a-z]+) has) (\d+) ([a-z]+) and ({_VERBS}) (\d+|{_SMALL})(?: more)?\. "
     r"how many ([a-z]+) (?:are left|do i have now|does [a-z]+ have now)\??", _solve_word),
    ("capital", rf"(?:what is|what's|which city is|what city is|name|tell me) the capital of "
     rf"({_COUNTRIES})[?.]?", _solve_capital),
    ("chat", rf"(?:{_FIXED})[!?.]*", _solve_chat_fixed),
    ("chat", r"(?:hi|hello)[,!]? (?:my name is|i am|i'm) ([A-Z][a-z]+)[.!]?", _solve_chat_name),
    ("chat", r"repeat after me: ([a-z]+(?: [a-z]+)*)\.?", _solve_chat_repeat),
    ("drill", r"facts: (\d+[*+-]\d+(?:[+-]\d+)?(?:, \d+[*+-]\d+(?:[+-]\d+)?)*)",
     _solve_drill_facts),
    ("drill", r"spell ([a-z]+)\.", _solve_drill_spell),
    ("drill", r"copy: ([A-Za-z]+(?: [A-Za-z]+)*)", _solve_drill_copy),
)
_COMPILED = tuple((t, re.compile(p, re.IGNORECASE), f) for t, p, f in _SOLVERS)


def solve(question: str) -> tuple[str, _Solution] | None:
    """(task, solution) for a question in one of the task templates, else None."""
    q = _norm_question(question)
    for task, pattern, solver in _COMPILED:
        m = pattern.fullmatch(q)
        if m is not None:
            return task, solver(m)
    return None


# --- scoring ------------------------------------------------------------------------------
_LEADS = ("so the answer is", "the answer is", "answer:", "answer is", "it is")
_NUM_RE = re.compile(r"(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)(?: ([a-z]+))?")


def _core(answer: str, leads: tuple[str, ...]) -> str:
    text = _norm_text(answer)
    for lead in sorted((*leads, *_LEADS), key=len, reverse=True):
        if text.startswith(lead + " ") or text.startswith(lead + ":"):
            text = text[len(lead):].lstrip(": ").rstrip(".!? ")
            break
    return text


def score(question: str, model_answer: str) -> bool:
    """True iff `model_answer` states the correct answer to `question` and nothing else.

    Tolerates case, surrounding space, a trailing period, an "The answer is" lead-in, thousands
    commas and the right unit word; never accepts extra numbers or a wrong unit. Raises
    ValueError for a question that is not in one of the synthetic task templates.
    """
    solved = solve(question)
    if solved is None:
        raise ValueError(f"not a synthetic task question: {question!r}")
    sol = solved[1]
    if sol.kind == "text":
        return _core(model_answer, sol.accept) == sol.value
    core = _core(model_answer, ())
    if sol.kind == "list":
        core = core.strip("[]() ")
        if not re.fullmatch(r"-?\d+(?:(?:\s*,\s*|\s+)-?\d+)*", core):
            return False
        return tuple(int(x) for x in re.findall(r"-?\d+", core)) == sol.value
    m = _NUM_RE.fullmatch(core)
    if m is None or (m.group(2) is not None and m.group(2) not in sol.accept):
        return False
    return Decimal(m.group(1).replace(",", "")) == sol.value


# --- generation ---------------------------------------------------------------------------
_KEY_RE = re.compile(r'\d+(?:\.\d+)?|"[a-z]+"|\b(?:'
                     + "|".join((*questions.NUMBER_WORDS, *tables.UNITS)) + r")\b")


def _task_of(question: str) -> str | None:
    q = _norm_question(question)
    return next((task for task, pattern, _ in _COMPILED if pattern.fullmatch(q)), None)


def split_key(question: str) -> str:
    """What train and test must not share: the task and its operands (numbers, quoted letters
    and words; number words count as digits), so a test question's operand combination is
    never trained in any phrasing. Capitals and chat, whose content is the phrasing, are keyed
    by the whole question; drills are train-only."""
    task = _task_of(question)
    q = _norm_question(question).lower()
    if task in ("capital", "chat", DRILL, None):
        return f"{task}:{q}"
    parts = [str(questions.NUMBER_WORDS.index(p)) if p in questions.NUMBER_WORDS else p
             for p in _KEY_RE.findall(q)]
    return f"{task}:{' '.join(parts)}"


@functools.cache
def _pinned_keys() -> frozenset[str]:
    return frozenset(split_key(q) for q in _PINNED)


def _is_test(question: str) -> bool:
    key = split_key(question)
    if question in _PINNED or key in _pinned_keys() or key.startswith(f"{DRILL}:"):
        return False
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _TEST_BUCKETS == 0


def _example(question: str) -> SynthExample:
    solved = solve(question)
    assert solved is not None, f"generator and solver disagree on {question!r}"
    task, sol = solved
    return SynthExample(task, question, sol.thinking, sol.answer)


def make_split(split: str, n: int, seed: int = 0) -> list[SynthExample]:
    """`n` examples of `split` ("train" | "test"); the same (split, n, seed) gives the same list.

    Train and test never share an operand combination, whatever their seeds (the partition is
    a hash of `split_key`). Train tasks come round-robin in a fixed mix with drills; test
    tasks round-robin over TASKS, so any prefix is balanced and n = 40 * 11 gives 40 each.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: must be 'train' or 'test'")
    want_test = split == "test"
    rng = random.Random(f"forge1-synth-{split}-{seed}")
    out: list[SynthExample] = []
    seen: set[str] = set()
    slot = 0
    while len(out) < n:
        if not want_test and (len(out) + 1) % _PIN_EVERY == 0:
            out.append(_example(GUIDE_PROMPTS[(len(out) // _PIN_EVERY) % len(GUIDE_PROMPTS)]))
            continue
        task = TASKS[slot % len(TASKS)] if want_test else _MIX[slot % len(_MIX)]
        slot += 1
        for tries in range(200):  # rejection sampling into this split's part of the space
            question = questions.MAKERS[task](rng)
            # Test questions are unique while the task has unused ones (clean accuracy); train
            # may repeat (small tasks such as capitals need repetition to be learned).
            fresh = not want_test or question not in seen or tries >= 100
            if _is_test(question) == want_test and fresh:
                out.append(_example(question))
                seen.add(question)
                break
    return out


def to_conversation(ex: SynthExample) -> Conversation:
    return Conversation(turns=[Turn(ex.question, ex.answer, ex.thinking)])


def _size(ex: SynthExample) -> int:
    return len(ex.question) + len(ex.thinking or "") + len(ex.answer)


def to_conversations(examples: list[SynthExample], seed: int = 0,
                     multi_turn: float = MULTI_TURN) -> list[Conversation]:
    """Examples in order as conversations; about `multi_turn` of them get 2-3 turns (short
    exchanges only), so a model trained on them answers the latest question of a chat."""
    rng = random.Random(f"forge1-synth-turns-{seed}")
    out: list[Conversation] = []
    i = 0
    while i < len(examples):
        turns = [examples[i]]
        want = rng.choice((2, 3)) if rng.random() < multi_turn else 1
        while len(turns) < want and i + len(turns) < len(examples) and \
                sum(map(_size, turns)) + _size(examples[i + len(turns)]) <= _MULTI_TURN_CHARS:
            turns.append(examples[i + len(turns)])
        out.append(Conversation(turns=[Turn(e.question, e.answer, e.thinking) for e in turns]))
        i += len(turns)
    return out


def corpus_texts(n: int) -> Iterator[str]:
    """Message text (question, trace, answer) of `n` train examples, for tokenizer training."""
    for ex in make_split("train", n, seed=0):
        yield "\n".join(p for p in (ex.question, ex.thinking, ex.answer) if p)


def _write_jsonl(path: Path, conversations: list[Conversation]) -> None:
    with staged_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for conv in conversations:
            f.write(json.dumps({"text": render(conv)}, ensure_ascii=False) + "\n")


def write_synth(out_dir: str | Path, n_train: int = 20000, n_val: int = 500, seed: int = 0
                ) -> tuple[Path, Path]:
    """Write `train.jsonl` (train split) and `val.jsonl` (test split) of rendered conversations."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = out_dir / "train.jsonl", out_dir / "val.jsonl"
    _write_jsonl(train, to_conversations(make_split("train", n_train, seed), seed))
    _write_jsonl(val, to_conversations(make_split("test", n_val, seed), seed))
    return train, val


# The guide's own phrasings (its demo prompts and evaluate's extra ones), with new operands.
_GUIDE_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"What is {r.randint(11, 99)} * {r.randint(11, 99)}?",
    lambda r: (f"If a train travels at {r.randrange(20, 95, 5)} mph for "
               f"{_fmt(Decimal(r.randint(2, 12)) / 2)} hours, how far does it go?"),
    lambda r: f"What is the capital of {r.choice(sorted(tables.CAPITALS))}?",
    lambda r: "Sort these numbers: " + ", ".join(map(str, r.sample(range(100), 5))),
    lambda r: f"What is {r.randint(2, 99)} + {r.randint(2, 99)}?",
    lambda r: (f"I have {r.randint(5, 20)} apples and eat "
               f"{questions.NUMBER_WORDS[r.randint(1, 4)]}. How many apples are left?"),
)


def guide_questions(n: int, seed: int = 0) -> list[SynthExample]:
    """`n` fresh questions in the guide's phrasing, round-robin over its templates, each with
    an operand combination (or, for capitals, a question) of the test split: never trained."""
    rng = random.Random(f"forge1-guide-{seed}")
    out: list[SynthExample] = []
    seen: set[str] = set()
    while len(out) < n:
        make = _GUIDE_TEMPLATES[len(out) % len(_GUIDE_TEMPLATES)]
        for _ in range(1000):
            question = make(rng)
            if question not in seen and question not in _PINNED and _is_test(question):
                break
        seen.add(question)
        out.append(_example(question))
    return out
