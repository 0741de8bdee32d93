"""`--dtype` in chat, serve and evaluate (one definition, refused off the CPU in one line) and
the thread rule for generation on a busy machine (`runtime.threads`)."""

from __future__ import annotations

import argparse
import io
import sys

import pytest
import torch

from aethermind.evaluation import evaluate
from aethermind.inference import chat
from aethermind.inference.engine import Engine
from aethermind.model import cpu_gemv
from aethermind.model.cpu_gemv import GemvLinear
from aethermind.model.packed_linear import DECODE_DTYPES, DEFAULT_DECODE_DTYPE
from aethermind.model.quantize import Int8Linear, int8_ops_available
from aethermind.model.transformer import Forge1Model
from aethermind.runtime import threads
from aethermind.serve import server


def _dtype_action(parser: argparse.ArgumentParser) -> argparse.Action:
    return next(a for a in parser._actions if "--dtype" in a.option_strings)


@pytest.mark.parametrize("module", [chat, server, evaluate], ids=["chat", "serve", "evaluate"])
def test_dtype_option_is_the_one_definition(module):
    action = _dtype_action(module.build_parser())
    assert tuple(action.choices) == DECODE_DTYPES and action.default == DEFAULT_DECODE_DTYPE


def test_engine_refuses_low_precision_weights_off_the_cpu(tiny_config):
    model = Forge1Model(tiny_config).to("meta")  # stands in for a GPU: not the CPU
    with pytest.raises(ValueError, match="--dtype int8 is a CPU decoding path"):
        Engine(model, dtype="int8")


@pytest.mark.skipif(not int8_ops_available() and cpu_gemv.kernels() is None,
                    reason="neither our int8 kernel nor oneDNN's exists here")
def test_chat_answers_with_int8_weights(overfit_final, monkeypatch, capsys):
    built: list[Engine] = []
    monkeypatch.setattr(chat, "Engine", lambda *a, **k: built.append(Engine(*a, **k))
                        or built[-1])
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 2+2?\n/quit\n"))
    code = chat.main(["--model", str(overfit_final), "--device", "cpu", "--dtype", "int8",
                      "--temperature", "0", "--max-new-tokens", "24"])
    out = capsys.readouterr().out
    assert code == 0 and "4" in out
    layer = GemvLinear if cpu_gemv.kernels() is not None else Int8Linear
    assert isinstance(built[0].model.layers[0].mlp.w_down, layer)


@pytest.mark.parametrize(("cores", "load", "current", "want"), [
    (2, 0.0, 2, 2),  # idle: torch's default
    (2, 0.6, 2, 1),  # another busy thread holds most of a core
    (2, 14.0, 2, 1),  # oversubscribed: never below one
    (16, 3.4, 8, 8),  # plenty free: never above torch's count
    (16, 10.6, 8, 5),
])
def test_decode_threads_leave_busy_cores_alone(cores, load, current, want):
    assert threads.decode_threads(cores, load, current) == want


def test_use_decode_threads_sets_torch(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "machine_load", lambda: 2.2)
    torch.set_num_threads(4)  # the autouse one_thread fixture restores the count
    assert threads.use_decode_threads() == 2 == torch.get_num_threads()


def test_machine_load_does_not_count_work_that_has_ended(monkeypatch):
    """The 1-minute average still says 2 just after a demo; nothing else runs now: 0."""
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.0, 1.0, 0.5))
    monkeypatch.setattr(threads, "_runnable_others", lambda: 0)
    assert threads.machine_load() == 0
    monkeypatch.setattr(threads, "_runnable_others", lambda: 5)  # a burst now: the average
    assert threads.machine_load() == 2.0


def test_runnable_others_reads_proc_loadavg():
    import pathlib

    if not pathlib.Path("/proc/loadavg").exists():
        pytest.skip("no /proc/loadavg on this OS")
    assert 0 <= threads._runnable_others() < 10_000

