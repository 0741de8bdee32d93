"""`aethermind demo` (what `make demo` runs), shrunk: a tiny model generating a few tokens runs
every stage through the same wiring, and each stage's output is checked against its inputs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from aethermind import demo
from aethermind.data import synth
from aethermind.evaluation.rewordings import rewordings
from aethermind.model.config import PRESETS
from aethermind.runtime import dist
from aethermind.text.prompts import TEST_PROMPTS
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.dashboard import read_metrics


@pytest.mark.parametrize("rl_minutes", ["0", "0.05"])  # 0.05 minutes: one RL step
def test_demo_runs_every_stage_and_writes_its_outputs(tmp_path, capsys, monkeypatch, rl_minutes):
    # The wiring, not the learning, is under test: a one-layer "tiny" and few validation
    # chats and fresh questions keep it to seconds.
    monkeypatch.setitem(PRESETS, "tiny", dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                                              ffn_dim=64, max_seq_len=512))
    real_config, real_synth = demo.train_config, synth.write_synth
    monkeypatch.setattr(demo, "train_config", lambda *a, **k: real_config(*a, **k).replace(
        batch_size=2, eval_batches=1))
    monkeypatch.setattr(synth, "write_synth", lambda *a, **k: real_synth(*a, **k | {"n_val": 8}))
    monkeypatch.setattr(demo, "N_FRESH", 6)
    out = tmp_path / "demo"
    monkeypatch.setattr(demo, "N_PHRASING", 24)
    monkeypatch.setattr(demo, "N_BEYOND", 5)
    rc = demo.main(["--output", str(out), "--steps", "2", "--n-train", "100", "--n-test", "12",
                    "--max-new-tokens", "4", "--rl-minutes", rl_minutes])
    assert rc == 0
    final = out / "final_model" / "forge1_tiny_final.pt"
    assert final.is_file()
    # The demo vocabulary: the bundled one cut to what the data uses, shipped with the model.
    vocab = Forge1Tokenizer(out / "final_model" / "tokenizer")
    assert vocab.fingerprint() == Forge1Tokenizer(out / "tokenizer").fingerprint()
    assert vocab.get_vocab_size() < Forge1Tokenizer().get_vocab_size() // 4
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    report = json.loads((out / "eval.json").read_text())
    assert [r["prompt"] for r in report["prompts"]] == list(TEST_PROMPTS)
    assert all(0 < r["completion_tokens"] <= 4 for r in report["prompts"])
    val_lines = (out / "data" / "val.jsonl").read_text(encoding="utf-8").splitlines()
    assert report["validation"]["documents"] == len(val_lines)
    reasoning = report["reasoning"]
    assert reasoning["n"] == 12 and set(reasoning["per_task"]) == set(synth.TASKS)
    # the other splits of issue 18, each per family
    assert report["phrasing"]["n"] == 24 and set(report["phrasing"]["per_task"]) == \
        set(synth.TASKS)
    assert set(report["beyond"]["per_task"]) == set(synth.BEYOND_TASKS)
    assert report["rewordings"]["n"] == len(rewordings())
    assert report["blind"]["n"] == len(rewordings("blind"))
    assert all(0 <= t["accuracy"] <= 1 for t in reasoning["per_task"].values())
    assert reasoning["correct"] == sum(s["correct"] for s in reasoning["samples"])
    assert set(report["before_training"]["per_task"]) == set(synth.TASKS)
    if rl_minutes == "0":
        assert "after_rl" not in report and not (out / "rl").exists()
    else:  # the RL model answered the same held-out questions, and is a loadable final_model
        assert report["after_rl"]["steps"] == 1
        assert report["after_rl"]["accuracy"]["n"] == 12
        assert (out / "rl" / "final_model" / "forge1_tiny_final.pt").is_file()
        assert [r["step"] for r in read_metrics(out / "rl" / "metrics.jsonl")] == [1]
    fresh = report["fresh_guide_questions"]
    assert fresh["n"] == 6 and report["demo"]["steps"] == 2
    assert report["demo"]["precision"] == dist.cpu_precision()  # bf16 where the CPU has it
    transcript = (out / "chat_transcript.md").read_text()
    # the conversation, the fresh questions, one hidden rewording of each family
    assert transcript.count("**you:**") == len(demo.CHAT_SCRIPT) + 6 + len(synth.TASKS)
    assert all(f"**you:** {message}" in transcript for message in demo.CHAT_SCRIPT)
    assert all(f"**you:** {s['question']}" in transcript for s in fresh["samples"])
    printed = capsys.readouterr().out
    assert "accuracy per task family" in printed and "done in" in printed
    assert "held-out phrasings" in printed and "hidden rewordings" in printed
    printed_lines = [line.strip() for line in printed.splitlines()]
    for command, _ in demo.next_steps(out):  # each on one line, whole (tested below)
        assert any(line.startswith(command) for line in printed_lines), command


def test_minutes_become_steps_and_too_few_minutes_is_a_clear_error(capsys):
    assert demo.steps_for(10) == round((10 - demo.OVERHEAD_MINUTES) * demo.STEPS_PER_MINUTE)
    assert demo.steps_for(30) > demo.steps_for(10)
    with pytest.raises(SystemExit) as exc:
        demo.main(["--minutes", "1"])
    assert exc.value.code == 2 and "--minutes 1" in capsys.readouterr().err


def test_demo_refuses_to_clear_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a demo directory"):
        demo.main(["--output", str(tmp_path), "--steps", "1"])
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_second_demo_in_a_running_demos_folder_is_refused_in_one_line(tmp_path, capsys):
    """It would delete the running demo's data and model from under it; a lock left by a
    crashed demo (its pid gone) is taken over."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / demo.MARKER).write_text("")
    (out / "model.pt").write_text("the running demo's")
    lock = out / demo.DEMO_LOCK
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--output", str(out), "--steps", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "in use by another demo" in err and "--output" in err
    assert (out / "model.pt").exists()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 1}))  # dead
    taken = demo._prepare_out(out)
    assert taken.held and not (out / "model.pt").exists()
    taken.release()
    assert not lock.exists()


def test_training_examples_cover_the_steps_and_match_the_measured_size(tmp_path):
    """`examples_for` sizes the data from TOKENS_PER_EXAMPLE; if traces grow or shrink, the
    constant must follow, or the demo repeats examples (or builds data it never reads). The
    constant may lag a recipe's growth by up to a quarter (a few seconds of generating a fresh
    clone never reads) so measured runs keep their data; it may never cover less than a pass."""
    from aethermind.data import synth
    from aethermind.text.chat_format import encode
    from aethermind.text.tokenizer import Forge1Tokenizer

    tok = Forge1Tokenizer()
    convs = synth.to_conversations(synth.make_split("train", 2000))
    per_example = sum(len(encode(c, tok)[0]) for c in convs) / 2000  # what packing stores
    assert 0.85 < per_example / demo.TOKENS_PER_EXAMPLE < 1.25, per_example
    steps = demo.steps_for(10)
    n = demo.examples_for(steps)
    recipe = demo.train_config(tmp_path, tmp_path, tmp_path, tmp_path, steps)
    assert n * per_example >= steps * recipe.batch_size * recipe.context_length  # one pass
    assert demo.examples_for(2 * steps) > 1.9 * n


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("out", [demo.DEFAULT_OUT, Path("runs/my demo")])
def test_printed_make_targets_set_up_a_fresh_clone_then_run_the_printed_command(out, tmp_path):
    """`make chat` / `make serve` as printed, dry-run (-n) in a clone with no .venv yet: they
    create it with the serve extra, then run what the without-make line says."""
    steps = [shlex.split(command) for command, _ in demo.next_steps(out)]
    targets = [s for s in steps if s[0] == "make"]
    commands = [s for s in steps if s[0] != "make"]
    assert [t[1] for t in targets] == ["chat", "serve"] and len(commands) == 2
    program = demo._aethermind_program()
    venv = tmp_path / ".venv"
    # As a user types it, not nested in `make test`'s own make (its flags would leak in).
    outside_make = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS",
                                                                      "MFLAGS")}
    for target, command in zip(targets, commands, strict=True):
        dry = subprocess.run(["make", "--no-print-directory", "-n", *target[1:], f"VENV={venv}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env=outside_make)
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert lines[0].endswith(f"-m venv {venv}")
        assert f'{venv}/bin/python -m pip install --quiet -e ".[serve]"' in lines
        assert command[:len(program)] == program
        assert shlex.split(lines[-1]) == [f"{venv}/bin/aethermind", *command[len(program):]]


def test_printed_chat_and_serve_commands_run(tmp_path):
    """The without-make lines, run as printed on a model in the demo's layout (the server on a
    free port): chat starts and leaves on /quit, serve answers /health."""
    from _infer_helpers import make_tokenizer, save_final, tiny_config

    from aethermind.model.transformer import Forge1Model

    tok = make_tokenizer()
    save_final(Forge1Model(tiny_config(tok)), tok, tmp_path / "demo")
    chat, serve = [shlex.split(c) for c, what in demo.next_steps(tmp_path / "demo") if not what]
    done = subprocess.run(chat, input="/quit\n", capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "Forge-1 chat" in done.stdout, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("bye")
    proc = subprocess.Popen([*serve, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r" on (http://\S+) ", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None else "")
        with urllib.request.urlopen(m.group(1) + "/health", timeout=60) as reply:
            assert reply.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
