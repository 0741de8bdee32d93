"""How one sequence picks its next token: `SamplingParams`, the sampling math, its CLI flags.

`SamplingParams` is the one definition of the sampling options and their defaults; every path
from a user to the engine carries one of these, built once at the edge: `params_from_args`
for the commands (flags added by `add_sampling_args`, whose defaults are read from the
dataclass), the request parser for the server. `sample_next` turns last-position logits into
token ids with an explicit `torch.Generator` (`make_generator`), so sampling never touches the
global RNG and a seed reproduces an answer. Every valid `SamplingParams` can be carried out
exactly, however extreme (temperature 1e-40 is the limit distribution: uniform over the
top-scoring tokens); a row whose logits hold no usable score (a NaN, or all -inf) gets
`NO_TOKEN`, so the caller fails that one sequence, never its batch. It knows nothing of models,
tokenizers or the engine's loop (`engine.py`), and imports nothing of the package.
Usage: `params = params_from_args(args)`; `next_ids = sample_next(logits, params, gen)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import torch

NO_TOKEN = -1  # sample_next's id for a row it cannot sample: its logits hold a NaN or only -inf
# What torch's manual_seed takes (a negative seed wraps around): the one check of every seed a
# user gives (SamplingParams here, TrainConfig); beyond it torch raises an overflow error late,
# after the model loaded. It lives in this leaf so every edge can import it.
SEED_RANGE = (-(2**63), 2**64 - 1)


class SamplingValueError(ValueError):
    """A `SamplingParams` field out of range; `field` names it (the server reports it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


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
                raise SamplingValueError(name, f"{name}={value}: must be a finite number")
        if self.max_new_tokens < 0:
            raise SamplingValueError("max_new_tokens",
                                     f"max_new_tokens={self.max_new_tokens}: must be >= 0")
        if self.temperature < 0:
            raise SamplingValueError("temperature", f"temperature={self.temperature}: must be "
                                     ">= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 0:
            raise SamplingValueError("top_k", f"top_k={self.top_k}: must be >= 0 "
                                     "(0 or None = off)")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise SamplingValueError("top_p", f"top_p={self.top_p}: must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise SamplingValueError("repetition_penalty", f"repetition_penalty="
                                     f"{self.repetition_penalty}: must be > 0")
        low, high = SEED_RANGE
        if self.seed is not None and not low <= self.seed <= high:
            raise SamplingValueError("seed", f"seed={self.seed}: must fit in 64 bits "
                                     f"(between {low} and {high})")


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
        # Drop a token when the tokens before it already reach top_p: the top one always stays
        # (set explicitly: a top_p below float32's smallest value rounds to 0, and 0 >= 0).
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def unusable_rows(logits: torch.Tensor) -> torch.Tensor:
    """(B,) bool: rows of `logits` (B, V) with a NaN or no score above -inf (nothing to pick)."""
    return ~(logits.amax(dim=-1) > float("-inf"))  # a NaN max compares False too


def greedy_next(logits: torch.Tensor) -> torch.Tensor:
    """Argmax ids (B,) of `logits` (B, V); `NO_TOKEN` for unusable rows. No host sync."""
    return logits.argmax(dim=-1).masked_fill(unusable_rows(logits), NO_TOKEN)


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`logits / temperature` (B, V) float, exact where that division overflows.

    A tiny temperature (1e-40) or an infinite logit (a repetition penalty of 1e-300) turns
    rows into inf/NaN. Such rows are computed as (logits - row max) / temperature instead,
    with the max tokens at exactly 0: the same distribution, and for these values its limit,
    uniform over the top-scoring tokens. Other rows keep the plain division bit for bit.
    """
    scaled = logits / temperature
    top = logits.amax(dim=-1, keepdim=True)  # (B, 1)
    shifted = torch.where(logits == top, 0.0, (logits - top) / temperature)
    return torch.where(torch.isfinite(scaled.amax(dim=-1, keepdim=True)), scaled, shifted)


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None = None,
                seen: torch.Tensor | None = None) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V); `NO_TOKEN` where a row's logits
    cannot be sampled (see `unusable_rows`). Never syncs with the host, never raises.

    temperature 0 is exact argmax (after the repetition penalty) and uses no randomness.
    """
    if seen is not None and params.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits.float(), seen, params.repetition_penalty)
    if params.temperature == 0:
        return greedy_next(logits)
    bad = unusable_rows(logits)  # (B,)
    # Bad rows get any valid distribution (multinomial would raise, or assert on CUDA), then
    # their draw is replaced by NO_TOKEN.
    scaled = scale_logits(logits.float(), params.temperature).masked_fill(bad[:, None], 0.0)
    probs = filter_logits(scaled, params.top_k, params.top_p).softmax(dim=-1)
    picked = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return picked.masked_fill(bad, NO_TOKEN)


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
