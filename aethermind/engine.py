"""Generation engine: prefill + incremental decoding with the model's KVCache, sampling, batching.

The engine works on token ids only; it knows no tokenizer and no chat template (those live in
`thinking.py`). Streaming text goes through `TextStream`, which is handed a `decode` callable.
Context policy: a prompt that leaves no room for one new token raises `PromptTooLongError`;
`max_new_tokens` is clipped to the room left in the context (then `finish_reason == "length"`).
Trimming old turns is the caller's job because only the caller knows where turns begin.
Usage: `out = Engine(model).generate(ids, SamplingParams(max_new_tokens=64), stop_ids={eos})`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from aethermind.kv_cache import KVCache
from aethermind.packed_linear import packed_for_cpu

REPLACEMENT_CHAR = "\ufffd"  # what a byte-level decoder yields for an incomplete UTF-8 sequence


class PromptTooLongError(ValueError):
    """The prompt leaves no room in the model's context; the message says by how much."""


@dataclass(kw_only=True)
class SamplingParams:
    max_new_tokens: int = 256  # upper bound; also clipped to the room left in the context
    temperature: float = 0.0  # 0 = greedy (argmax), no randomness consumed
    top_k: int | None = None  # keep the k most likely tokens (None or 0 = off)
    top_p: float | None = None  # nucleus: smallest set with probability >= top_p (None/1 = off)
    repetition_penalty: float = 1.0  # HF/CTRL rule on tokens generated so far; 1 = off
    seed: int | None = None  # seeds the explicit torch.Generator; None = fresh entropy

    def __post_init__(self) -> None:
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


@dataclass
class Generation:
    """Result of one prompt: new tokens (stop token excluded) and how generation ended."""

    tokens: list[int]
    finish_reason: str  # "stop" (a stop token), "length" (token budget or context full)
    stop_token: int | None = None
    prompt_tokens: int = 0
    time_to_first_token_s: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# --- sampling ---------------------------------------------------------------------------------
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


# --- streaming text ---------------------------------------------------------------------------
class TextStream:
    """Turns ids into text pieces without ever splitting a UTF-8 character.

    Byte-level BPE can cut a multi-byte character (emoji, CJK) across tokens; decoding such a
    prefix ends in U+FFFD. We hold text back while it ends in U+FFFD and decode a short window
    (the vLLM/HF "prefix offset" trick) so each step costs O(window), not O(text).
    Concatenating everything `push` and `flush` return equals `decode(all ids)`.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.prefix = 0  # window start: ids before it are fully emitted and stable
        self.read = 0  # ids before it have been emitted as text

    def push(self, token: int) -> str:
        self.ids.append(token)
        old = self.decode(self.ids[self.prefix:self.read])
        new = self.decode(self.ids[self.prefix:])
        if new.endswith(REPLACEMENT_CHAR) or len(new) <= len(old):
            return ""  # an incomplete character (or nothing visible yet): wait for more bytes
        self.prefix, self.read = self.read, len(self.ids)
        return new[len(old):]

    def flush(self) -> str:
        """Whatever is still held back (a truly invalid byte sequence decodes to U+FFFD)."""
        old = self.decode(self.ids[self.prefix:self.read])
        new = self.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return new[len(old):]


# --- the engine -------------------------------------------------------------------------------
class Engine:
    """Prefill + decode for one model. `generate` (one prompt), `generate_batch` (evaluation)."""

    def __init__(self, model: torch.nn.Module, *, prepack: bool = True) -> None:
        # On CPU, decode through prepacked oneDNN linears (~1.7x faster matrix-vector
        # products, see packed_linear.py); the caller's model itself is left untouched.
        self.model = packed_for_cpu(model) if prepack else model
        self.max_seq_len = int(model.config.max_seq_len)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _budget(self, prompt_len: int, max_new_tokens: int) -> int:
        room = self.max_seq_len - prompt_len
        if prompt_len == 0:
            raise ValueError("empty prompt: give at least one token (e.g. <|bos|>)")
        if room < 1:
            raise PromptTooLongError(
                f"prompt of {prompt_len} tokens leaves no room in the {self.max_seq_len}-token "
                f"context: shorten it by at least {prompt_len - self.max_seq_len + 1} tokens")
        return min(max_new_tokens, room)

    @torch.inference_mode()
    def generate(self, prompt: Sequence[int], params: SamplingParams | None = None, *,
                 stop_ids: Iterable[int] = (),
                 on_token: Callable[[int], None] | None = None) -> Generation:
        """Generate for one prompt; `on_token(id)` is called for every new non-stop token."""
        params = params or SamplingParams()
        start = time.perf_counter()
        budget = self._budget(len(prompt), params.max_new_tokens)
        stops = frozenset(stop_ids)
        model, device = self.model, self.device
        # Size the cache to what this call can use: less memory to zero, same speed.
        cache = KVCache.for_model(model, 1, max_len=len(prompt) + budget)
        gen = make_generator(params.seed, device) if params.temperature > 0 else None
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(1, model.config.vocab_size, dtype=torch.bool, device=device)
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)  # (1, T)
        logits, _ = model(ids, kv_cache=cache, last_only=True)  # prefill: (1, 1, V)
        step = torch.empty(1, 1, dtype=torch.long, device=device)  # reused decode input
        out: list[int] = []
        ttft, finish, stop_token = 0.0, "length", None
        for i in range(budget):
            nxt = sample_next(logits[:, -1], params, gen, seen)  # (1,)
            token = int(nxt)  # the one host sync per token: needed to check for stops
            if i == 0:
                ttft = time.perf_counter() - start
            if token in stops:
                finish, stop_token = "stop", token
                break
            out.append(token)
            if on_token is not None:
                on_token(token)
            if i == budget - 1:
                break  # budget spent: skip the forward whose logits nobody would read
            if seen is not None:
                seen[0, token] = True
            step.copy_(nxt.view(1, 1))
            logits, _ = model(step, kv_cache=cache, last_only=True)
        return Generation(out, finish, stop_token, len(prompt), ttft,
                          time.perf_counter() - start)

    @torch.inference_mode()
    def generate_batch(self, prompts: Sequence[Sequence[int]],
                       params: SamplingParams | None = None, *,
                       stop_ids: Iterable[int] = (), pad_id: int = 0) -> list[Generation]:
        """Generate for several prompts at once (evaluation); same result as one at a time.

        Prompts are left-padded so every row's next token sits in the last column. The
        attention mask hides pads (RoPE is relative, so the shift of a padded row is harmless).
        A pad query attends to itself only: a fully masked row would give NaN, and NaN values
        poison real rows through 0 * NaN in the attention matmul.
        """
        params = params or SamplingParams()
        if not prompts:
            return []
        start = time.perf_counter()
        lengths = [len(p) for p in prompts]
        T = max(lengths)
        budget = self._budget(T, params.max_new_tokens)
        stops = frozenset(stop_ids)
        model, device = self.model, self.device
        B, total = len(prompts), T + budget
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        valid = torch.zeros(B, total, dtype=torch.bool)  # (B, T_total) keys that are real
        for b, p in enumerate(prompts):
            ids[b, T - len(p):] = torch.tensor(list(p), dtype=torch.long)
            valid[b, T - len(p):] = True
        valid[:, T:] = True
        ids, valid = ids.to(device), valid.to(device)
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        eye = torch.eye(T, dtype=torch.bool, device=device)
        mask = (causal & valid[:, None, :T]) | eye  # (B, T, T)
        cache = KVCache.for_model(model, B, max_len=total)
        gen = make_generator(params.seed, device) if params.temperature > 0 else None
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
        logits, _ = model(ids, kv_cache=cache, attn_mask=mask[:, None], last_only=True)
        outs: list[list[int]] = [[] for _ in range(B)]
        finish = ["length"] * B
        stop_tok: list[int | None] = [None] * B
        done = [False] * B
        for i in range(budget):
            nxt = sample_next(logits[:, -1], params, gen, seen)  # (B,)
            for b, token in enumerate(nxt.tolist()):
                if done[b]:
                    continue
                if token in stops:
                    done[b], finish[b], stop_tok[b] = True, "stop", token
                else:
                    outs[b].append(token)
            if all(done) or i == budget - 1:
                break
            if seen is not None:
                seen[torch.arange(B, device=device), nxt] = True
            pos = cache.pos
            logits, _ = model(nxt.view(B, 1), kv_cache=cache,
                              attn_mask=valid[:, None, None, :pos + 1], last_only=True)
        seconds = time.perf_counter() - start
        return [Generation(outs[b], finish[b], stop_tok[b], lengths[b], 0.0, seconds)
                for b in range(B)]
