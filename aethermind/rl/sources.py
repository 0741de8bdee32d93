"""Where RL prompts come from: the built-in families and JSONL records, in a resumable order.

`PromptSource.take(n)` returns the next `n` records; its whole state is one position (plus the
seed), so a resumed run draws exactly the prompts it would have drawn. Built-in families come
round-robin (every family stays in the mix, so RL on the weak ones cannot make the model forget
the others, issue 19); within a family the order is a seeded shuffle, reshuffled each pass.
Under several processes, rank r takes positions r, r + K, r + 2K... (its own prompts).
A record is a dict: `question`, and what checks it (`task`, `thinking`, `answer`, `solution`).
The global position also seeds the prompt's answers (`rollout.sample_seeds`), so what a
prompt samples does not depend on which process draws it or when.
Usage: `src = PromptSource(synth_records(parse_families("all")), seed=0)`; `src.take(8)`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from aethermind.data import synth
from aethermind.rl.rewards import reference_number

POOL_PER_FAMILY = 500  # training questions per built-in family (never a held-out one): 40
# minutes of demo RL ask about 150 per family; building the pool takes ~1 s


def parse_families(spec: str) -> tuple[str, ...]:
    """`"all"` or a comma list of `synth.TASKS` names."""
    if spec.strip() == "all":
        return synth.TASKS
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    bad = [n for n in names if n not in synth.TASKS]
    if bad or not names:
        raise ValueError(f"families {spec!r}: use all or names from {', '.join(synth.TASKS)}")
    return names


def synth_records(families: tuple[str, ...], per_family: int = POOL_PER_FAMILY, seed: int = 0
                  ) -> list[list[dict[str, Any]]]:
    """One pool per family of training-split questions (never a test question)."""
    n = per_family * len(synth.TASKS) * 3  # the train mix also holds drills and guide prompts
    pools: dict[str, list[dict[str, Any]]] = {f: [] for f in families}
    for ex in synth.make_split("train", n, seed):
        if ex.task in pools and len(pools[ex.task]) < per_family:
            pools[ex.task].append({"task": ex.task, "question": ex.question,
                                   "thinking": ex.thinking, "answer": ex.answer})
    return [pools[f] for f in families if pools[f]]


def jsonl_records(path: str | Path) -> list[list[dict[str, Any]]]:
    """One pool of JSONL records with a question and a checkable answer; others skipped."""
    pool = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ValueError(f"prompt_file {path}: cannot read it ({err.strerror or err})") from None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        question = record.get("question", record.get("problem"))
        if isinstance(question, str) and question.strip() and (
                synth.solve(question) is not None or reference_number(record) is not None):
            pool.append({**record, "question": question, "task": record.get("task", "jsonl")})
    if not pool:
        raise ValueError(f"prompt_file {path}: no record with a question and a checkable answer "
                         '(expected JSONL like {"question": "...", "answer": "... #### 42"})')
    return [pool]


class PromptSource:
    """Round-robin over pools, a seeded shuffle within each; see the module docstring."""

    def __init__(self, pools: list[list[dict[str, Any]]], seed: int, rank: int = 0,
                 world: int = 1) -> None:
        assert pools and all(pools), "every pool needs at least one record"
        self.pools, self.seed, self.rank, self.world = pools, seed, rank, world
        self.position = 0  # prompts this process has taken
        self._orders: dict[int, tuple[int, list[int]]] = {}  # pool -> (pass, its order)

    def _order(self, pool: int, epoch: int) -> list[int]:
        cached = self._orders.get(pool)
        if cached is None or cached[0] != epoch:
            order = list(range(len(self.pools[pool])))
            random.Random(f"rl-{self.seed}-{pool}-{epoch}").shuffle(order)
            self._orders[pool] = cached = (epoch, order)
        return cached[1]

    def record(self, index: int) -> dict[str, Any]:
        """The record at global position `index` (deterministic, no state)."""
        pool = index % len(self.pools)
        k = index // len(self.pools)
        size = len(self.pools[pool])
        return self.pools[pool][self._order(pool, k // size)[k % size]]

    def take(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        """The next `n` (global position, record) pairs of this process."""
        positions = [(self.position + i) * self.world + self.rank for i in range(n)]
        self.position += n
        return [(g, self.record(g)) for g in positions]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed, "world": self.world}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["world"] != self.world or state["seed"] != self.seed:
            raise ValueError(f"the checkpoint drew prompts with seed {state['seed']} over "
                             f"{state['world']} processes; this run has seed {self.seed} over "
                             f"{self.world}")
        self.position = int(state["position"])
