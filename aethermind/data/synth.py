"""Built-in reasoning data: seeded Forge-1 conversations with step-by-step think traces.

Every family is asked in many phrasings (`synth_grammar`) and solved by `synth_solve`, which
writes a short, regular trace (one mechanical step per line, the same wording every time) and
an exactly checkable answer, so a 2-5M parameter model learns the format, and the easier
families, in minutes on a CPU. `score` re-solves the question from its text, so it needs no
stored answers. Splits (issue 18):
- train: trained phrasings, operand combinations outside the test hash bucket;
- test: trained phrasings, test operands (what drill alone can reach);
- phrasing: held-out phrasings with test operands: what the model understood;
- beyond: trained phrasings, operands one step past the trained range (length generalisation).
Train and test never share an operand combination (a hash of `split_key`, fixed across
seeds); the guide's demo prompts are pinned to train. No tokens or files beyond `write_synth`.
Usage: `write_synth("data", n_train=20000, n_val=500, seed=0)` or `aethermind data synth`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from aethermind.data import synth_questions as questions
from aethermind.data import synth_tables as tables
from aethermind.data.synth_questions import fmt as _fmt
from aethermind.data.synth_solve import DRILL, Solution, norm_question, norm_text, solve
from aethermind.runtime.files import staged_path
from aethermind.text import prompts
from aethermind.text.chat_format import Conversation, Turn, render

TASKS = ("add", "sub", "mul", "compare", "sort", "count", "convert", "rate", "word", "capital",
         "chat", "other")
SPLITS = ("train", "test", "phrasing", "beyond")
BEYOND_TASKS = questions.BEYOND_TASKS
# Round-robin order of training tasks: the families whose traces take longest to learn come
# most often; "other" (out of scope) is rare, as it should be in use. Comparison, at 98-100%
# on held-out phrasings, has two slots: the third pays for the column traces' "Rest" and
# "Built" (with three slots and "Rest", sort fell to 77%; issue 18).
_MIX = ("add", "mul", "rate", "chat", "sub", "count", "drill", "compare", "capital", "convert",
        "mul", "sort", "rate", "add", "word", "chat", "sub", "mul", "drill", "convert", "sort",
        "count", "capital", "add", "sort", "other", "drill", "sub", "word", "compare", "sort")
MULTI_TURN = 0.25  # share of written conversations that hold 2-3 turns (chat keeps context)
_MULTI_TURN_CHARS = 420  # only short exchanges are joined, so a conversation fits one row
GUIDE_PROMPTS = prompts.GUIDE_PROMPTS  # the haiku is out of scope: it gets the honest reply
# Never in test: the demo's prompts and every fixed chat question as written in the table
# (their replies must be learned; test asks them with other punctuation or case).
_PINNED = frozenset((*GUIDE_PROMPTS, prompts.GREETING, *tables.CHAT_REPLIES))
_PIN_EVERY = 100  # every 100th train example is a guide prompt, so the demo prompts are known
_TEST_BUCKETS = 10  # 1 in 10 operand combinations belongs to the test split
# Share of train questions typed all in lower case ("capital of canada?", "hi, i'm vera"):
# `decorate` only lowers the first letter, and a lower-case name is other tokens to the model.
LOWER_CASE = 0.2


@dataclass(frozen=True)
class SynthExample:
    task: str
    question: str
    thinking: str | None
    answer: str
    expected: Solution | None = None  # set where the question is not in the grammar (rewordings)


# --- scoring ------------------------------------------------------------------------------
_LEADS = ("so the answer is", "the answer is", "answer:", "answer is", "it is")
_NUM_RE = re.compile(r"(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)(?: ([a-z]+))?")


def _core(answer: str, leads: tuple[str, ...]) -> str:
    text = norm_text(answer)
    for lead in sorted((*leads, *_LEADS), key=len, reverse=True):
        if text.startswith(lead + " ") or text.startswith(lead + ":"):
            text = text[len(lead):].lstrip(": ").rstrip(".!? ")
            break
    return text


def check(sol: Solution, model_answer: str) -> bool:
    """True iff `model_answer` states `sol`'s answer and nothing else.

    Tolerates case, surrounding space, a trailing period, an "The answer is" lead-in, thousands
    commas and the right unit word; never accepts extra numbers or a wrong unit."""
    if sol.kind == "text":  # one reply, or any of several (a greeting's replies)
        core = _core(model_answer, sol.accept)
        return core in sol.value if isinstance(sol.value, tuple) else core == sol.value
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


def score(question: str, model_answer: str) -> bool:
    """True iff `model_answer` is the correct answer to `question` (see `check`). Raises
    ValueError for a question in no phrasing of the grammar."""
    solved = solve(question)
    if solved is None:
        raise ValueError(f"not a synthetic task question: {question!r}")
    return check(solved[1], model_answer)


def score_example(ex: SynthExample, model_answer: str) -> bool:
    """`score` for a generated example; a rewording outside the grammar carries its answer."""
    return check(ex.expected, model_answer) if ex.expected else score(ex.question, model_answer)


# --- generation ---------------------------------------------------------------------------
def split_key(question: str) -> str:
    """What train and test must not share: the task and its operands (number words count as
    digits), so a test question's operand combination is never trained in any phrasing.
    Capitals, chat and out-of-scope questions, whose content is the phrasing, are keyed by
    the whole question; drills are train-only."""
    solved = solve(question)
    if solved is None:
        return f"None:{norm_question(question).lower()}"
    return f"{solved[0]}:{solved[1].key}"


@functools.cache
def _pinned_keys() -> frozenset[str]:
    return frozenset(split_key(q) for q in _PINNED)


def _is_test_key(key: str, question: str) -> bool:
    if question in _PINNED or key in _pinned_keys() or key.startswith(f"{DRILL}:"):
        return False
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _TEST_BUCKETS == 0


def _is_test(question: str) -> bool:
    return _is_test_key(split_key(question), question)


def _solved(question: str, task: str) -> tuple[SynthExample, str]:
    solved = solve(question, task)
    assert solved is not None and solved[0] == task, \
        f"generator and solver disagree on {question!r}"
    sol = solved[1]
    return SynthExample(task, question, sol.thinking, sol.answer), f"{task}:{sol.key}"


def _example(question: str) -> SynthExample:
    solved = solve(question)
    assert solved is not None, f"not in the grammar: {question!r}"
    return SynthExample(solved[0], question, solved[1].thinking, solved[1].answer)


def _wanted(split: str, task: str, key: str, question: str) -> bool:
    """Whether a generated question belongs to `split`: train takes the train bucket; test and
    phrasing take the test bucket (phrasing's questions of capitals, chat and out of scope,
    held-out phrasings of things that must be known, any); beyond is never trained."""
    if split == "beyond" or (split == "phrasing" and task in ("capital", "chat", "other")):
        return True
    return _is_test_key(key, question) == (split != "train")


def make_split(split: str, n: int, seed: int = 0) -> list[SynthExample]:
    """`n` examples of `split` (see the module docstring); the same (split, n, seed) gives the
    same list. Train tasks come round-robin in a fixed mix with drills, LOWER_CASE of them typed
    all in lower case; the other splits round-robin over their tasks (TASKS, or BEYOND_TASKS),
    so any prefix is balanced."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {', '.join(SPLITS)}")
    rng = random.Random(f"forge1-synth-{split}-{seed}")
    # Its own stream, so lower-casing train questions leaves every other draw as it was.
    case_rng = random.Random(f"forge1-synth-case-{seed}")
    tasks = {"train": _MIX, "beyond": BEYOND_TASKS}.get(split, TASKS)
    held, beyond = split == "phrasing", split == "beyond"
    out: list[SynthExample] = []
    seen: set[str] = set()
    slot = 0
    while len(out) < n:
        if split == "train" and (len(out) + 1) % _PIN_EVERY == 0:
            out.append(_example(GUIDE_PROMPTS[(len(out) // _PIN_EVERY) % len(GUIDE_PROMPTS)]))
            continue
        task = tasks[slot % len(tasks)]
        slot += 1
        for tries in range(200):  # rejection sampling into this split's part of the space
            question = questions.MAKERS[task](rng, held, beyond)
            # Evaluation questions are unique while the task has unused ones (clean accuracy);
            # train may repeat (small tasks such as capitals need repetition to be learned).
            if split != "train" and question in seen and tries < 100:
                continue
            example, key = _solved(question, task)
            if _wanted(split, task, key, question):
                if split == "train" and case_rng.random() < LOWER_CASE:
                    example = _solved(question.lower(), task)[0]  # same key: same split
                out.append(example)
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
