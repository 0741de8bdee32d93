"""Generation engine: one decode loop over a batch of sequences that join and leave between steps.

`Engine` owns a fixed-size KV cache of `max_batch_size` slots; each sequence holds a slot, its
own `SamplingParams`, stop ids and RNG. `add` queues a prompt, `step` admits queued prompts
(prefill) and advances every running sequence by one token, `cancel` frees a slot at once:
the continuous batching a server needs. `generate`, `generate_batch` and `stream` are that same
loop driven to the end. Rows never see each other (per-row positions and masks; a batched
prefill's right padding stays behind each row's mask), so a sequence's tokens do not depend on
what else shares the batch, up to the last bits of a matrix product: a prompt prefilled with
others may take torch's matrix-matrix kernel where alone it took the matrix-vector one.
On a CPU where our kernels run the model, each decode step is one C call (`cpu_decode.py`);
prompts admitted together are prefilled as one padded batch (`_prefill_groups`).
The engine works on token ids only; it knows no tokenizer and no chat template (those live in
`thinking.py`). Streaming text goes through `TextStream`, which is handed a `decode` callable.
Context policy: a prompt that leaves no room for one new token raises `PromptTooLongError`;
`max_new_tokens` is clipped to the room left in the context (then `finish_reason == "length"`).
Trimming old turns is the caller's job because only the caller knows where turns begin.
How a token is drawn from the logits is `sampling.py`'s; the engine calls `sample_next`. A
sequence whose logits cannot be sampled (NaN, all -inf) ends alone with finish_reason "error"
(the driven paths raise `GenerationError`); the rest of the batch goes on untouched.
Usage: `out = Engine(model).generate(ids, SamplingParams(max_new_tokens=64), stop_ids={eos})`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from aethermind.inference.sampling import (
    NO_TOKEN,
    SamplingParams,
    greedy_next,
    make_generator,
    sample_next,
)
from aethermind.model.cpu_decode import DecodeStep
from aethermind.model.kv_cache import KVCache
from aethermind.model.packed_linear import (
    DECODE_DTYPES,
    DEFAULT_DECODE_DTYPE,
    DecodeDtype,
    check_compiled_decode,
    model_to_compile,
    packed_for_cpu,
)

REPLACEMENT_CHAR = "\ufffd"  # what a byte-level decoder yields for an incomplete UTF-8 sequence
# "stop": a stop token; "length": the token budget or the context ran out; "cancelled": `cancel`;
# "error": the model's scores for this sequence could not be sampled (NaN or all -inf).
FinishReason = Literal["stop", "length", "cancelled", "error"]
# The compiled decode step's warm-up shapes (see `Engine._warm_up`): sizes no model dimension
# (heads, head size) is likely to share.
WARM_UP_ROWS, WARM_UP_WINDOW = 3, 37
# freezing: the weights become constants, so inductor packs them itself. cpp_wrapper: the
# compiled step's ~150 calls a token are made from C++ rather than Python (a nano decode step
# with free matrix products: 2.5 -> 1.85 ms, AMD EPYC, 2 threads).
COMPILE_OPTIONS = {"freezing": True, "cpp_wrapper": True}
# What a --compile engine announces before it compiles, or where the C step makes it moot.
COMPILING = "compiling the decode step (--compile, ~15-120 s, less once cached)..."
COMPILE_NOT_NEEDED = ("--compile: not needed here, each decode step already runs as one call "
                      "into our CPU kernels (faster than a compiled step); not compiling")
# Prompts admitted together are prefilled as one padded batch within these bounds
# (`_prefill_groups`): padding as a share of the real tokens, and padded tokens a batch.
PREFILL_PADDING, PREFILL_TOKENS = 0.25, 2048
UNSAMPLEABLE = ("the model's next-token scores could not be sampled (NaN or all -inf): "
                "the model's weights are probably broken")


def notice_to_stderr(line: str) -> None:
    """What chat and serve pass as `Engine(announce=...)`: a notice beside the output."""
    print(line, file=sys.stderr, flush=True)


class PromptTooLongError(ValueError):
    """The prompt leaves no room in the model's context; the message says by how much."""


class GenerationError(RuntimeError):
    """A sequence driven by generate/generate_batch/stream ended in finish_reason "error"."""


@dataclass
class Generation:
    """Result of one prompt: new tokens (stop token excluded) and how generation ended."""

    tokens: list[int]
    finish_reason: FinishReason  # generate and generate_batch end in "stop" or "length"
    stop_token: int | None = None
    prompt_tokens: int = 0
    time_to_first_token_s: float = 0.0
    seconds: float = 0.0


@dataclass
class TokenEvent:
    """What one `Engine.step` did to one sequence.

    `token` is a new output token, or None when there is none: the sequence hit a stop token
    (not part of the output, see `Generation.stop_token`), had no budget, or was cancelled.
    """

    seq_id: int
    token: int | None
    finished: bool
    finish_reason: FinishReason | None  # None while running


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
@dataclass(eq=False)
class _Sequence:
    id: int
    prompt: list[int]
    params: SamplingParams
    stops: frozenset[int]
    budget: int  # new tokens allowed: max_new_tokens clipped to the context
    added: float  # perf_counter at add(), for time to first token
    generator: torch.Generator | None = None
    seen: torch.Tensor | None = None  # (1, V) bool, for the repetition penalty
    tokens: list[int] = field(default_factory=list)
    slot: int = -1
    finish_reason: FinishReason | None = None
    stop_token: int | None = None
    first_token_at: float = 0.0
    finished_at: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.params.temperature == 0 and self.params.repetition_penalty == 1.0

    def result(self) -> Generation:
        return Generation(self.tokens, self.finish_reason or "length", self.stop_token,
                          len(self.prompt), max(self.first_token_at - self.added, 0.0),
                          self.finished_at - self.added)


class Engine:
    """Continuous batching over a fixed KV cache; see the module docstring.

    `add`/`step`/`cancel` are for one driver (a server loop); `generate`, `generate_batch` and
    `stream` drive the engine themselves and so need it idle.
    """

    def __init__(self, model: torch.nn.Module, *, max_batch_size: int = 8,
                 max_seq_len: int | None = None, dtype: DecodeDtype = DEFAULT_DECODE_DTYPE,
                 compile: bool = False, announce: Callable[[str], None] | None = None
                 ) -> None:
        context = int(model.config.max_seq_len)
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size}: must be >= 1")
        if max_seq_len is not None and not 1 < max_seq_len <= context:
            raise ValueError(f"max_seq_len={max_seq_len}: must be in 2..{context} "
                             "(the model's context length)")
        if compile:
            check_compiled_decode(dtype, next(model.parameters()).device)
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len or context
        # On CPU, decode through packed linears (our AVX2 kernels, else oneDNN's: faster
        # matrix-vector products in fp32, more in bf16/int8, see packed_linear.py), once per
        # engine; the caller's model is untouched. `dtype` other than fp32 on a GPU: ValueError.
        # Where our kernels run the model, each eager decode step is one C call (cpu_decode.py,
        # faster than a compiled step), and `compile` has nothing to add.
        self.model = packed_for_cpu(model, dtype)
        self.cache = KVCache.for_model(self.model, max_batch_size, self.max_seq_len)
        self._c_step = DecodeStep.for_model(self.model, self.cache)
        self._forward = self.model
        self.compiled = compile and self._c_step is None
        if compile and not self.compiled and announce is not None:
            announce(COMPILE_NOT_NEEDED)
        if self.compiled:
            # The decode step through torch.compile, the weights frozen into it (so build a
            # new engine after changing them), the linears packed as `model_to_compile` says;
            # compiled here, on dummy rows, so no request waits for it.
            if announce is not None:
                announce(COMPILING)
            self.model = model_to_compile(model, dtype)  # same weights: the cache still fits
            self._forward = torch.compile(self.model, dynamic=True, options=COMPILE_OPTIONS)
        self._slots: list[_Sequence | None] = [None] * max_batch_size
        self._queue: deque[_Sequence] = deque()
        self._cancelled: list[TokenEvent] = []
        self._ids = itertools.count()
        if self.compiled:
            try:
                self._warm_up()
            except Exception as err:  # inductor's many failures (no C++ compiler, ...)
                first = (str(err).strip() or "no message").splitlines()[0][:200]
                raise ValueError(f"--compile failed on this machine ({type(err).__name__}: "
                                 f"{first}); run without --compile") from None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- the driver's API -------------------------------------------------------------------
    def add(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
            stop_ids: Collection[int] = ()) -> int:
        """Queue a prompt; returns its sequence id. Admitted (prefilled) by the next `step`."""
        seq = self._new_sequence(prompt_ids, params or SamplingParams(), stop_ids)
        self._queue.append(seq)
        return seq.id

    def cancel(self, seq_id: int) -> None:
        """Drop a queued or running sequence now; the next `step` reports it as cancelled."""
        if self._drop(seq_id):
            self._cancelled.append(TokenEvent(seq_id, None, True, "cancelled"))

    def has_work(self) -> bool:
        return bool(self._queue or self._cancelled or any(self._slots))

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Admit queued sequences (prefill), then one decode step for the running ones.

        Returns one event per sequence that advanced (plus those cancelled since the last
        step). Sampled ids stay on the device until one host sync for the whole batch.
        """
        events, self._cancelled = self._cancelled, []
        running = [s for s in self._slots if s is not None]
        admitted = self._admit(events)
        rows, logits = [], []
        if running:
            rows.append(running)
            logits.append(self._decode(running))
        # After the decode: its filler rows may touch free slots' position 0.
        for group in _prefill_groups(admitted):
            rows.append(group)
            logits.append(self._prefill(group))
        seqs = [s for group in rows for s in group]
        if not seqs:
            return events
        tokens = self._sample(seqs, torch.cat(logits)).tolist()  # the one host sync per step
        now = time.perf_counter()
        for seq, token in zip(seqs, tokens, strict=True):
            events.append(self._advance(seq, token, now))
        return events

    # --- driven to the end --------------------------------------------------------------------
    def generate(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
                 stop_ids: Collection[int] = (), *,
                 on_token: Callable[[int], None] | None = None) -> Generation:
        """One prompt (the batch of one); `on_token(id)` sees every new output token."""
        seqs = self._start([prompt_ids], [params or SamplingParams()], stop_ids)
        for event in self._drive(seqs):
            if on_token is not None and event.token is not None:
                on_token(event.token)
        return _checked(seqs)[0]

    def generate_batch(self, prompts: Sequence[Sequence[int]],
                       params: SamplingParams | Sequence[SamplingParams] | None = None,
                       stop_ids: Collection[int] = ()) -> list[Generation]:
        """Several prompts, `max_batch_size` at a time (the rest queue); one result each.

        `params` is one SamplingParams for all or one per prompt. Each result equals what the
        prompt gives alone.
        """
        if isinstance(params, SamplingParams) or params is None:
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        seqs = self._start(prompts, params, stop_ids)
        for _ in self._drive(seqs):
            pass
        return _checked(seqs)

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
               stop_ids: Collection[int] = ()) -> Iterator[int]:
        """New output tokens of one prompt as they are produced; closing it cancels the rest."""
        seqs = self._start([prompt_ids], [params or SamplingParams()], stop_ids)
        for event in self._drive(seqs):
            if event.token is not None:
                yield event.token
        _checked(seqs)

    def _start(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams],
               stop_ids: Collection[int]) -> list[_Sequence]:
        if self.has_work():
            raise RuntimeError("this engine is driven through add()/step() by another caller; "
                               "give generate/stream an engine of their own")
        seqs = [self._new_sequence(p, sp, stop_ids)
                for p, sp in zip(prompts, params, strict=True)]
        self._queue.extend(seqs)  # only once every prompt is known to fit
        return seqs

    def _drive(self, seqs: list[_Sequence]) -> Iterator[TokenEvent]:
        """Step until `seqs` are finished; if interrupted (Ctrl-C, a closed stream, a failing
        callback), they leave the engine so it is idle again."""
        try:
            while any(s.finish_reason is None for s in seqs):
                yield from self.step()
        finally:
            for seq in seqs:
                self._drop(seq.id)

    # --- internals ------------------------------------------------------------------------------
    def _new_sequence(self, prompt: Sequence[int], params: SamplingParams,
                      stop_ids: Collection[int]) -> _Sequence:
        prompt = [int(t) for t in prompt]
        room = self.max_seq_len - len(prompt)
        if not prompt:
            raise ValueError("empty prompt: give at least one token (e.g. <|bos|>)")
        if room < 1:
            raise PromptTooLongError(
                f"prompt of {len(prompt)} tokens leaves no room in the {self.max_seq_len}-token "
                f"context: shorten it by at least {len(prompt) - self.max_seq_len + 1} tokens")
        device = self.device
        seq = _Sequence(next(self._ids), prompt, params, frozenset(stop_ids),
                        min(params.max_new_tokens, room), time.perf_counter())
        if params.temperature > 0:  # greedy consumes no randomness, so it needs no generator
            seq.generator = make_generator(params.seed, device)
        if params.repetition_penalty != 1.0:
            seq.seen = torch.zeros(1, self.model.config.vocab_size, dtype=torch.bool,
                                   device=device)
        return seq

    def _drop(self, seq_id: int) -> bool:
        """Remove a queued or running sequence without an event; False if it is not here."""
        for seq in self._queue:
            if seq.id == seq_id:
                self._queue.remove(seq)
                seq.finish_reason = seq.finish_reason or "cancelled"
                return True
        for slot, seq in enumerate(self._slots):
            if seq is not None and seq.id == seq_id:
                self._slots[slot] = None
                seq.finish_reason = seq.finish_reason or "cancelled"
                return True
        return False

    def _admit(self, events: list[TokenEvent]) -> list[_Sequence]:
        admitted = []
        while self._queue and None in self._slots:
            seq = self._queue.popleft()
            if seq.budget == 0:  # max_new_tokens=0: finished before it needs a slot
                seq.finish_reason, seq.finished_at = "length", time.perf_counter()
                events.append(TokenEvent(seq.id, None, True, "length"))
                continue
            seq.slot = self._slots.index(None)
            self._slots[seq.slot] = seq
            admitted.append(seq)
        return admitted

    def _prefill(self, group: list[_Sequence]) -> torch.Tensor:
        """Run prompts in neighbouring slots into their slots, as one batch right-padded to the
        longest; logits (len(group), V) of each one's last position. A padded row writes junk
        keys past its prompt, which its mask hides until decoding overwrites them."""
        longest, device = max(len(s.prompt) for s in group), self.device
        ids = torch.tensor([s.prompt + [0] * (longest - len(s.prompt)) for s in group],
                           dtype=torch.long, device=device)
        positions = torch.arange(longest, device=device)[None].expand(len(group), -1)
        first = group[0].slot
        cache = self.cache.window(slice(first, first + len(group)), longest)
        hidden = self.model.hidden(ids, positions, kv_cache=cache)
        last = torch.tensor([len(s.prompt) - 1 for s in group], device=device)
        # only each prompt's last row: prefill needs no more
        return self.model.lm_head(hidden[torch.arange(len(group), device=device), last])

    def _decode(self, running: list[_Sequence]) -> torch.Tensor:
        """Feed each running sequence its last token; logits (len(running), V)."""
        rows = max(s.slot for s in running) + 1
        ids, positions = [0] * rows, [0] * rows  # free slots in between: a harmless filler row
        for seq in running:
            ids[seq.slot] = seq.tokens[-1]
            positions[seq.slot] = len(seq.prompt) + len(seq.tokens) - 1
        if self._c_step is not None:
            logits = self._c_step(ids, positions)
        else:
            logits = self._torch_decode(ids, positions)
        if len(running) == rows:
            return logits
        return logits[torch.tensor([s.slot for s in running], device=logits.device)]

    def _torch_decode(self, ids: list[int], positions: list[int]) -> torch.Tensor:
        device = self.device
        ids_t = torch.tensor(ids, dtype=torch.long, device=device)[:, None]
        pos_t = torch.tensor(positions, dtype=torch.long, device=device)[:, None]
        # Attend over the longest row so far, not the whole context: same result, less work.
        cache = self.cache.window(slice(0, len(ids)), max(positions) + 1)
        return self._forward(ids_t, pos_t, kv_cache=cache)[:, -1]  # (rows, V)

    @torch.inference_mode()
    def _warm_up(self) -> None:
        """Compile the decode step for one row and for several (a size of 1 is specialised).
        The sizes are odd on purpose: torch.compile assumes that dimensions equal while it
        traces stay equal (2 rows over a 2-slot window with 2 KV heads would recompile for
        every other shape, mid-request). The junk written to the cache stays behind positions
        that every later sequence overwrites before it reads them."""
        device, length = self.device, min(WARM_UP_WINDOW, self.max_seq_len)
        for rows in sorted({1, min(WARM_UP_ROWS, self.max_batch_size)}):
            ids = torch.zeros(rows, 1, dtype=torch.long, device=device)
            positions = torch.full((rows, 1), length - 1, dtype=torch.long, device=device)
            self._forward(ids, positions, kv_cache=self.cache.window(slice(0, rows), length))

    def _sample(self, seqs: list[_Sequence], logits: torch.Tensor) -> torch.Tensor:
        """Next ids (n,), on the device; each row with its own params and generator."""
        if all(s.greedy for s in seqs):
            return greedy_next(logits)
        picked = []
        for i, seq in enumerate(seqs):
            token = sample_next(logits[i:i + 1], seq.params, seq.generator, seq.seen)
            if seq.seen is not None:
                # A stop token or NO_TOKEN (clamped to a valid index) ends it: no harm done.
                seq.seen[0].index_fill_(0, token.clamp(min=0), True)
            picked.append(token)
        return torch.cat(picked)

    def _advance(self, seq: _Sequence, token: int, now: float) -> TokenEvent:
        if not seq.tokens and seq.stop_token is None:
            seq.first_token_at = now
        if token == NO_TOKEN:
            seq.finish_reason = "error"
        elif token in seq.stops:
            seq.finish_reason, seq.stop_token = "stop", token
        else:
            seq.tokens.append(token)
            if len(seq.tokens) >= seq.budget:
                seq.finish_reason = "length"
        if seq.finish_reason is not None:
            seq.finished_at = now
            self._slots[seq.slot] = None
            new = token if seq.finish_reason == "length" else None
            return TokenEvent(seq.id, new, True, seq.finish_reason)
        return TokenEvent(seq.id, token, False, None)


def _prefill_groups(admitted: list[_Sequence]) -> list[list[_Sequence]]:
    """Admitted sequences in prefill batches: neighbouring slots (one cache window), padding
    at most PREFILL_PADDING of the real tokens (or 32 tokens), at most PREFILL_TOKENS padded
    tokens a batch unless a prompt alone is longer. Eight prompts of ~20 tokens prefilled as
    one batch take 0.22 s instead of 0.5 (nano, 2 cores): a server's first tokens come sooner."""
    groups: list[list[_Sequence]] = []
    for seq in admitted:
        group = groups[-1] if groups else None
        if group is not None and group[-1].slot + 1 == seq.slot:
            lengths = [len(s.prompt) for s in group] + [len(seq.prompt)]
            padded = len(lengths) * max(lengths)
            if (padded <= PREFILL_TOKENS
                    and padded - sum(lengths) <= max(32, PREFILL_PADDING * sum(lengths))):
                group.append(seq)
                continue
        groups.append([seq])
    return groups


def _checked(seqs: list[_Sequence]) -> list[Generation]:
    """The driven paths' results; a sequence that ended in "error" raises `GenerationError`."""
    if any(s.finish_reason == "error" for s in seqs):
        raise GenerationError(UNSAMPLEABLE)
    return [s.result() for s in seqs]


def add_decode_args(p: argparse.ArgumentParser) -> None:
    """`--dtype` and `--compile`: how generation reads the weights (chat, serve, evaluate);
    see `Engine`."""
    p.add_argument("--dtype", choices=DECODE_DTYPES, default=DEFAULT_DECODE_DTYPE,
                   help="weights generation reads on the CPU: fp32 (exact), bf16 (half the "
                   "bytes: ~1.5x faster), int8 (a quarter; scales per 32 weights, like "
                   "llama.cpp's q8_0: ~2x faster where our AVX2 kernels build, else only on "
                   "CPUs with VNNI); "
                   f"default {DEFAULT_DECODE_DTYPE}; a GPU takes fp32 only")
    p.add_argument("--compile", action="store_true",
                   help="CPU where our AVX2 kernels do not build (ARM, no C compiler): "
                   "compile the decode step with torch.compile (1.2-1.5x faster decoding, same "
                   "tokens; ~15-120 s at start, less once torch's cache holds it); where they "
                   "build, each step is already one C call, faster still, and this does "
                   "nothing")
