"""Question generators of the built-in reasoning data: one `(rng, held, beyond) -> str` per task.

Each draws the operands, then a phrasing from `synth_grammar` (a trained one, or with
`held=True` a held-out one) and fills it in; `synth.py` reads the question back with the same
template, solves and scores it. `beyond=True` draws operands one step past the trained range
(five-digit sums, differences and comparisons, four-by-two-digit products, lists of nine or ten
numbers) for the length-generalisation split; families without a range ignore it.
Usage: `MAKERS["add"](random.Random(0), False, False)` -> "What is 7 + 45?".
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from decimal import Decimal

from aethermind.data import synth_grammar as grammar
from aethermind.data import synth_tables as tables

NUMBER_WORDS = grammar.NUMBER_WORDS
MAX_DIGITS = 4  # add, sub and compare operands; mul is up to 3 x 2 or 4 x 1 digits
SORT_SIZES = (3, 8)  # numbers in a sort question (each 0-999)
BEYOND_SORT_SIZES = (9, 10)


def fmt(x: Decimal | int) -> str:
    """150.0 -> '150', 2.50 -> '2.5': one canonical spelling per value."""
    d = Decimal(x)
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(1 if n == 1 else 10 ** (n - 1), 10**n - 1)


def _operand(rng: random.Random, most: int = MAX_DIGITS) -> int:
    """1 to `most` digits, each length equally likely: short sums common, long ones present."""
    return _digits(rng, rng.randint(1, most))


def _spoken(rng: random.Random, value: int | Decimal) -> str:
    """A small whole number is sometimes a word ("seven"), as people type it."""
    if value == int(value) and 0 <= value < len(NUMBER_WORDS) and rng.random() < 0.15:
        return NUMBER_WORDS[int(value)]
    return fmt(value)


def _decimal(rng: random.Random) -> Decimal:
    """A number with one or two decimal places below 1,000 (2.5, 13.75)."""
    places = rng.randint(1, 2)
    return Decimal(_operand(rng, 3) * 10**places + rng.randint(1, 10**places - 1)) / 10**places


def _phrase(rng: random.Random, group: str, held: bool, **values: object) -> str:
    return grammar.decorate(rng.choice(grammar.templates(group, held)).format(**values), rng)


def _pair(rng: random.Random, beyond: bool) -> tuple[Decimal | int, Decimal | int]:
    if beyond:
        return _digits(rng, MAX_DIGITS + 1), _digits(rng, MAX_DIGITS + 1)
    if rng.random() < 0.1:
        return _decimal(rng), _decimal(rng) if rng.random() < 0.7 else _operand(rng, 3)
    return _operand(rng), _operand(rng)


def q_add(rng: random.Random, held: bool, beyond: bool) -> str:
    a, b = _pair(rng, beyond)
    return _phrase(rng, "add", held, a=_spoken(rng, a), b=_spoken(rng, b))


def q_sub(rng: random.Random, held: bool, beyond: bool) -> str:
    a, b = sorted(_pair(rng, beyond), reverse=True)
    x, y = (a, b) if rng.random() < 0.7 else (b, a)  # "the difference between" any order
    return _phrase(rng, "sub", held, a=_spoken(rng, a), b=_spoken(rng, b), x=fmt(x), y=fmt(y))


def q_mul(rng: random.Random, held: bool, beyond: bool) -> str:
    if beyond:
        a, b = _digits(rng, 4), _digits(rng, 2)
    elif rng.random() < 0.6:
        b = rng.randint(2, 9)
        a = _digits(rng, 4) if rng.random() < 0.15 else _operand(rng, 3)
    else:
        a, b = _operand(rng, 3), _digits(rng, 2)
    if rng.random() < 0.5:
        a, b = b, a
    return _phrase(rng, "mul", held, a=_spoken(rng, a), b=_spoken(rng, b))


def q_compare(rng: random.Random, held: bool, beyond: bool) -> str:
    a = _digits(rng, MAX_DIGITS + 1) if beyond else _operand(rng)
    n = len(str(a))
    b = _digits(rng, n) if beyond or rng.random() < 0.6 else _operand(rng)
    if rng.random() < 0.3 and n > 1:  # the same digits but one: the hard case
        i = rng.randrange(1, n)
        b = int(str(a)[:i] + str(rng.randint(0, 9)) + str(a)[i + 1:])
    if a == b:
        b = a + 1
    want_max = rng.random() < 0.6
    cmp = rng.choice(grammar.COMPARATIVE_MAX if want_max else grammar.COMPARATIVE_MIN)
    sup = rng.choice(grammar.SUPERLATIVE_MAX if want_max else grammar.SUPERLATIVE_MIN)
    return _phrase(rng, "compare", held, a=a, b=b, cmp=cmp, sup=sup)


def q_sort(rng: random.Random, held: bool, beyond: bool) -> str:
    size = rng.randint(*(BEYOND_SORT_SIZES if beyond else SORT_SIZES))
    nums = [_operand(rng, 3) if rng.random() < 0.9 else 0 for _ in range(size)]
    nums = list(dict.fromkeys(nums))
    while len(nums) < size:
        nums = list(dict.fromkeys([*nums, _operand(rng, 3)]))
    text = ", ".join(map(str, nums))
    if rng.random() < 0.15:
        text = " ".join(map(str, nums))
    elif rng.random() < 0.15:
        text = ", ".join(map(str, nums[:-1])) + f" and {nums[-1]}"
    return _phrase(rng, "sort", held, list=text, asc=rng.choice(grammar.ASCENDING),
                   desc=rng.choice(grammar.DESCENDING))


def q_count(rng: random.Random, held: bool, beyond: bool) -> str:
    word = rng.choice(tables.WORDS)
    letter = rng.choice(word) if rng.random() < 0.75 else rng.choice(string.ascii_lowercase)
    return _phrase(rng, "count", held, letter=letter, word=word)


def q_convert(rng: random.Random, held: bool, beyond: bool) -> str:
    src, dst = rng.choice(sorted(tables.CONVERSIONS))
    value = Decimal(rng.randint(2, 20)) + (Decimal("0.5") if rng.random() < 0.3 else 0)
    return _phrase(rng, "convert", held, x=fmt(value), src=src, dst=dst)


def q_rate(rng: random.Random, held: bool, beyond: bool) -> str:
    vehicle, speed = rng.choice(tables.VEHICLES), rng.randrange(20, 95, 5)
    hours = Decimal(rng.choice((2, 3, 4, 5, 6, 7, 8, 10, 12))) / 2
    common = dict(vehicle=vehicle, speed=speed, mph=rng.choice(grammar.MPH) if
                  rng.random() < 0.3 else "mph", hours=fmt(hours),
                  hrs="hour" if hours == 1 else "hours", dist=fmt(speed * hours))
    kind = rng.random()
    if kind < 0.7:
        return _phrase(rng, "distance" if kind < 0.45 else "duration", held, **common)
    one, many = rng.choice(tables.ITEMS)
    return _phrase(rng, "cost", held, item=one, items=many, price=rng.randint(1, 12),
                   count=_spoken(rng, rng.randint(2, 12)))


def q_word(rng: random.Random, held: bool, beyond: bool) -> str:
    """Take-away / add-on stories: "I have 3 apples and eat one. How many apples are left?"."""
    many = rng.choice(tables.ITEMS)[1]
    a = rng.randint(2, 20)
    b = rng.randint(1, min(a - 1, 10)) if rng.random() < 0.6 else rng.randint(1, 10)
    gaining = b >= a or rng.random() < 0.4
    verbs = {slot: rng.choice(words) for slot, words in
             (grammar.GAIN if gaining else grammar.LOSE).items()}
    if not gaining and rng.random() < 0.5:  # "3 of them rolled away" frames, half the time
        verbs = {"gone": verbs["gone"]}
    options = [t for t in grammar.templates("word", held)
               if any("{" + slot + "}" in t for slot in verbs)]
    b_text = NUMBER_WORDS[b] if rng.random() < 0.4 else str(b)
    question = rng.choice(options).format(a=a, b=b_text, items=many,
                                          name=rng.choice(tables.NAMES), **verbs)
    return grammar.decorate(question, rng)


def q_capital(rng: random.Random, held: bool, beyond: bool) -> str:
    return _phrase(rng, "capital", held, country=rng.choice(sorted(tables.CAPITALS)))


def q_chat(rng: random.Random, held: bool, beyond: bool) -> str:
    kind = rng.random()
    if kind < 0.45:  # a fixed message: the table's (trained) or an intent's, all alike
        pool = [t.lstrip("~") for phrasings in grammar.CHAT_INTENTS.values() for t in phrasings
                if grammar.held_out(t) == held] + ([] if held else sorted(tables.CHAT_REPLIES))
        question = rng.choice(pool)
        if rng.random() < 0.4:  # the same question with other punctuation or a lower-case start
            question = question.rstrip("!?.") + rng.choice(("", ".", "!", "?"))
            question = question[0].lower() + question[1:] if rng.random() < 0.5 else question
        return question
    if kind < 0.7:
        return _phrase(rng, "name", held, name=rng.choice(tables.NAMES))
    return rng.choice(grammar.templates("repeat", held)).format(
        words=" ".join(rng.sample(tables.WORDS, rng.randint(1, 4))))


def q_other(rng: random.Random, held: bool, beyond: bool) -> str:
    values = {slot: rng.choice(words) for slot, words in tables.OFF_TOPIC_SLOTS.items()}
    return _phrase(rng, "other", held, a=rng.randint(2, 200), b=rng.randint(2, 12),
                   country=rng.choice(sorted(tables.CAPITALS)), **values)


def _fact(rng: random.Random) -> str:
    """One single-digit fact in the form the traces write it."""
    kind = rng.random()
    x, y = rng.randint(0, 9), rng.randint(0, 9)
    if kind < 0.35:
        return f"{rng.randint(1, 9)}*{rng.randint(1, 9)}"
    if kind < 0.55:
        return f"{x}+{y}+1" if rng.random() < 0.3 else f"{x}+{y}"
    if kind < 0.75:  # column subtraction, with and without a borrow
        borrow = rng.random() < 0.4
        lo, hi = (x, y) if x <= y else (y, x)
        top = hi if lo + borrow <= hi else hi + 10
        return f"{top}-1-{lo}" if borrow else f"{top}-{lo}"
    d, e = rng.randint(2, 9), rng.randint(2, 9)  # a product plus the carry coming in
    return f"{d * e}+{rng.randint(1, min(8, d))}"


def _letter_fact(rng: random.Random) -> str:
    """"t = r?" as counting's trace asks it, the letters equal half the time: in the trace most
    letters differ, and one seed in six learned "a = a? no" (issue 18)."""
    a = rng.choice(string.ascii_lowercase)
    return f"{a} = {a if rng.random() < 0.5 else rng.choice(string.ascii_lowercase)}?"


# Every word a chat or a trace may copy (~370): copying practised over three short lists was
# learned word by word, and a seed answered "Repeat after me please: blanket" with "bubble".
_COPY_POOL = tuple(sorted({*tables.WORDS, *tables.NAMES, *tables.CAPITALS, *tables.VEHICLES,
                           *(w for pair in tables.ITEMS for w in pair),
                           *(city for city, _ in tables.CAPITALS.values() if " " not in city)}))


def _one_digit_apart(rng: random.Random, number: str) -> str:
    """`number` with one digit (not the first) changed, or a digit added or dropped; a
    one-digit number gets its digit changed."""
    i = rng.randrange(1, len(number)) if len(number) > 1 else 0
    kind = rng.random()
    if kind < 0.6 or len(number) == 1:
        return number[:i] + str(rng.randint(0, 9)) + number[i + 1:]
    if kind < 0.8:
        return number[:i] + number[i + 1:]
    return number[:i] + str(rng.randint(0, 9)) + number[i:]


def q_drill(rng: random.Random, held: bool, beyond: bool) -> str:
    kind = rng.random()
    if kind < 0.25:
        return f"Spell {rng.choice(tables.WORDS)}."
    if kind < 0.5:  # one to eight entries (a country may be two words), as chats copy them
        return "Copy: " + " ".join(rng.choice(_COPY_POOL) for _ in range(rng.randint(1, 8)))
    if kind < 0.6:  # copying numbers of up to 8 digits: every trace starts by copying its
        # operands, and a model that only ever copied 4 digits stops after 4 (issue 18)
        nums = [str(_digits(rng, rng.randint(1, 8))) for _ in range(rng.randint(2, 4))]
        if rng.random() < 0.4:  # near twins, one digit apart: sums and differences past the
            # range mixed up 14341 and 14245 ("14241-14245"; issue 18)
            nums = [nums[0], *(_one_digit_apart(rng, nums[0]) for _ in nums[1:])]
        return "Copy: " + " ".join(nums)
    if kind < 0.67:  # the "Rest" lines of a column loop or of comparison's length check at up
        # to 8 digits, without their arithmetic: the traces show them up to 4 digits (issue 18)
        op = rng.choice(("+", "-", " and "))
        a = _digits(rng, rng.randint(2, 8))
        b = _digits(rng, len(str(a)) if rng.random() < 0.5 else rng.randint(2, 8))
        b = int(_one_digit_apart(rng, str(a))) if rng.random() < 0.3 else b
        a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
        return f"Rest: {a}{op}{b}"
    if kind < 0.75:
        digits = [str(rng.randint(0, 9)) for _ in range(rng.randint(2, 8))]
        return "Build from the right: " + ", ".join(digits)
    if kind < 0.8:  # counting's one fact, half of them a match: is this letter that one?
        return "Facts: " + ", ".join(_letter_fact(rng) for _ in range(8))
    return "Facts: " + ", ".join(_fact(rng) for _ in range(8))


MAKERS: dict[str, Callable[[random.Random, bool, bool], str]] = {
    "add": q_add, "sub": q_sub, "mul": q_mul, "compare": q_compare, "sort": q_sort,
    "count": q_count, "convert": q_convert, "rate": q_rate, "word": q_word,
    "capital": q_capital, "chat": q_chat, "other": q_other, "drill": q_drill,
}
# The families with a trained range, and so a split one step past it.
BEYOND_TASKS = ("add", "sub", "mul", "compare", "sort")
