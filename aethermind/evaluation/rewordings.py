"""The hidden rewordings: questions of every family written apart from the phrasing grammar.

`assets/eval/rewordings*.jsonl` were written by two writers who did not read `synth_grammar`,
the way people type (issue 18: "a hidden set of rewordings written elsewhere is also used to
judge the result"). It is never trained; each line carries its own answer, since many of its
phrasings are ones `synth.solve` cannot read. Scoring is `synth.check`, as for every split.
Usage: `examples = rewordings()`; `synth.score_example(examples[0], "63")`.
"""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from importlib import resources

from aethermind.data import synth
from aethermind.data import synth_tables as tables
from aethermind.data.synth_solve import Solution, norm_text

# Two sets by two writers: `rewordings` was read after the first demo runs (the grammar then
# grew more nouns, verbs and frames in general), `blind` never was, by anyone tuning the data.
SETS = {"rewordings": "eval/rewordings.jsonl", "blind": "eval/rewordings_blind.jsonl"}


def _expected(row: dict) -> Solution:
    task, answer = row["task"], row.get("answer")
    if task == "chat":  # any reply of the intent: "Good morning!" may answer "Hi"
        reply = tables.INTENT_REPLIES[row["intent"]]
        replies = tables.GREETING_REPLIES if row["intent"] == "greeting" else (reply,)
        return Solution(None, reply, "text", tuple(sorted(norm_text(r) for r in replies)))
    if task == "other":
        return Solution(None, tables.OUT_OF_SCOPE, "text", norm_text(tables.OUT_OF_SCOPE))
    if task == "capital":
        country = next(c for c in sorted(tables.CAPITALS, key=len, reverse=True)
                       if c.lower() in row["question"].lower())
        lead = (f"the capital of {country.lower()} is", f"{country.lower()}'s capital is",
                "it is")
        return Solution(None, f"The capital of {country} is {answer}.", "text",
                        str(answer).lower(), lead)
    if task == "sort":
        values = tuple(int(x) for x in str(answer).split(","))
        return Solution(None, f"The answer is {answer}.", "list", values)
    unit = row.get("unit")
    accept = tables.UNITS.get(unit) or ((unit, unit.rstrip("s"), *(("time",) if unit == "times"
                                         else ())) if unit else ())
    return Solution(None, f"The answer is {answer}" + (f" {unit}." if unit in tables.UNITS
                                                       else "."),
                    "num", Decimal(str(answer)), accept)


@functools.cache
def rewordings(name: str = "rewordings") -> tuple[synth.SynthExample, ...]:
    """Every question of one hidden set (`SETS`) as an example carrying its answer."""
    text = resources.files("aethermind.assets").joinpath(SETS[name]).read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        row = json.loads(line)
        sol = _expected(row)
        out.append(synth.SynthExample(row["task"], row["question"], None, sol.answer, sol))
    return tuple(out)
