"""Traces and solvers of the built-in reasoning data: read a question back, solve it, show how.

`solve(question)` finds the phrasing (`synth_grammar`) a question was written in and returns
its task and a `Solution`: a short, regular thinking trace (one mechanical step per line, the
same wording every time), the answer, and what `synth.score` accepts. Every trace starts by
copying what was asked into one canonical line ("36+27:", "Compare 83 and 38.", "Smallest
first: 95, 12, 7.", "Speed 60 mph and 3 hours."), so whatever the phrasing, the steps after it
work on the operands, and a number is only ever written right after it was copied or computed
(issue 18).
Usage: `task, sol = solve("Please add 36 and 27.")`; `sol.thinking`, `sol.answer`.
"""

from __future__ import annotations

import bisect
import functools
import operator
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from aethermind.data import synth_grammar as grammar
from aethermind.data import synth_tables as tables
from aethermind.data.synth_questions import fmt as _fmt

DRILL = "drill"  # train-only practice of the facts and spellings the traces use; never scored


@dataclass(frozen=True)
class Solution:
    """A solved question plus what `score` accepts: kind num|list|text, value, unit words,
    and `key`: the operands that train and test must not share (`synth.split_key`)."""

    thinking: str | None
    answer: str
    kind: str
    value: object
    accept: tuple[str, ...] = ()  # unit words (num) or lead-in phrases (text)
    key: str = ""


def norm_question(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def norm_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).lower().split()).rstrip(".!? ")


def _value(text: str) -> Decimal:
    """A number as asked: digits, a decimal, or a number word ("seven")."""
    word = text.lower()
    return Decimal(grammar.NUMBER_WORDS.index(word)) if word in grammar.NUMBER_WORDS \
        else Decimal(text)


def _whole(value: Decimal) -> bool:
    return value == value.to_integral_value()


# --- digit-local traces -------------------------------------------------------------------
# Every computed step below is one single-digit fact written the same way in every family
# ("7*6=42", "7+5+1=13", "13-1-5=7"), so the facts a small model must learn are few (about
# 300) and shared: a multi-digit result is always assembled from written-down digits, never
# produced in one step (`57 * 6 = 342` in one step is 2,000 facts, most seen twice an epoch).
def _rest(sa: str, sb: str, done: int, op: str) -> str:
    """What a column loop (`op` + or -) has not used yet after `done` columns: " Rest 45+12."
    (a used-up operand written 0, as the next line adds or subtracts its 0; "" when nothing
    is left)."""
    ra, rb = _unused(sa, done), _unused(sb, done)
    return f" Rest {ra or '0'}{op}{rb or '0'}." if ra or rb else ""


def _unused(digits: str, done: int) -> str:
    """What is left of a number after its last `done` digits were used ("" when none)."""
    return digits[:max(len(digits) - done, 0)]


def _built(digit: int | str, built: str) -> str:
    """The result so far with the next digit (or last carry) written on its left."""
    return f"{digit}{built}"


# Column addition and subtraction end each line with what is left of the operands ("Rest")
# and the result so far ("Built"), so every line takes its digits from the ends of the line
# above and adds one digit to the left of its result: the same look at any length. Without
# them a line took the n-th digit from the right of the first line and the answer read the
# n-th line back, and past the trained length both took the wrong ones: 37 of 40 five-digit
# sums and differences were copied right and 9 answered right ("1+4" for the tens of
# 50133+77548). With them (and drills of both at up to 8 digits), 60% and 57% (issue 18).
def _add_lines(a: int, b: int) -> list[str]:
    """Column addition, right to left: one digit sum per line with its carry."""
    sa, sb = str(a), str(b)
    da, db = sa[::-1], sb[::-1]
    lines, carry, built = [f"{a}+{b}:"], 0, ""
    for i in range(max(len(da), len(db))):
        terms = [int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0]
        terms += [carry] if carry else []
        s = sum(terms)
        carry = s // 10
        built = _built(s % 10, built)
        lines.append("+".join(map(str, terms)) + f"={s}" + (f", carry {carry}." if carry else ".")
                     + _rest(sa, sb, i + 1, "+") + f" Built {built}.")
    if carry:
        lines.append(f"Write the last carry {carry}. Built {_built(carry, built)}.")
    lines.append(f"So {a}+{b}={a + b}.")
    return lines


def _sub_lines(a: int, b: int) -> list[str]:
    """Column subtraction of b <= a, right to left: one digit difference (and borrow) a line."""
    sa, sb = str(a), str(b)
    da, db = sa[::-1], sb[::-1]
    lines, borrow, built = [f"{a}-{b}:"], 0, ""
    for i in range(len(da)):
        x, y = int(da[i]), int(db[i]) if i < len(db) else 0
        left = f"{x}-1-{y}" if borrow else f"{x}-{y}"
        need = x - borrow < y
        digit = x - borrow - y + 10 * need
        line = f"{left} needs a borrow: 1{left}={digit}." if need else f"{left}={digit}."
        borrow = int(need)
        built = _built(digit, built)
        lines.append(line + _rest(sa, sb, i + 1, "-") + f" Built {built}.")
    lines.append(f"So {a}-{b}={a - b}.")
    return lines


def _times_digit_lines(x: int, d: int) -> list[str]:
    """x * d (d one digit), right to left: one single-digit product per line, carry explicit.
    No "Rest" or "Built" here (see `_rest`): x has at most four digits, past the range too,
    and with them products past the range stayed at 0% while every mul trace grew ~14%."""
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
    # A multiplier of several non-zero digits names its parts first ("46 = 6 + 40."), so the
    # next part is read off that line: products of four by two digits (past the range) ended
    # after the first part, as every trained product of a four-digit number has one part. With
    # it they take both parts, and still fail (0%) in the digit lines of 4-digit x (issue 18).
    places = [(place, int(c)) for place, c in enumerate(str(y)[::-1]) if c != "0"]
    plan = " + ".join(f"{d}{'0' * place}" for place, d in places)
    lines, partials = ([f"{y} = {plan}."] if len(places) > 1 else []), []
    for place, d in places:
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
    places = sum(_decimals(v) for v in (a, b))
    ia, ib = (int(_fmt(v).replace(".", "")) for v in (a, b))
    if not places:
        return _mul_lines(ia, ib)
    lines = [f"{_fmt(a)}*{_fmt(b)}: use {ia}*{ib}, then put the point back."]
    lines += _mul_lines(ia, ib)
    lines.append(f"{ia * ib} with the point {places} place{'s' if places > 1 else ''} left is "
                 f"{_fmt(a * b)}.")
    return lines


def _decimals(value: Decimal) -> int:
    """Digits after the point as the value is written: 33.3 -> 1, 809 -> 0."""
    return len(_fmt(value).partition(".")[2])


def _point_lines(a: Decimal, b: Decimal, op: str, body: Callable[[int, int], list[str]]
                 ) -> list[str]:
    """a op b with decimals: both operands padded to the most places, then the same column
    trace on whole numbers and the point put back (as `_decimal_mul_lines` does for
    products). The padding gets its own line because the model, asked to pad and drop the
    point at once, aligned 33.3+5.91 as 333+591 (issue 18). Its words are in no question: a
    first version ("33.3 has 1 after the point", "With 2 places each") shared "has" and "each"
    with word and rate questions and scored 80.6% on held-out phrasings against 84.6%."""
    counts = (_decimals(a), _decimals(b))
    places = max(counts)
    ia, ib = int(a * 10**places), int(b * 10**places)
    if not places:
        return body(ia, ib)
    result = a + b if op == "+" else a - b
    whole = int(result * 10**places)
    return [f"{_fmt(a)}{op}{_fmt(b)}: decimals {counts[0]} and {counts[1]}, so pad to {places}.",
            f"{_padded(a, places)}{op}{_padded(b, places)}: use {ia}{op}{ib}, then put the "
            "point back.",
            *body(ia, ib),
            f"{whole} with the point {places} place{'s' if places > 1 else ''} left is "
            f"{_fmt(result)}."]


def _padded(value: Decimal, places: int) -> str:
    """value written with exactly `places` decimals: 33.3 with 2 -> 33.30, 809 -> 809.00."""
    return format(value.quantize(Decimal(1).scaleb(-places)), "f")


def _sub_int_lines(a: int, b: int) -> list[str]:
    if a < b:  # keep the column method honest: answer -(b - a)
        return [f"{a} is less than {b}, so compute {b}-{a} and make it negative.",
                *_sub_lines(b, a), f"So {a}-{b}={a - b}."]
    return _sub_lines(a, b)


def _solve_add(g: dict) -> Solution:
    a, b = _value(g["a"]), _value(g["b"])
    return Solution("\n".join(_point_lines(a, b, "+", _add_lines)),
                    f"The answer is {_fmt(a + b)}.", "num", a + b, key=f"{_fmt(a)} {_fmt(b)}")


def _solve_sub(g: dict) -> Solution:
    if g.get("x") is not None:  # "the difference between x and y": larger minus smaller
        a, b = sorted((_value(g["x"]), _value(g["y"])), reverse=True)
    else:
        a, b = _value(g["a"]), _value(g["b"])
    return Solution("\n".join(_point_lines(a, b, "-", _sub_int_lines)),
                    f"The answer is {_fmt(a - b)}.", "num", a - b, key=f"{_fmt(a)} {_fmt(b)}")


def _solve_mul(g: dict) -> Solution:
    a, b = _value(g["a"]), _value(g["b"])
    if _whole(a) and _whole(b):
        x, y = int(a), int(b)
        lines = ([] if x < 10 and y < 10 else [f"{x}*{y}:"]) + _mul_lines(x, y)
    else:
        lines = _decimal_mul_lines(a, b)
    return Solution("\n".join(lines), f"The answer is {_fmt(a * b)}.", "num", a * b,
                    key=f"{_fmt(a)} {_fmt(b)}")


def _from_the_left(a: str, b: str) -> list[str]:
    """Two numbers of one length, digit by digit from the left up to the first that differs:
    ["1 = 1", "0 < 2"] (comparison's and duration's traces)."""
    steps = []
    for x, y in zip(a, b, strict=True):
        steps.append(f"{x} {'=' if x == y else '>' if x > y else '<'} {y}")
        if x != y:
            break
    return steps


def _length_lines(sa: str, sb: str) -> list[str]:
    """Comparison's length check: both numbers lose their last digit a line ("Rest 959 and
    52.", the column loops' look) until one runs out, so no digit count is ever read off.
    Counted ("Both have 4 digits"), five-digit pairs were counted as four in 29 of 60. With the
    chain the length is right past the range (issue 18); dropping the first digit instead did
    no better."""
    done = 1
    lines = []
    while (ra := _unused(sa, done)) and (rb := _unused(sb, done)):
        lines.append(f"Rest {ra} and {rb}.")
        done += 1
    ra, rb = _unused(sa, done), _unused(sb, done)
    end = f"Rest {ra or 'nothing'} and {rb or 'nothing'}:"
    if ra or rb:
        return [*lines, f"{end} {sa if ra else sb} has more digits."]
    return [*lines, f"{end} the same number of digits. Compare from the left."]


def _solve_compare(g: dict) -> Solution | None:
    a, b = _value(g["a"]), _value(g["b"])
    if not (_whole(a) and _whole(b)) or a == b:
        return None
    a, b = int(a), int(b)
    word = (g.get("cmp") or g.get("sup")).lower()
    want_max = word in grammar.COMPARATIVE_MAX + grammar.SUPERLATIVE_MAX
    sa, sb = str(a), str(b)
    lines = [f"Compare {a} and {b}.", *_length_lines(sa, sb)]
    if len(sa) == len(sb):
        lines += [f"{step}." for step in _from_the_left(sa, sb)]
    pick = max(a, b) if want_max else min(a, b)
    # The larger is named by its place in the first line, not copied, so after the first line
    # a number is copied again only for the answer. Written out ("So 95903 is larger and 523 is
    # smaller"), copies of five-digit numbers past the range lost a digit there in 11 of 60.
    lines.append(f"So the {'first' if a > b else 'second'} is larger.")
    lines.append(f"The {'larger' if want_max else 'smaller'} one is {pick}.")
    return Solution("\n".join(lines), f"The answer is {pick}.", "num", Decimal(pick),
                    key=f"{a} {b}")


def _solve_sort(g: dict) -> Solution:
    """Insertion on numbers padded to one width: the first line copies the list as asked, the
    order and the width of the longest number; then each line takes the next number of that
    list, padded with zeros to the width, and writes the line above with it put in place.
    Each choice is the new number against the next one copied, and at one width every
    number's first digit sits at the same place, so the choice is the first digit that
    differs. Unpadded, 10 of a seed's 14 misses were such choices (49 put after 258, 69
    before 93); padded, held-out sorts went from 62% to 86% (six seeds). Padding the whole
    list while copying it dropped and changed numbers; one number at a time, beside the
    number it pads, seldom. The answer drops the zeros again."""
    nums = [int(x) for x in re.findall(r"\d+", g["list"])]
    descending = g.get("desc") is not None
    width = max(len(str(x)) for x in nums)

    def pad(x: int) -> str:
        return str(x).zfill(width)

    order = "Largest first" if descending else "Smallest first"
    lines = [f"{order}, {width} digits each: {', '.join(map(str, nums))}."]
    done: list[int] = []
    for x in nums:  # after any equal number, as a stable sort keeps them
        bisect.insort_right(done, x, key=operator.neg if descending else None)
        lines.append(f"Insert {pad(x)}: {','.join(map(pad, done))}.")
    joined = ", ".join(map(str, done))
    lines.append(f"So the sorted list is {joined}.")
    return Solution("\n".join(lines), f"The answer is {joined}.", "list", tuple(done),
                    key=" ".join(map(str, nums)))


def spell_line(word: str) -> str:
    return f"Spell {word}: {' '.join(word)}."


def _letter_match(ch: str, letter: str) -> str:
    """Counting's one look: "t = r? no" (the trace adds the tally, the drill does not)."""
    return f"{ch} = {letter}? {'yes' if ch == letter else 'no'}"


def _solve_count(g: dict) -> Solution:
    """Spell the word, then one match step per letter that sets the letter beside the one
    sought ("t = r? no 1"), so the yes/no is a look at two neighbouring tokens and the tally
    only ever grows by one."""
    letter, word = g["letter"].lower(), g["word"].lower()
    running, steps = 0, []
    for ch in word:
        running += ch == letter
        steps.append(f"{_letter_match(ch, letter)} {running}")
    lines = [spell_line(word), f"Count {letter}: {', '.join(steps)}.",
             f"So {letter} appears {running} times."]
    return Solution("\n".join(lines), f"The answer is {running}.", "num", Decimal(running),
                    ("times", "time"), key=f'"{letter}" "{word}"')


def _solve_convert(g: dict) -> Solution | None:
    value, src, dst = _value(g["x"]), g["src"].lower(), g["dst"].lower()
    factor = tables.CONVERSIONS.get((src, dst))
    if factor is None:
        return None
    out = value * factor
    lines = [f"1 {tables.UNITS[src][1]} = {factor} {dst}.", *_decimal_mul_lines(value, factor),
             f"So {_fmt(value)} {src} = {_fmt(out)} {dst}."]
    return Solution("\n".join(lines), f"The answer is {_fmt(out)} {dst}.", "num", out,
                    tables.UNITS[dst], key=f"{_fmt(value)} {src} {dst}")


def _product(head: list[str], a: Decimal, b: Decimal, said: str, unit: str, key: str
             ) -> Solution:
    """A rate question that is one product: the copied quantities and the formula (`head`),
    the digit trace, the sentence."""
    out = a * b
    lines = [*head, *_decimal_mul_lines(a, b), said.format(_fmt(out))]
    return Solution("\n".join(lines), f"The answer is {_fmt(out)} {unit}.", "num", out,
                    tables.UNITS[unit], key=key)


def _speed_and(speed: Decimal, amount: Decimal, unit: str) -> str:
    """The first line of distance and duration: each number with the unit after it ("Speed 50
    mph and 125 miles."), so the formula line reads the role off that unit; a role word written
    before its number ("time 125 hours" for "cover 125 miles") was a guess the copy obeyed."""
    return f"Speed {_fmt(speed)} mph and {_fmt(amount)} {unit}."


def _solve_distance(g: dict) -> Solution:
    speed, hours = _value(g["speed"]), _value(g["hours"])
    return _product([_speed_and(speed, hours, g["hrs"]),
                     "Distance = speed * time."], speed, hours, "So it travels {} miles.",
                    "miles", f"d {_fmt(speed)} {_fmt(hours)}")


def _versus(x: Decimal, y: Decimal) -> str:
    """Whole parts compared as comparison's trace does (lengths, else digits from the left
    up to the first that differs), then the verdict: "1 = 1, 0 < 2, less"."""
    sx, sy = str(int(x)), str(int(y))
    steps = [f"{len(sx)} digits vs {len(sy)}"] if len(sx) != len(sy) else _from_the_left(sx, sy)
    return ", ".join([*steps, "less" if x < y else "equal" if x == y else "more"])


def _solve_duration(g: dict) -> Solution | None:
    """Division as multiplication: whole hours times the speed until the distance is reached
    (the trips last a whole or half number of hours, so it is hit or halfway passed)."""
    dist, speed = _value(g["dist"]), _value(g["speed"])
    if not speed or not _whole(dist / speed * 2) or dist <= 0:
        return None
    hours = dist / speed
    lines = [_speed_and(speed, dist, "miles"),
             "Time = distance / speed. Try whole hours:"]
    # Both numbers are written before the verdict, so it compares two numbers side by side
    # rather than one against a distance copied lines above ("150, less than 150" before),
    # and digit by digit as comparison does ("100 vs 125: less" in one look was wrong in a
    # third of the held-out duration questions: "85 vs 85: less", "100 vs 125: equal").
    def tried(k: int) -> str:
        return f"{_fmt(speed)}*{k}={_fmt(speed * k)} vs {_fmt(dist)}: {_versus(speed * k, dist)}"

    k = 1
    while speed * k < dist:
        lines.append(tried(k) + ".")
        k += 1
    lines.append(tried(k) + ("." if speed * k == dist else
                             f", so half an hour less: {_fmt(hours)}."))
    lines.append(f"So it takes {_fmt(hours)} hours.")
    return Solution("\n".join(lines), f"The answer is {_fmt(hours)} hours.", "num", hours,
                    tables.UNITS["hours"], key=f"t {_fmt(dist)} {_fmt(speed)}")


def _solve_cost(g: dict) -> Solution:
    price, count, items = _value(g["price"]), _value(g["count"]), g["items"].lower()
    return _product([f"Price {_fmt(price)} dollars, count {_fmt(count)}.",
                     "Total = price * count."], price, count,
                    f"So {_fmt(count)} {items} cost {{}} dollars.", "dollars",
                    f"c {_fmt(price)} {_fmt(count)}")


def _solve_word(g: dict) -> Solution | None:
    """The story becomes one column addition or subtraction (the same trace as add/sub)."""
    a, b, items = _value(g["a"]), _value(g["b"]), g["items"].lower()
    adding = any(g.get(slot) for slot in grammar.GAIN)
    if not (_whole(a) and _whole(b)) or (not adding and b > a):
        return None
    a, b = int(a), int(b)
    result = a + b if adding else a - b
    lines = [f"Start with {a} {items}.", f"Add {b}." if adding else f"Take away {b}."]
    lines += _add_lines(a, b) if adding else _sub_lines(a, b)
    lines.append(f"So there are {result} {items} now." if adding else
                 f"So {result} {items} are left.")
    units = (items, _SINGULAR.get(items, items.rstrip("s")))
    return Solution("\n".join(lines), f"The answer is {result}.", "num", Decimal(result), units,
                    key=f"{a} {b}")


def _solve_capital(g: dict) -> Solution:
    country = _COUNTRY_CASE[g["country"].lower()]
    capital, continent = tables.CAPITALS[country]
    lines = [f"{country} is a country in {continent}.", f"Its capital is {capital}."]
    lead = (f"the capital of {country.lower()} is", f"{country.lower()}'s capital is", "it is")
    return Solution("\n".join(lines), f"The capital of {country} is {capital}.", "text",
                    capital.lower(), lead)


def _solve_name(g: dict) -> Solution:
    name = g["name"][0].upper() + g["name"][1:]
    reply = f"Nice to meet you, {name}! How can I help you today?"
    return Solution(None, reply, "text", norm_text(reply))


def _solve_repeat(g: dict) -> Solution:
    # "You said:" keeps every word after a space, as in the question: " kitten" and "kitten"
    # are different tokens, and an identity copy must copy tokens, not respell them.
    return Solution(None, f"You said: {g['words']}.", "text", norm_text(g["words"]),
                    ("you said",))


def _solve_other(g: dict) -> Solution:
    return Solution(None, tables.OUT_OF_SCOPE, "text", norm_text(tables.OUT_OF_SCOPE))


def _solve_drill_facts(m: re.Match) -> Solution:
    """Single-digit fact drills (train only): the facts every trace is built from, each
    written exactly as the traces write it."""
    out = []
    for fact in (f.strip() for f in m.group(1).split(",")):
        nums = [int(x) for x in re.findall(r"\d+", fact)]
        value = nums[0] * nums[1] if "*" in fact else \
            nums[0] - sum(nums[1:]) if "-" in fact else sum(nums)
        out.append(f"{fact}={value}")
    reply = ". ".join(out) + "."
    return Solution(None, reply, "text", norm_text(reply))


def _solve_drill_copy(m: re.Match) -> Solution:
    """Copy drill (train only): word-for-word copying, the skill behind "Repeat after me",
    names in greetings and country names carried from question to trace to answer. It
    answers as a repeat request does ("You said: ..."), so the practice trains the reply
    users see; its own "Copy: ..." reply leaked into them ("Copy this: sunny tunnel market"
    -> "Copy: sunny tunnel market market.")."""
    reply = f"You said: {m.group(1)}."  # the same tokens as the question: " pencil" != "pencil"
    return Solution(None, reply, "text", norm_text(reply))


def _solve_drill_letters(m: re.Match) -> Solution:
    """Letter-match drills (train only): counting's step without its tally, "t = r? no"."""
    reply = ", ".join(_letter_match(a, b) for a, b in re.findall(r"([a-z]) = ([a-z])\?",
                                                                  m.group(1))) + "."
    return Solution(None, reply, "text", norm_text(reply))


def _solve_drill_rest(m: re.Match) -> Solution:
    """Rest drills (train only): the "Rest" lines of a column loop, or comparison's length
    check, on numbers of any length, without the arithmetic; the traces only ever show them up
    to four digits."""
    sa, op, sb = m.groups()
    if op == " and ":  # comparison's length check
        reply = " ".join(_length_lines(sa, sb))
    else:
        reply = " ".join(_rest(sa, sb, done, op).strip()
                         for done in range(1, max(len(sa), len(sb))))
    return Solution(None, reply, "text", norm_text(reply))


def _solve_drill_build(m: re.Match) -> Solution:
    """Build drills (train only): the "Built" lines of a column loop, a number grown one
    digit at a time from the right, at any length."""
    built, out = "", []
    for digit in m.group(1).split(", "):
        built = _built(digit, built)
        out.append(f"Built {built}.")
    reply = " ".join(out)
    return Solution(None, reply, "text", norm_text(reply))


def _solve_drill_spell(m: re.Match) -> Solution:
    reply = spell_line(m.group(1).lower())
    return Solution(None, reply, "text", norm_text(reply))


_COUNTRY_CASE = {c.lower(): c for c in tables.CAPITALS}
_SINGULAR = {many: one for one, many in tables.ITEMS}
# Fixed chat messages (the table's and every intent's phrasings) -> their one reply.
_CHAT_FIXED = {norm_text(q): r for q, r in tables.CHAT_REPLIES.items()} | {
    norm_text(q.lstrip("~")): tables.INTENT_REPLIES[intent]
    for intent, phrasings in grammar.CHAT_INTENTS.items() for q in phrasings}
_SOLVERS: dict[str, Callable[[dict], Solution | None]] = {
    "add": _solve_add, "sub": _solve_sub, "mul": _solve_mul, "compare": _solve_compare,
    "sort": _solve_sort, "count": _solve_count, "convert": _solve_convert,
    "distance": _solve_distance, "duration": _solve_duration, "cost": _solve_cost,
    "word": _solve_word, "capital": _solve_capital, "name": _solve_name,
    "repeat": _solve_repeat, "other": _solve_other}
_DRILLS = tuple((re.compile(p, re.IGNORECASE), f) for p, f in (
    (r"facts: (\d+[*+-]\d+(?:[+-]\d+)?(?:, \d+[*+-]\d+(?:[+-]\d+)?)*)", _solve_drill_facts),
    (r"facts: ([a-z] = [a-z]\?(?:, [a-z] = [a-z]\?)*)", _solve_drill_letters),
    (r"spell ([a-z]+)\.", _solve_drill_spell),
    (r"rest: (\d+)([+-]| and )(\d+)", _solve_drill_rest),
    (r"build from the right: (\d+(?:, \d+)*)", _solve_drill_build),
    (r"copy: ([A-Za-z]+(?: [A-Za-z]+)*|\d+(?: \d+)*)", _solve_drill_copy)))
# Families whose content is the phrasing itself: keyed by the whole question.
_TEXT_KEYED = ("capital", "chat", "other", DRILL)


@functools.cache
def _groups(task: str | None) -> tuple[str, ...]:
    return tuple(g for g in _SOLVERS if task is None or grammar.GROUP_TASK.get(g, g) == task)


def solve(question: str, task: str | None = None) -> tuple[str, Solution] | None:
    """(task, solution) for a question in any phrasing of the grammar (trained or held out),
    else None. `task` limits the search to one family (the generator knows it)."""
    q = norm_question(question)
    found = _find(q, task)
    if found is None:
        return None
    task_found, sol = found
    if task_found in _TEXT_KEYED:
        sol = Solution(sol.thinking, sol.answer, sol.kind, sol.value, sol.accept,
                       key=norm_text(q))
    return task_found, sol


def _find(q: str, task: str | None) -> tuple[str, Solution] | None:
    if task in (None, "chat") and (reply := _CHAT_FIXED.get(norm_text(q))) is not None:
        return "chat", Solution(None, reply, "text", norm_text(reply))
    spaced = grammar.space_operators(q.replace("×", "*"))  # as `pattern` spaces templates
    for group in _groups(task):
        for template in grammar.PHRASINGS[group]:
            m = grammar.pattern(template.lstrip("~")).fullmatch(spaced)
            if m is not None and (sol := _SOLVERS[group](m.groupdict())) is not None:
                return grammar.GROUP_TASK.get(group, group), sol
    if task in (None, DRILL):
        for pattern, solver in _DRILLS:
            if (m := pattern.fullmatch(q)) is not None:
                return DRILL, solver(m)
    return None
