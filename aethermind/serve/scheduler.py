"""Continuous batching for the server: one thread owns the Engine and steps all requests at once.

HTTP handlers run on asyncio; the engine is not thread-safe and its steps block. So a single
scheduler thread is the only code that touches the `Engine`: handlers post `add`/`cancel`
commands to it, it applies them between steps (sequences join and leave the batch there), calls
`engine.step()` while there is work, and hands each `TokenEvent` to the request that owns that
sequence through its event loop (`call_soon_threadsafe`), so a request only ever sees its own
tokens. A sequence the engine ends in "error" (scores it cannot sample) fails alone with
`EngineFailure`; only an exception from `engine.step()` itself fails every request in flight.
It knows nothing about HTTP or text (`server.py`, `api.py`).
Usage: `sched = Scheduler(engine); sched.start(); stream = sched.submit(ids, params, stops)`,
then `async for event in stream: ...` inside the event loop; `sched.cancel(stream)` to leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

from aethermind.inference.engine import UNSAMPLEABLE, TokenEvent
from aethermind.inference.sampling import SamplingParams

log = logging.getLogger(__name__)


class EngineFailure(RuntimeError):
    """Generation failed: for one request (its sequence ended in "error"), or for every request
    in flight (the engine raised while stepping)."""


class RequestStream:
    """The events of one sequence, consumed with `async for` on the loop that submitted it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
        self.seq_id: int | None = None  # set by the scheduler thread once the engine took it
        self.done = False  # the last event was delivered (or the request left)

    def _deliver(self, item: TokenEvent | BaseException) -> None:
        """Called on the scheduler thread."""
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is shutting down
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        while not self.done:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                self.done = True
                raise item
            self.done = item.finished
            yield item


class Scheduler:
    """Owns `engine` on a daemon thread; see the module docstring."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._commands: deque[tuple[str, RequestStream, tuple]] = deque()
        self._wake = threading.Condition()
        self._streams: dict[int, RequestStream] = {}  # scheduler thread only
        self._in_flight = 0  # submitted and not finished; read by /health
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- called from the event loop ---------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aethermind-scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams,
               stop_ids: Collection[int] = ()) -> RequestStream:
        stream = RequestStream(asyncio.get_running_loop())
        self._post("add", stream, (list(prompt_ids), params, tuple(stop_ids)))
        return stream

    def cancel(self, stream: RequestStream) -> None:
        """Free the request's slot (or queue place); harmless after it finished."""
        if not stream.done:
            stream.done = True
            self._post("cancel", stream, ())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _post(self, kind: str, stream: RequestStream, args: tuple) -> None:
        with self._wake:
            if kind == "add":
                self._in_flight += 1
            self._commands.append((kind, stream, args))
            self._wake.notify()

    # --- the scheduler thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._commands and not self._stopping and not self.engine.has_work():
                    self._wake.wait()
                if self._stopping:
                    return
                commands = list(self._commands)
                self._commands.clear()
            for kind, stream, args in commands:
                self._apply(kind, stream, args)
            if self.engine.has_work():
                self._step()

    def _finished(self, stream: RequestStream) -> None:
        if stream.seq_id is not None:
            self._streams.pop(stream.seq_id, None)
        with self._wake:
            self._in_flight -= 1

    def _apply(self, kind: str, stream: RequestStream, args: tuple) -> None:
        if kind == "add":
            try:
                stream.seq_id = self.engine.add(*args)
            except Exception as err:  # e.g. PromptTooLongError: the request fails, not us
                self._finished(stream)
                stream._deliver(err)
                return
            self._streams[stream.seq_id] = stream
        elif stream.seq_id in self._streams:  # cancel of a sequence still in the engine
            self.engine.cancel(stream.seq_id)
            self._finished(stream)
        elif stream.seq_id is None:  # cancelled before its add ran: nothing to undo
            pass

    def _step(self) -> None:
        try:
            events = self.engine.step()
        except Exception as err:  # a bug or out of memory: fail everyone, keep serving
            log.exception("engine step failed")
            for seq_id, stream in list(self._streams.items()):
                self.engine.cancel(seq_id)
                self._finished(stream)
                stream._deliver(EngineFailure(f"generation failed: {type(err).__name__}: {err}"))
            return
        for event in events:
            stream = self._streams.get(event.seq_id)
            if stream is None:  # cancelled in the meantime
                continue
            if event.finished:
                self._finished(stream)
            if event.finish_reason == "error":
                stream._deliver(EngineFailure(f"generation failed: {UNSAMPLEABLE}"))
            else:
                stream._deliver(event)
