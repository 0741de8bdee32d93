"""The tiny suite's documents and its lm-eval hooks: held-out synthetic questions, offline.

Two lm-eval tasks read the JSONL shipped beside their YAML in `assets/eval/tiny/`:
`aethermind_tiny_gen` (generate, then `synth.score`, the checker `aethermind evaluate` uses)
and `aethermind_tiny_mc` (4 choices: the right answer and 3 wrong ones that `synth.score`
rejects: near misses for numbers and lists, other answers of the same family for text).
The questions come from the synthetic test split (never trained), `PER_TASK` per family.
The files are written by `python -m aethermind.evaluation.tiny_tasks` and a test checks they
still equal what this module builds. The YAML refers to the hooks below by dotted name.
Usage: `write_assets()` (after changing `synth`), or `gen_docs()[:3]`.
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from aethermind.data import synth
from aethermind.data.synth_questions import fmt
from aethermind.evaluation.suites import TINY_DIR
from aethermind.runtime.files import atomic_text
from aethermind.text.chat_format import ASSISTANT

PER_TASK = 8  # questions per family in each task: 88 each, seconds on a CPU
N_CHOICES = 4  # the multiple-choice random baseline in `suites` is 1 / N_CHOICES
GEN_FILE, MC_FILE = "tiny_gen.jsonl", "tiny_mc.jsonl"
_GEN_SEED, _MC_SEED = 0, 1  # two seeds: the two tasks ask different questions
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def gen_docs() -> list[dict[str, str]]:
    examples = synth.make_split("test", PER_TASK * len(synth.TASKS), seed=_GEN_SEED)
    return [{"task": ex.task, "question": ex.question, "answer": ex.answer} for ex in examples]


def _near_misses(answer: str) -> list[str]:
    """The answer with its numbers changed a little: off by one, by ten, a list reordered."""
    numbers = _NUMBER.findall(answer)
    if len(numbers) > 1:  # a sorted list: the wrong orders
        out = []
        for order in (numbers[::-1], numbers[1:] + numbers[:1], [numbers[1], numbers[0],
                                                                  *numbers[2:]]):
            out.append(answer.replace(", ".join(numbers), ", ".join(order)))
        return out
    if len(numbers) == 1:
        value = Decimal(numbers[0])
        return [answer.replace(numbers[0], fmt(value + d), 1) for d in (1, -1, 10, -10)]
    return []


def mc_docs() -> list[dict[str, Any]]:
    examples = synth.make_split("test", PER_TASK * len(synth.TASKS), seed=_MC_SEED)
    pool = synth.make_split("test", 40 * len(synth.TASKS), seed=_MC_SEED + 1)
    rng = random.Random("forge1-tiny-mc")
    docs = []
    for ex in examples:
        # the same family's answers first; the one-reply family (out of scope) takes others'
        others = [o.answer for o in pool if o.task == ex.task] + \
            [o.answer for o in pool if o.task != ex.task]
        wrong: list[str] = []
        for cand in (*_near_misses(ex.answer), *others):
            if cand not in wrong and cand != ex.answer and not synth.score(ex.question, cand):
                wrong.append(cand)
        assert len(wrong) >= N_CHOICES - 1, f"too few wrong answers for {ex.question!r}"
        choices = [ex.answer, *rng.sample(wrong[:6], N_CHOICES - 1)]
        rng.shuffle(choices)
        docs.append({"task": ex.task, "question": ex.question, "choices": choices,
                     "gold": choices.index(ex.answer)})
    return docs


def _jsonl(docs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)


def write_assets(directory: Path = TINY_DIR) -> None:
    atomic_text(_jsonl(gen_docs()), directory / GEN_FILE)
    atomic_text(_jsonl(mc_docs()), directory / MC_FILE)


def read_docs(name: str, directory: Path = TINY_DIR) -> list[dict[str, Any]]:
    lines = (directory / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# --- lm-eval hooks (named in the task YAML) -------------------------------------------------
def _dataset(name: str) -> Any:
    import datasets

    # Built in memory from the shipped file: no dataset cache, no network.
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_docs(name))})


def gen_dataset(**_: Any) -> Any:
    return _dataset(GEN_FILE)


def mc_dataset(**_: Any) -> Any:
    return _dataset(MC_FILE)


def mc_choices(doc: dict[str, Any]) -> list[str]:
    """Each choice as the answer turn begins: the chat prompt (no thinking) ends with
    `<|no_think|>` and the model's next token is `<|assistant|>`, then the answer."""
    return [ASSISTANT + choice for choice in doc["choices"]]


def gen_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"exact_match": float(synth.score(doc["question"], results[0]))}


if __name__ == "__main__":
    write_assets()
    print(f"wrote {TINY_DIR / GEN_FILE} and {TINY_DIR / MC_FILE}")
