"""Question generators of the built-in reasoning data: one `random.Random -> str` per task.

Each question must fullmatch its task's pattern in `synth.py` (which solves and scores it);
`synth._example` asserts this for every generated question, and the tests generate thousands.
Numbers are drawn small-to-medium on purpose: a tiny model learns one-digit steps first.
Usage: `MAKERS["add"](random.Random(0))` -> "What is 7 + 45?".
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

from aethermind.data import synth_tables as tables

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten")


def fmt(x: Decimal | int) -> str:
    """150.0 -> '150', 2.50 -> '2.5': one canonical spelling per value."""
    d = Decimal(x)
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _operand(rng: random.Random) -> int:
    """1 to 3 digits, each length equally likely: short sums are common, long ones present."""
    digits = rng.randint(1, 3)
    return rng.randint(1 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def q_add(rng: random.Random) -> str:
    a, b = _operand(rng), _operand(rng)
    return f"Calculate {a} + {b}." if rng.random() < 0.2 else f"What is {a} + {b}?"


def q_sub(rng: random.Random) -> str:
    a, b = sorted((_operand(rng), _operand(rng)), reverse=True)
    return f"What is {a} - {b}?"


def q_mul(rng: random.Random) -> str:
    b = rng.randint(2, 12) if rng.random() < 0.6 else rng.randint(13, 99)
    return f"What is {rng.randint(2, 99)} * {b}?"


def q_compare(rng: random.Random) -> str:
    a = _operand(rng)
    b = rng.randint(10 ** (len(str(a)) - 1), 10 ** len(str(a)) - 1) if rng.random() < 0.6 \
        else _operand(rng)
    if a == b:
        b = a + 1
    return f"Which is {rng.choice(('larger', 'bigger', 'smaller'))}, {a} or {b}?"


def q_sort(rng: random.Random) -> str:
    nums = ", ".join(map(str, rng.sample(range(100), rng.randint(3, 6))))
    order = rng.choice(("", "", " from smallest to largest", " from largest to smallest"))
    return f"Sort these numbers{order}: {nums}"


def q_count(rng: random.Random) -> str:
    word = rng.choice(tables.WORDS)
    letter = rng.choice(word) if rng.random() < 0.75 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return f'How many times does the letter "{letter}" appear in "{word}"?'


def q_convert(rng: random.Random) -> str:
    src, dst = rng.choice(sorted(tables.CONVERSIONS))
    value = rng.randint(2, 20) + (0.5 if rng.random() < 0.3 else 0)
    return f"Convert {fmt(Decimal(str(value)))} {src} to {dst}."


def q_rate(rng: random.Random) -> str:
    vehicle, speed = rng.choice(tables.VEHICLES), rng.randrange(20, 95, 5)
    hours = Decimal(rng.choice((2, 3, 4, 5, 6, 7, 8, 10, 12))) / 2
    trip = f"travels at {speed} mph for {fmt(hours)} {'hour' if hours == 1 else 'hours'}"
    kind = rng.random()
    if kind < 0.25:
        return f"If a {vehicle} {trip}, how far does it go?"
    if kind < 0.5:
        return f"A {vehicle} {trip}. How far does it travel?"
    if kind < 0.75:
        return (f"How long does it take a {vehicle} to travel {fmt(speed * hours)} miles at "
                f"{speed} mph?")
    one, many = rng.choice(tables.ITEMS)
    price, count = rng.randint(1, 12), rng.randint(2, 12)
    return f"One {one} costs {price} dollars. How much do {count} {many} cost?"


def q_word(rng: random.Random) -> str:
    """Take-away / add-on stories: "I have 3 apples and eat one. How many apples are left?"."""
    many = rng.choice(tables.ITEMS)[1]
    a = rng.randint(2, 20)
    b = rng.randint(1, min(a - 1, 10)) if rng.random() < 0.6 else rng.randint(1, 10)
    b_text = NUMBER_WORDS[b] if rng.random() < 0.4 else str(b)
    if b >= a or rng.random() < 0.4:  # adding on
        if rng.random() < 0.5:
            return f"I have {a} {many} and buy {b_text} more. How many {many} do I have now?"
        name = rng.choice(tables.NAMES)
        return (f"{name} has {a} {many} and gets {b_text} more. "
                f"How many {many} does {name} have now?")
    verb = rng.choice(("eat", "give away", "lose", "sell"))
    if rng.random() < 0.5:
        return f"I have {a} {many} and {verb} {b_text}. How many {many} are left?"
    name = rng.choice(tables.NAMES)
    verb3 = {"eat": "eats", "give away": "gives away", "lose": "loses", "sell": "sells"}[verb]
    return f"{name} has {a} {many} and {verb3} {b_text}. How many {many} are left?"


def q_capital(rng: random.Random) -> str:
    return rng.choice(tables.CAPITAL_PHRASINGS).format(rng.choice(sorted(tables.CAPITALS)))


def q_chat(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        question = rng.choice(sorted(tables.CHAT_REPLIES))
        if rng.random() < 0.4:  # the same question with other punctuation or a lower-case start
            question = question.rstrip("!?.") + rng.choice(("", ".", "!", "?"))
            question = question[0].lower() + question[1:] if rng.random() < 0.5 else question
        return question
    if kind < 0.75:
        return rng.choice(NAME_PHRASINGS).format(rng.choice(tables.NAMES))
    return "Repeat after me: " + " ".join(rng.sample(tables.WORDS, rng.randint(1, 4)))


NAME_PHRASINGS = ("Hi, my name is {}.", "Hello! I am {}.", "Hello, I'm {}.", "Hi! My name is {}.",
                  "Hi, I am {}.")


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


def q_drill(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:
        return f"Spell {rng.choice(tables.WORDS)}."
    if kind < 0.5:  # copying: words, names and countries, as chats and capitals copy them
        pool = (tables.WORDS, tables.NAMES, sorted(tables.CAPITALS))[rng.randrange(3)]
        return "Copy: " + " ".join(rng.choice(pool) for _ in range(rng.randint(2, 6)))
    return "Facts: " + ", ".join(_fact(rng) for _ in range(8))


MAKERS: dict[str, Callable[[random.Random], str]] = {
    "add": q_add, "sub": q_sub, "mul": q_mul, "compare": q_compare, "sort": q_sort,
    "count": q_count, "convert": q_convert, "rate": q_rate, "word": q_word,
    "capital": q_capital, "chat": q_chat, "drill": q_drill,
}
