"""`python scripts/chat.py`: driven through a pseudo-terminal like a user would (pexpect)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
from pathlib import Path

import pexpect
import pytest
import torch
from _infer_helpers import make_tokenizer, save_final, train_tiny

from aethermind.cli import run_module

ROOT = Path(__file__).resolve().parents[1]
# One thread: the tiny model gains nothing from more, and spinning OpenMP workers stall on a
# shared CPU (as for the training subprocesses in test_train).
ENV = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = make_tokenizer()
    return save_final(train_tiny(tok), tok, tmp_path_factory.mktemp("out"))


def _spawn(*args, cwd=ROOT):
    # SIGINT as in a terminal: a runner that starts the suite in the background (`cmd &` in a
    # script) hands it down ignored, and Python then never raises KeyboardInterrupt on Ctrl-C.
    child = pexpect.spawn(sys.executable, [str(ROOT / "scripts" / "chat.py"), *args], cwd=cwd,
                          env=ENV, encoding="utf-8", timeout=60, dimensions=(50, 200),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return child


def _chat(ckpt, cwd=ROOT, *extra):
    child = _spawn("--model", str(ckpt), "--device", "cpu", "--temperature", "0", *extra,
                   cwd=cwd)
    child.expect("/help lists the commands")
    child.expect("You: ")
    return child


def _say(child, line):
    child.sendline(line)
    child.expect("You: ")
    return child.before


def test_chat_session_commands_streaming_and_save(ckpt, tmp_path):
    child = _chat(ckpt, tmp_path)
    out = _say(child, "What is 2+2?")
    assert "(thinking...)" in out and "Forge-1: The answer is 4." in out
    assert "2 plus 2" not in out  # thinking hidden by default
    out = _say(child, "/save")
    saved = Path(re.search(r"saved 1 turn\(s\) to (\S+\.json)", out).group(1))
    assert saved.parent == (ckpt.parent.parent / "chats").resolve()  # the output folder
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert data["turns"] == [{"user": "What is 2+2?", "assistant": "The answer is 4.",
                              "thinking": "2 plus 2 makes 4."}]
    assert "thinking display: on" in _say(child, "/think")
    assert "history cleared" in _say(child, "/clear")
    out = _say(child, "Sort 3, 1, 2")
    assert "thinking: Order them from small to big." in out and "Forge-1: 1, 2, 3" in out
    out = _say(child, "Say hello in Japanese")  # second turn: the history is in the prompt
    assert "Forge-1: " in out
    out = _say(child, f"/save {tmp_path / 'two.json'}")
    assert "saved 2 turn(s)" in out
    turns = json.loads((tmp_path / "two.json").read_text(encoding="utf-8"))["turns"]
    assert turns[0] == {"user": "Sort 3, 1, 2", "assistant": "1, 2, 3",
                        "thinking": "Order them from small to big."}
    assert turns[1]["user"] == "Say hello in Japanese"
    out = _say(child, "/help")
    assert all(cmd in out for cmd in ("/think", "/save", "/clear", "/help", "/quit"))
    assert "unknown command /nope" in _say(child, "/nope")
    child.sendline("/quit")
    child.expect("bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_streamed_answer_with_emoji_and_cjk_prints_whole(ckpt, tmp_path):
    child = _chat(ckpt, tmp_path)
    assert "Forge-1: こんにちは 😀 世界" in _say(child, "Say hello in Japanese")
    child.sendline("/quit")
    child.expect(pexpect.EOF)


def test_a_tiny_temperature_answers_as_greedy_and_the_chat_goes_on(ckpt, tmp_path):
    """Issue 22: 1e-40 made sampling fail (NaN probabilities) and the chat crashed."""
    child = _chat(ckpt, tmp_path, "--temperature", "1e-40")
    assert "Forge-1: The answer is 4." in _say(child, "What is 2+2?")
    second = _say(child, "Say hello in Japanese")
    assert "Forge-1: " in second and "error" not in second
    child.sendline("/quit")
    child.expect(pexpect.EOF)


@pytest.mark.parametrize("key", ["ctrl-d", "ctrl-c"])
def test_ctrl_d_and_ctrl_c_end_cleanly(ckpt, key):
    child = _chat(ckpt)
    if key == "ctrl-d":
        child.sendeof()
    else:
        child.sendintr()
    child.expect("bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")


def _chat_in_process(monkeypatch, stdin: bytes, *args: str) -> int:
    """`scripts/chat.py *args` in this process, reading `stdin` (the one-line-message tests:
    the terminal itself is what the pexpect tests above are about)."""
    for key in ("TERM", "NO_COLOR", "COLUMNS"):
        monkeypatch.setenv(key, ENV[key])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        return run_module("aethermind.inference.chat", list(args), label="scripts/chat.py")
    except SystemExit as exit_:  # parser.exit, as the script's process would end
        return exit_.code


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu_falls_back_to_cpu_with_one_warning_line(ckpt, capsys,
                                                                         monkeypatch):
    assert _chat_in_process(monkeypatch, b"/quit\n", "--model", str(ckpt), "--device",
                            "cuda") == 0
    out, err = capsys.readouterr()
    assert "/help lists the commands" in out
    lines = [ln for ln in (err + out).splitlines() if ln.strip()]  # stderr comes first
    assert lines[0] == ("warning: device 'cuda' asked but no CUDA GPU is available: running "
                        "on the CPU (slow); use device cpu to silence this")
    assert "on cpu" in lines[1]


def test_missing_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    rc = _chat_in_process(monkeypatch, b"", "--model", str(tmp_path / "x.pt"), "--variant",
                          "nano", "--device", "cpu")
    out, err = capsys.readouterr()
    assert rc == 2 and (out + err).strip().startswith("error: checkpoint not found")


def test_banner_names_the_shape_and_vocabulary_behind_the_parameter_count(ckpt):
    """The demo's tiny is 1.0M parameters where README says 2.8M: the banner says why."""
    from _infer_helpers import tiny_config

    from aethermind.model.transformer import Forge1Model

    cfg = tiny_config(make_tokenizer())
    millions = Forge1Model(cfg).num_parameters() / 1e6
    child = _spawn("--model", str(ckpt), "--device", "cpu")
    child.expect("/help lists the commands")
    banner = " ".join(child.before.split())
    assert f"({millions:.1f}M parameters: custom shape, {cfg.vocab_size:,}-token vocabulary; " \
           "on cpu)" in banner, banner
    child.sendline("/quit")
    child.expect(pexpect.EOF)
