"""Rollouts: G sampled answers per prompt through the continuous-batching `Engine`, scored.

Each answer gets its own seed, a hash of (run seed, the prompt's global position, answer
index): a resumed run, or the same prompts split over another number of processes, samples
exactly the same answers, and the prompt position in the checkpoint is the whole rollout state.
A fresh `Engine` is built per batch: it prepacks the current weights for the CPU, and the
weights change after every update.
With `guide`, a group where no sampled answer is right and whose record carries a reference
(`thinking` and `answer`, every built-in family) has its last answer replaced by that reference
when it fits the answer budget (off-policy guidance, as in LUFFY, Yan et al. 2025): a prompt the
model cannot solve yet then has a right answer to move toward, where plain GRPO drops the group
for lack of signal. Its old log-probs are the current policy's, as for a sampled answer, so the
clipped ratio bounds how far one batch moves toward it.
It knows nothing about losses; `rl.loss` turns the groups into a policy-gradient loss.
Usage: `groups = rollout(model, tok, src.take(8), 8, params, seed, rewards)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SEED_RANGE, SamplingParams
from aethermind.rl.rewards import Reward, exact, score_all
from aethermind.text import chat_format as cf

ENGINE_BATCH = 64  # sequences decoded at once (the KV cache's slots)


@dataclass
class Sample:
    prompt: list[int]
    completion: list[int]  # generated ids, the stop token included when there was one
    reward: float
    correct: bool  # the exact-answer check, reported whatever the rewards are
    reference: bool = False  # the record's reference answer put in by `guide`, not sampled


@dataclass
class Group:
    record: dict[str, Any]
    samples: list[Sample]

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.samples]

    @property
    def guided(self) -> bool:
        """Whether `guide` put the record's reference answer in this group."""
        return any(s.reference for s in self.samples)

    @property
    def pass_rate(self) -> float:
        """The share of the model's own answers that are right (a reference is not one)."""
        sampled = [s for s in self.samples if not s.reference]
        return sum(s.correct for s in sampled) / len(sampled)

    @property
    def has_signal(self) -> bool:
        """Whether the answers' rewards differ: a group that all score the same has zero
        advantage everywhere, so it teaches nothing (GRPO drops it)."""
        return max(self.rewards) - min(self.rewards) > 1e-9


@torch.no_grad()
def rollout(model: torch.nn.Module, tokenizer: Any, drawn: list[tuple[int, dict[str, Any]]],
            group_size: int, params: SamplingParams, seed: int,
            rewards: list[tuple[str, float, Reward]], guide: bool = False) -> list[Group]:
    """Sample `group_size` answers per (position, record) with `params`, score them; with
    `guide`, an all-wrong group's last answer becomes the record's reference."""
    records = [r for _, r in drawn]
    prompts = [cf.encode_prompt(cf.Conversation(), r["question"], tokenizer) for r in records]
    seeds = [s for g, _ in drawn for s in sample_seeds(seed, g, group_size)]
    batch = [p for p in prompts for _ in range(group_size)]
    sampling = [SamplingParams(max_new_tokens=params.max_new_tokens,
                               temperature=params.temperature, top_p=None, seed=s)
                for s in seeds]
    was_training = model.training
    model.eval()
    # The cache holds the longest prompt plus its answer, not the whole context.
    room = min(model.config.max_seq_len, max(map(len, prompts)) + params.max_new_tokens)
    engine = Engine(model, max_batch_size=min(ENGINE_BATCH, len(batch)),
                    max_seq_len=max(room, 2))
    gens = engine.generate_batch(batch, sampling, cf.stop_ids(tokenizer))
    model.train(was_training)
    groups = []
    for i, record in enumerate(records):
        samples = []
        for gen in gens[i * group_size:(i + 1) * group_size]:
            ids = gen.tokens + ([gen.stop_token] if gen.stop_token is not None else [])
            text = tokenizer.decode(ids)
            samples.append(Sample(prompts[i], ids, score_all(rewards, text, record),
                                  exact(text, record) > 0))
        if guide and not any(s.correct for s in samples):
            answer = reference_answer(record, tokenizer)
            # only a reference a rollout could have written: within the answer budget and the
            # room the update's forward pass has
            if answer is not None and len(answer) <= params.max_new_tokens and \
                    len(prompts[i]) + len(answer) <= room:
                text = tokenizer.decode(answer)
                samples[-1] = Sample(prompts[i], answer, score_all(rewards, text, record),
                                     exact(text, record) > 0, reference=True)
        groups.append(Group(record, samples))
    return groups


def reference_answer(record: dict[str, Any], tokenizer: Any) -> list[int] | None:
    """The ids of the record's reference answer as the model would write it, or None when the
    record has no reference (an `answer` string and a `thinking` key: a string, or None for
    a no-think answer) or one the template rejects."""
    thinking, answer = record.get("thinking"), record.get("answer")
    if "thinking" not in record or not (thinking is None or isinstance(thinking, str)) or \
            not (isinstance(answer, str) and answer.strip()):
        return None
    try:
        return cf.encode_answer(cf.Turn(str(record["question"]), answer, thinking), tokenizer)
    except ValueError:  # a special-token string in the record's text
        return None


def sample_seeds(seed: int, position: int, n: int) -> list[int]:
    """The sampling seeds of the `n` answers to the prompt at global `position`."""
    rng = random.Random(f"rl-{seed}-{position}")
    return [rng.randrange(SEED_RANGE[0], SEED_RANGE[1]) for _ in range(n)]


def advantages(group: Group, scale: bool) -> list[float]:
    """Group-relative advantages: reward minus the group mean, divided by the group's std when
    `scale` (GRPO; Dr. GRPO leaves it out to avoid favouring near-solved groups)."""
    r = torch.tensor(group.rewards, dtype=torch.float64)
    a = r - r.mean()
    if scale:
        a = a / (r.std(unbiased=False) + 1e-6)
    return a.tolist()
