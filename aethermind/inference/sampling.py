"""How one sequence picks its next token: `SamplingParams`, the sampling math, its CLI flags.

`SamplingParams` is the one definition of the sampling options and their defaults; every path
from a user to the engine carries one of these, built once at the edge: `params_from_args`
for the commands (flags added by `add_sampling_args`, whose defaults are read from the
dataclass), the request parser for the server. `sample_next` turns last-position logits into
token ids with an explicit `torch.Generator` (`make_generator`), so sampling never touches the
global RNG and a seed reproduces an answer. It knows nothing of models, tokenizers or the
engine's loop (`engine.py`), and imports nothing of the package.
Usage: `params = params_from_args(args)`; `next_ids = sample_next(logits, params, gen)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import torch

# What torch's manual_seed takes (a negative seed wraps around): the one check of every seed a
# user gives (SamplingParams here, TrainConfig); beyond it torch raises an overflow error late,
# after the model loaded. It lives in this leaf so every edge can import it.
SEED_RANGE = (-(2**63), 2**64 - 1)


@dataclass(kw_only=True)
class SamplingParams:
    """How one sequence is sampled. The defaults here are the only ones: CLIs read them."""

    max_new_tokens: int = 256  # upper bound; also clipped to the room left in the context
    temperature: float = 0.7  # 0 = greedy (argmax), no randomness consumed
    top_k: int | None = None  # keep the k most likely tokens (None or 0 = off)
    top_p: float | None = 0.9  # nucleus: smallest set with probability >= top_p (None/1 = off)
    repetition_penalty: float = 1.0  # HF/CTRL rule on tokens generated so far; 1 = off
    seed: int | None = None  # seeds the explicit torch.Generator; None = fresh entropy

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}={value}: must be a finite number")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed={self.seed}: must fit in 64 bits "
                             f"({SEED_RANGE[0]}..{SEED_RANGE[1]})")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be >= 0")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0 (0 or None = off)")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty}: must be > 0")


# --- the math ---------------------------------------------------------------------------------
def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float
                             ) -> torch.Tensor:
    """CTRL rule (as in HF): seen tokens' positive logits / penalty, negative ones * penalty.

    `seen` is a bool (B, V) mask over `logits` (B, V); unseen tokens keep their logits.
    """
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside top-k / the top-p nucleus to -inf. `logits` (B, V) float."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens before it already reach top_p: the top one always stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None = None,
                seen: torch.Tensor | None = None) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V).

    temperature 0 is exact argmax (after the repetition penalty) and uses no randomness.
    """
    if seen is not None and params.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits.float(), seen, params.repetition_penalty)
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """An explicit generator on `device`, so sampling never touches the global RNG."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


# --- the command-line edge --------------------------------------------------------------------
def add_sampling_args(p: argparse.ArgumentParser, *, greedy: bool = False) -> None:
    """The sampling options of every command that generates; defaults are `SamplingParams`'s.

    Each flag's dest is the field's name, which is what `params_from_args` reads back.
    `greedy=True` (evaluate) makes temperature 0 the default, so runs compare exactly.
    """
    d = SamplingParams()
    temperature = 0.0 if greedy else d.temperature
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                   help=f"new tokens per answer (default {d.max_new_tokens})")
    p.add_argument("--temperature", type=float, default=temperature,
                   help=f"0 = greedy (default {temperature})")
    p.add_argument("--top-p", type=float, default=d.top_p,
                   help=f"nucleus sampling, 1 = off (default {d.top_p})")
    p.add_argument("--top-k", type=int, default=d.top_k, help="top-k sampling (default off)")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty,
                   help=f"1 = off (default {d.repetition_penalty})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed sampling for reproducible answers (default: fresh)")


def params_from_args(args: argparse.Namespace) -> SamplingParams:
    """`SamplingParams` from the `add_sampling_args` options; a bad value raises a one-line
    `ValueError` naming it (CLIs print it as `error: ...` before loading a model)."""
    return SamplingParams(**{f.name: getattr(args, f.name)
                             for f in dataclasses.fields(SamplingParams)})
