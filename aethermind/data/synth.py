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

import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from aethermind import prompts
from aethermind.chat_format import Conversation, Turn, render
from aethermind.data import synth_questions as questions
from aethermind.data import synth_tables as tables
from aethermind.data.synth_questions import fmt as _fmt

TASKS = ("add", "sub", "mul", "compare", "sort", "count", "convert", "rate", "word", "capital",
         "chat")
# Round-robin order of tasks: arithmetic twice as often, it is the hardest to learn.
_MIX = ("add", "mul", "chat", "compare", "sort", "sub", "capital", "word", "count", "add",
        "rate", "mul", "convert", "chat", "capital", "sub", "sort", "word")
# The guide's prompts that have a checkable answer (all but the haiku).
GUIDE_PROMPTS = tuple(p for p in prompts.GUIDE_PROMPTS if p != prompts.CREATIVE)
# Never in test: the demo's prompts and the most common greetings.
_PINNED = frozenset((*GUIDE_PROMPTS, "Hello!", "Hi!", "Who are you?", "What is your name?",
                     prompts.GREETING, "Thank you!"))
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


# --- arithmetic ---------------------------------------------------------------------------
def _solve_add(m: re.Match) -> _Solution:
    a, b = int(m.group(1)), int(m.group(2))
    da, db = str(a)[::-1], str(b)[::-1]
    lines, carry = ["Add the digits from right to left."], 0
    for i in range(max(len(da), len(db))):
        terms = [int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0]
        terms += [carry] if carry else []
        s = sum(terms)
        carry = s // 10
        lines.append(" + ".join(map(str, terms)) + f" = {s}, write {s % 10}"
                     + (f", carry {carry}." if carry else "."))
    if carry:
        lines.append(f"Write the last carry {carry}.")
    lines.append(f"So {a} + {b} = {a + b}.")
    return _Solution("\n".join(lines), f"The answer is {a + b}.", "num", Decimal(a + b))


def _solve_sub(m: re.Match) -> _Solution:
    a, b = int(m.group(1)), int(m.group(2))
    if a < b:  # keep the column method honest: answer -(b - a)
        inner = _solve_sub(re.match(r"(\d+) (\d+)", f"{b} {a}"))
        lines = [f"{a} is less than {b}, so compute {b} - {a} and make it negative.",
                 inner.thinking, f"So {a} - {b} = {a - b}."]
        return _Solution("\n".join(lines), f"The answer is {a - b}.", "num", Decimal(a - b))
    da, db = str(a)[::-1], str(b)[::-1]
    lines, borrow = ["Subtract the digits from right to left."], 0
    for i in range(len(da)):
        x, y = int(da[i]), int(db[i]) if i < len(db) else 0
        left = f"{x} - 1 - {y}" if borrow else f"{x} - {y}"
        if x - borrow < y:
            lines.append(f"{left} needs a borrow: 1{left} = {x + 10 - borrow - y}.")
            borrow = 1
        else:
            lines.append(f"{left} = {x - borrow - y}.")
            borrow = 0
    lines.append(f"So {a} - {b} = {a - b}.")
    return _Solution("\n".join(lines), f"The answer is {a - b}.", "num", Decimal(a - b))


def _solve_mul(m: re.Match) -> _Solution:
    a, b = int(m.group(1)), int(m.group(2))
    big, small = (a, b) if b < 10 <= a else (b, a) if a < 10 <= b else (a, b)
    parts = [int(d) * 10 ** p for p, d in enumerate(str(small)[::-1]) if d != "0"][::-1]
    lines = [f"Split {small} into {' + '.join(map(str, parts))}."] if len(parts) > 1 else []
    for part in parts:
        if part >= 10:
            digit, zeros = int(str(part)[0]), len(str(part)) - 1
            lines.append(f"{big} * {digit} = {big * digit}, so {big} * {part} = {big * part}.")
            assert zeros >= 1
        else:
            lines.append(f"{big} * {part} = {big * part}.")
    if len(parts) > 1:
        lines.append(" + ".join(str(big * p) for p in parts) + f" = {a * b}.")
    if not parts:
        lines.append("Anything times 0 is 0.")
    lines.append(f"So {a} * {b} = {a * b}.")
    return _Solution("\n".join(lines), f"The answer is {a * b}.", "num", Decimal(a * b))


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
    return _Solution("\n".join(lines), f"The answer is {pick}.", "num", Decimal(pick))


def _solve_sort(m: re.Match) -> _Solution:
    order = f"{m.group(1)} {m.group(3)}".lower()
    descending = "largest to" in order or "descending" in order
    nums = [int(x) for x in re.findall(r"\d+", m.group(2))]
    word = "Largest" if descending else "Smallest"
    left, lines = list(nums), []
    while len(left) > 1:
        pick = max(left) if descending else min(left)
        lines.append(f"{word} of {', '.join(map(str, left))} is {pick}.")
        left.remove(pick)
    lines.append(f"Last is {left[0]}.")
    out = sorted(nums, reverse=descending)
    joined = ", ".join(map(str, out))
    lines.append(f"So the sorted list is {joined}.")
    return _Solution("\n".join(lines), f"The answer is {joined}.", "list", tuple(out))


def _solve_count(m: re.Match) -> _Solution:
    letter, word = m.group(1).lower(), m.group(2)
    running, steps = 0, []
    for ch in word:
        running += ch.lower() == letter
        steps.append(f"{ch} {running}")
    lines = [f"Spell it out: {' '.join(word)}.", "Keep a running count of "
             f"{letter}: {', '.join(steps)}.", f"So {letter} appears {running} times."]
    return _Solution("\n".join(lines), f"The answer is {running}.", "num", Decimal(running),
                     ("times", "time"))


def _solve_convert(m: re.Match) -> _Solution:
    value, src, dst = _num(m.group(1)), m.group(2).lower(), m.group(3).lower()
    factor = tables.CONVERSIONS[(src, dst)]
    out = value * factor
    lines = [f"1 {tables.UNITS[src][1]} = {factor} {dst}.", f"{_fmt(value)} * {factor} = "
             f"{_fmt(out)}.", f"So {_fmt(value)} {src} = {_fmt(out)} {dst}."]
    return _Solution("\n".join(lines), f"The answer is {_fmt(out)} {dst}.", "num", out,
                     tables.UNITS[dst])


def _solve_distance(m: re.Match) -> _Solution:
    speed, hours = _num(m.group(2)), _num(m.group(3))
    dist = speed * hours
    lines = ["Distance = speed * time.", f"{_fmt(speed)} * {_fmt(hours)} = {_fmt(dist)}.",
             f"So it travels {_fmt(dist)} miles."]
    return _Solution("\n".join(lines), f"The answer is {_fmt(dist)} miles.", "num", dist,
                     tables.UNITS["miles"])


def _solve_duration(m: re.Match) -> _Solution:
    dist, speed = _num(m.group(2)), _num(m.group(3))
    hours = dist / speed
    lines = ["Time = distance / speed.", f"{_fmt(dist)} / {_fmt(speed)} = {_fmt(hours)}.",
             f"So it takes {_fmt(hours)} hours."]
    return _Solution("\n".join(lines), f"The answer is {_fmt(hours)} hours.", "num", hours,
                     tables.UNITS["hours"])


def _solve_cost(m: re.Match) -> _Solution:
    price, count, item = _num(m.group(2)), _num(m.group(3)), m.group(4).lower()
    total = price * count
    lines = ["Total = price * count.", f"{_fmt(price)} * {_fmt(count)} = {_fmt(total)}.",
             f"So {_fmt(count)} {item} cost {_fmt(total)} dollars."]
    return _Solution("\n".join(lines), f"The answer is {_fmt(total)} dollars.", "num", total,
                     tables.UNITS["dollars"])


def _solve_word(m: re.Match) -> _Solution:
    a, items, verb = int(m.group(2)), m.group(3).lower(), m.group(4).lower()
    b_text = m.group(5).lower()
    b = questions.NUMBER_WORDS.index(b_text) if b_text.isalpha() else int(b_text)
    adding = verb in ("buy", "buys", "get", "gets")
    result = a + b if adding else a - b
    step = f"Add {b}: {a} + {b} = {result}." if adding else \
        f"Take away {b}: {a} - {b} = {result}."
    end = f"So there are {result} {items} now." if adding else f"So {result} {items} are left."
    units = (items, _SINGULAR.get(items, items.rstrip("s")))
    return _Solution("\n".join([f"Start with {a} {items}.", step, end]),
                     f"The answer is {result}.", "num", Decimal(result), units)


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
    return _Solution(None, m.group(1), "text", _norm_text(m.group(1)))


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
    ("capital", rf"(?:what is|which city is|name) the capital of ({_COUNTRIES})[?.]?",
     _solve_capital),
    ("chat", rf"(?:{_FIXED})[!?.]*", _solve_chat_fixed),
    ("chat", r"(?:hi|hello)[,!]? (?:my name is|i am|i'm) ([A-Z][a-z]+)[.!]?", _solve_chat_name),
    ("chat", r"repeat after me: ([a-z]+(?: [a-z]+)*)\.?", _solve_chat_repeat),
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
def _is_test(question: str) -> bool:
    if question in _PINNED:
        return False
    digest = hashlib.sha256(_norm_question(question).lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _TEST_BUCKETS == 0


def _example(question: str) -> SynthExample:
    solved = solve(question)
    assert solved is not None, f"generator and solver disagree on {question!r}"
    task, sol = solved
    return SynthExample(task, question, sol.thinking, sol.answer)


def make_split(split: str, n: int, seed: int = 0) -> list[SynthExample]:
    """`n` examples of `split` ("train" | "test"); the same (split, n, seed) gives the same list.

    Train and test never share a question, whatever their seeds (the partition is a hash of the
    question text). Tasks come round-robin in a fixed mix, so any prefix is balanced.
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
        task = _MIX[slot % len(_MIX)]
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


def corpus_texts(n: int) -> Iterator[str]:
    """Message text (question, trace, answer) of `n` train examples, for tokenizer training."""
    for ex in make_split("train", n, seed=0):
        yield "\n".join(p for p in (ex.question, ex.thinking, ex.answer) if p)


def _write_jsonl(path: Path, examples: list[SynthExample]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps({"text": render(to_conversation(ex))}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_synth(out_dir: str | Path, n_train: int = 20000, n_val: int = 500, seed: int = 0
                ) -> tuple[Path, Path]:
    """Write `train.jsonl` (train split) and `val.jsonl` (test split) of rendered conversations."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = out_dir / "train.jsonl", out_dir / "val.jsonl"
    _write_jsonl(train, make_split("train", n_train, seed))
    _write_jsonl(val, make_split("test", n_val, seed))
    return train, val
