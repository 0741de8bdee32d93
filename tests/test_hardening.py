"""Never lose work, never crash on bad input (issue 8): one test per item, each fails without
its fix. The bad-input table in docs/bad_inputs.md lists the same cases run through the CLI."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aethermind.artifacts import checkpoint as ckpt
from aethermind.data import schemas
from aethermind.data.jsonl import DataFileError, numbered_lines
from aethermind.data.pack import _encode_text, build_shards, ensure_shards, read_index
from aethermind.runtime.files import stage_path
from aethermind.runtime.runlock import LOCK_NAME
from aethermind.text import chat_format as cf
from aethermind.text.chat_format import SPECIAL_TOKENS, Conversation, Turn, render
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training import signals, train
from aethermind.training.config import ConfigError, TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide.md"


def chat_line(i: int, user: str | None = None) -> str:
    conv = Conversation(turns=[Turn(user or f"What is {i} + {i}?", f"It is {2 * i}.",
                                    f"{i} and {i} make {2 * i}." if i % 2 else None)])
    return json.dumps({"text": render(conv)}) + "\n"


def write_lines(path: Path, lines: list[str] | str, encoding: str = "utf-8") -> Path:
    text = lines if isinstance(lines, str) else "".join(lines)
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("harden")
    return SimpleNamespace(
        root=root, tok=str(tiny_tokenizer_dir),
        train=str(write_lines(root / "train.jsonl", [chat_line(i) for i in range(48)])),
        val=str(write_lines(root / "val.jsonl", [chat_line(i) for i in range(100, 103)])))


def make_cfg(assets, out: Path, **overrides) -> TrainConfig:
    base = dict(variant="tiny", train_data=assets.train, val_data=None, tokenizer=assets.tok,
                device="cpu", precision="fp32", batch_size=4, context_length=64,
                learning_rate=3e-3, max_steps=2, checkpoint_every=0, eval_every=0,
                eval_batches=2, log_every=1, dashboard="off", output_dir=str(out),
                num_workers=1, seed=0)
    return TrainConfig(**{**base, **overrides})


# --- 1. special tokens from user text -------------------------------------------------------
@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_1_message_equal_to_a_special_token_string_stays_plain_text(tiny_tokenizer, special):
    """Every text slot (system, user, thinking, answer, history, the new message) holds exactly
    a special-token string: the ids must hold only the template's own special tokens."""
    tok = tiny_tokenizer
    safe = Conversation(turns=[Turn("u", "a", "t")], system="s")
    evil = Conversation(turns=[Turn(special, special, special)], system=special)
    specials = set(tok.special_ids.values())

    def special_ids(ids):
        return [i for i in ids if i in specials]

    assert special_ids(cf.encode(evil, tok)[0]) == special_ids(cf.encode(safe, tok)[0])
    for think in (None, True, False):
        assert special_ids(cf.encode_prompt(evil, special, tok, think=think)) == \
            special_ids(cf.encode_prompt(safe, "m", tok, think=think))
    # pack: a plain-text line is one document <|bos|> text <|eos|>, nothing more
    ids, _, is_chat = _encode_text(special, tok)
    assert not is_chat and special_ids(ids) == [tok.bos_id, tok.eos_id]


def test_1_thinking_pipeline_prompt_is_plain_for_user_text(tiny_tokenizer, tiny_config,
                                                           monkeypatch):
    """The chat/pipeline path (what the server will call) encodes through chat_format."""
    from aethermind.inference.engine import Engine
    from aethermind.inference.thinking import run_thinking_pipeline
    from aethermind.model.transformer import Forge1Model

    seen = {}
    real_generate = Engine.generate

    def spy(self, prompt_ids, *args, **kwargs):
        seen.setdefault("prompt", list(prompt_ids))
        return real_generate(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(Engine, "generate", spy)
    run_thinking_pipeline(Forge1Model(tiny_config).eval(), tiny_tokenizer, "<|assistant|>", 2,
                          0.0, history=[Turn("<|eos|>", "<|user|>")])
    ids = tiny_tokenizer.special_ids
    assert seen["prompt"].count(ids["<|assistant|>"]) == 1  # the history turn's own marker
    assert seen["prompt"].count(ids["<|eos|>"]) == 0
    assert seen["prompt"].count(ids["<|user|>"]) == 2  # history turn + new message


# --- 2. retention and fresh runs in a used folder -------------------------------------------
def _state(step: int) -> dict:
    return {"step": step, "model": {}, "optimizer": {}, "config": {},
            "tokenizer_fingerprint": "x"}


def test_2_foreign_later_file_never_makes_retention_delete_good_checkpoints(tmp_path):
    (tmp_path / "step_0000900.pt").write_bytes(b"not a checkpoint")
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(_state(step), tmp_path, step, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == [
        "step_0000003.pt", "step_0000004.pt", "step_0000900.pt"]
    ckpt.save_checkpoint(_state(5), tmp_path, 5, keep=1)  # keep=1 kept nothing before
    with pytest.warns(UserWarning, match="step_0000900"):
        assert ckpt.latest_valid(tmp_path)[1]["step"] == 5


def test_2_fresh_run_in_a_used_folder_is_refused_and_keeps_the_old_run(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path, checkpoint_every=1)
    train.train(cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").glob("step_*.pt")}
    with pytest.raises(train.TrainingError, match="--resume.*--overwrite"):
        train.train(cfg)
    after = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").glob("step_*.pt")}
    assert after == before and before
    assert train.train(cfg.replace(max_steps=1), overwrite=True)["status"] == "completed"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [
        "step_0000001.pt"]


# --- 3. one run per output folder -----------------------------------------------------------
def test_3_second_run_in_the_same_folder_is_refused_and_stale_lock_is_taken(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path, max_steps=1)
    lock = tmp_path / LOCK_NAME
    import socket

    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    with pytest.raises(train.TrainingError, match="in use by another training run"):
        train.train(cfg)
    assert not (tmp_path / "checkpoints").exists()  # refused before any work
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead)}))  # crashed
    assert train.train(cfg)["status"] == "completed"
    assert not lock.exists()  # released on exit


# --- 4. preprocess never wipes good data ----------------------------------------------------
def test_4_preprocess_with_nothing_usable_keeps_existing_outputs(tmp_path, capsys):
    from aethermind.data.preprocess import main as preprocess_main

    raw = tmp_path / "raw"
    raw.mkdir()
    write_lines(raw / "openhermes.jsonl", ["not json\n", '{"conversations": 5}\n'])
    out = write_lines(tmp_path / "train.jsonl", ["good train\n"])
    val = write_lines(tmp_path / "val.jsonl", ["good val\n"])
    assert preprocess_main(["--raw-dir", str(raw), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no samples kept" in err and "openhermes.jsonl:1" in err
    assert out.read_text() == "good train\n" and val.read_text() == "good val\n"
    (raw / "openhermes.jsonl").write_bytes(b"\x00\x01binary\xff" * 50)
    assert preprocess_main(["--raw-dir", str(raw), "--output", str(out)]) == 1
    assert "binary data" in capsys.readouterr().err
    assert out.read_text() == "good train\n"


# --- 5. encodings ---------------------------------------------------------------------------
def test_5_utf8_bom_is_read_everywhere(tmp_path, tiny_tokenizer):
    from aethermind.data.preprocess import PreprocessConfig, preprocess
    from aethermind.data.tokenizer_train import read_jsonl_texts

    record = {"instruction": "Name a colour.", "output": "Blue."}
    raw = write_lines(tmp_path / "platypus.jsonl", [json.dumps(record) + "\n"], "utf-8-sig")
    stats = preprocess(PreprocessConfig(inputs=(raw,), output=tmp_path / "t.jsonl",
                                        val_fraction=0.0))
    assert stats[0].train == 1 and not stats[0].dropped  # the record was dropped before
    data = write_lines(tmp_path / "d.jsonl", [chat_line(1), chat_line(2)], "utf-8-sig")
    shards = build_shards(data, tiny_tokenizer, tmp_path / "s", context_length=32)
    assert read_index(shards)["malformed_lines"] == 0 and read_index(shards)["n_documents"] == 2
    assert len(list(read_jsonl_texts(data, "text"))) == 2


@pytest.mark.parametrize("encoding,problem", [("utf-16", "UTF-16"), ("utf-32", "UTF-32"),
                                              (None, "binary data")])
def test_5_wide_or_binary_files_are_one_line_errors_in_every_reader(
        tmp_path, assets, capsys, encoding, problem):
    from aethermind.data.cli import pack_main
    from aethermind.data.preprocess import main as preprocess_main
    from aethermind.data.tokenizer_train import main as tokenizer_main

    bad = tmp_path / "bad.jsonl"
    if encoding is None:
        bad.write_bytes(bytes(range(256)) * 8)
    else:
        write_lines(bad, [chat_line(1)], encoding)
    with pytest.raises(DataFileError, match=problem):
        list(numbered_lines(bad))
    runs = [lambda: preprocess_main(["--input", str(bad), "--output", str(tmp_path / "o.jsonl")]),
            lambda: pack_main(["--input", str(bad), "--output", str(tmp_path / "sh")]),
            lambda: tokenizer_main(["train", "--input", str(bad), "--vocab-size", "400",
                                    "--output", str(tmp_path / "tok")]),
            lambda: train.main(["--config", str(_yaml(make_cfg(assets, tmp_path / "run",
                                                               train_data=str(bad)), tmp_path))])]
    for run in runs:
        try:
            rc = run()
        except SystemExit as exit_:  # argparse's parser.exit
            rc = exit_.code
        err = capsys.readouterr().err
        assert rc != 0 and problem in err and str(bad) in err and "Traceback" not in err


def _yaml(cfg: TrainConfig, tmp_path: Path) -> Path:
    from aethermind.training.config import dump_yaml

    path = tmp_path / "run.yaml"
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    return path


def test_5_invalid_utf8_in_the_middle_names_the_file(tmp_path, capsys):
    from aethermind.data.cli import pack_main

    bad = tmp_path / "mid.jsonl"
    bad.write_bytes(chat_line(1).encode() + b'{"text": "caf\xe9"}\n')
    assert pack_main(["--input", str(bad), "--output", str(tmp_path / "sh")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: not valid UTF-8" in err and "Traceback" not in err


# --- 6. one rule for malformed lines --------------------------------------------------------
def test_6_malformed_lines_are_skipped_counted_and_named(assets, tmp_path, capsys):
    data = write_lines(tmp_path / "train.jsonl",
                       [chat_line(i) for i in range(20)] + ["{broken\n", '{"text": 5}\n'])
    cfg = make_cfg(assets, tmp_path / "run", train_data=str(data), tokenizer="train",
                   tokenizer_vocab_size=400, max_steps=1)
    assert train.main(["--config", str(_yaml(cfg, tmp_path))]) == 0  # a traceback before
    err = capsys.readouterr().err
    place = f"{data}:21, {data}:22"
    assert err.count("skipped 2 malformed line(s)") == 2 and err.count(place) == 2, err


# --- 7. tracebacks where a message belongs --------------------------------------------------
@pytest.mark.parametrize("content", ["", "\n\n", '{"nope": 1}\n'])
def test_7_empty_or_useless_training_data_is_a_one_line_error(assets, tmp_path, capsys,
                                                             content):
    data = write_lines(tmp_path / "train.jsonl", content)
    cfg = make_cfg(assets, tmp_path / "run", train_data=str(data))
    assert train.main(["--config", str(_yaml(cfg, tmp_path))]) == 1
    err = capsys.readouterr().err
    assert "no usable training text" in err and len(err.strip().splitlines()) <= 2


def test_7_corrupt_tokenizer_json_is_a_one_line_error_in_train_and_chat(assets, tmp_path,
                                                                         capsys):
    from aethermind.artifacts.loading import LoadError, load_model

    bad = tmp_path / "tok"
    bad.mkdir()
    (bad / "tokenizer.json").write_text('{"version": "1.0", "model": ', encoding="utf-8")
    cfg = make_cfg(assets, tmp_path / "run", tokenizer=str(bad))
    assert train.main(["--config", str(_yaml(cfg, tmp_path))]) == 1
    assert "not a usable tokenizer.json" in capsys.readouterr().err
    final = _final_model(assets, tmp_path / "model")
    (final.parent / "tokenizer" / "tokenizer.json").write_bytes(b"\x00garbage")
    with pytest.raises(LoadError, match="not a usable tokenizer.json"):
        load_model(final)


_FINAL: dict[str, bytes] = {}


def _final_model(assets, out: Path) -> Path:
    """A trained final_model/ folder (trained once per module, copied after)."""
    import shutil

    if "dir" not in _FINAL:
        result = train.train(make_cfg(assets, assets.root / "final_run", max_steps=1))
        _FINAL["dir"] = str(Path(result["final_model"]).parent)
    shutil.copytree(_FINAL["dir"], out / "final_model")
    return out / "final_model" / "forge1_tiny_final.pt"


def test_7_model_path_that_is_not_a_checkpoint_says_so(tmp_path):
    from aethermind.artifacts.loading import LoadError, load_model

    text = write_lines(tmp_path / "passwd", "root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(LoadError, match="is not a PyTorch checkpoint"):
        load_model(text)


def test_7_chat_save_errors_keep_the_chat_alive(tmp_path):
    from rich.console import Console

    from aethermind.inference.chat import ChatState, _command

    state = ChatState(show_thinking=False, system="s", history=[Turn("hi", "hello")])
    console = Console(record=True, width=300)
    blocker = write_lines(tmp_path / "file", "x")
    assert _command(f"/save {blocker}/sub/chat.json", state, console, "m.pt") is True
    assert _command(f"/save {tmp_path}", state, console, "m.pt") is True  # a folder: inside
    out = console.export_text()
    assert "is a file, not a folder" in out and "conversation is kept" in out
    saved = list(tmp_path.glob("chat_*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["turns"][0]["user"] == "hi"
    assert state.history == [Turn("hi", "hello")]


def test_7_non_utf8_bytes_on_stdin_do_not_end_the_chat(assets, tmp_path, monkeypatch, capsys):
    """In-process, on a strict UTF-8 stdin like a process's own (tests/test_chat.py drives the
    script in a terminal)."""
    from aethermind.cli import run_module

    final = _final_model(assets, tmp_path)
    monkeypatch.chdir(tmp_path)
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 \xff\xfe\n/save\n/quit\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    rc = run_module("aethermind.inference.chat", ["--model", str(final), "--device", "cpu",
                                                  "--max-tokens", "2"], label="scripts/chat.py")
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err, err
    assert "saved 1 turn(s)" in out and "bye" in out


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_7_disk_full_or_read_only_during_a_checkpoint_keeps_the_previous_one(
        assets, tmp_path, monkeypatch, capsys, code):
    cfg = make_cfg(assets, tmp_path, max_steps=4, checkpoint_every=2)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"partial")
            raise OSError(code, os.strerror(code))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    assert train.main(["--config", str(_yaml(cfg, tmp_path))]) == 1
    err = capsys.readouterr().err
    assert "cannot write the step 4 checkpoint" in err and os.strerror(code) in err
    assert "step_0000002.pt is intact" in err and "Traceback" not in err
    assert ckpt.latest_valid(tmp_path / "checkpoints")[1]["step"] == 2
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp" in p.name]
    assert not (tmp_path / LOCK_NAME).exists()


def test_7_ctrl_c_during_set_up_is_a_clean_stop(assets, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "build_shards", interrupted)
    cfg = make_cfg(assets, tmp_path)
    assert train.main(["--config", str(_yaml(cfg, tmp_path))]) == 130
    err = capsys.readouterr().err
    assert "stopped at once" in err and "Traceback" not in err
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("delay", [0.5, 2.0])
def test_7_ctrl_c_while_the_script_loads_is_one_line(assets, tmp_path, delay):
    """A user's Ctrl-C lands while torch imports or data packs: one line, exit 130."""
    import time

    cfg = make_cfg(assets, tmp_path / "run", max_steps=100_000)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(_yaml(cfg, tmp_path))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (130, 128 + signal.SIGINT), err
    assert "Traceback" not in err and err.strip(), err


def test_7_list_valued_sender_is_a_malformed_record():
    with pytest.raises(schemas.Malformed, match="from is list"):
        schemas.to_conversation({"conversations": [{"from": ["human"], "value": "hi"}]})


# --- 8. wrong results accepted --------------------------------------------------------------
@pytest.mark.parametrize("item", ["learning_rate=inf", "learning_rate=nan", "beta2=-inf",
                                  "max_grad_norm=inf", "weight_decay=inf"])
def test_8_non_finite_numbers_are_rejected(item):
    with pytest.raises(ConfigError, match="finite|expected"):
        load_config(None, [item], variant="tiny")


def test_8_yaml_inf_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: .inf\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a finite number"):
        load_config(path)


def test_8_missing_tokenizer_beside_a_model_is_said_or_refused(assets, tmp_path):
    import shutil

    from aethermind.artifacts.loading import LoadError, load_model

    final = _final_model(assets, tmp_path)
    shutil.rmtree(final.parent / "tokenizer")
    with pytest.warns(UserWarning, match="no tokenizer/ beside .*bundled default"), \
            pytest.raises(LoadError):  # the bundled vocab does not fit this tiny model
        load_model(final)
    # a training checkpoint carries the fingerprint: another tokenizer is refused by name
    run = tmp_path / "run"
    train.train(make_cfg(assets, run, max_steps=1, checkpoint_every=1))
    step = run / "checkpoints" / "step_0000001.pt"
    other = Forge1Tokenizer.train(["completely other text " * 4] * 30, vocab_size=400)
    with pytest.raises(LoadError, match="was trained with tokenizer"):
        load_model(step, tokenizer=other)


# --- 9. leftovers and caches ----------------------------------------------------------------
def test_9_stale_temp_checkpoints_are_removed_at_start(assets, tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / f".step_0000004.pt.tmp{dead}"
    stale.write_bytes(b"x" * 1000)
    live = folder / f".step_0000004.pt.tmp{os.getpid()}"  # a live writer's file stays
    live.write_bytes(b"y")
    train.train(make_cfg(assets, tmp_path, max_steps=1), resume=True)
    assert not stale.exists() and live.exists()


def test_9_half_built_shards_of_a_dead_packer_are_removed(tmp_path, tiny_tokenizer):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    data = write_lines(tmp_path / "d.jsonl", [chat_line(1)])
    cache = tmp_path / "cache"
    stale = stage_path(cache / "d-packed-T64", pid=dead)
    stale.mkdir(parents=True)
    (stale / "tokens.bin").write_bytes(b"x" * 1000)
    ensure_shards(data, tiny_tokenizer, cache, context_length=64)
    assert not stale.exists()


def test_9_pack_cache_follows_content_not_size_and_mtime(tmp_path, tiny_tokenizer):
    data = write_lines(tmp_path / "d.jsonl", [chat_line(1, "What is aaaa?")])
    out = ensure_shards(data, tiny_tokenizer, tmp_path / "cache", context_length=64)
    first = (out / "tokens.bin").read_bytes()
    st = data.stat()
    write_lines(data, [chat_line(1, "What is bbbb?")])  # same size
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    out = ensure_shards(data, tiny_tokenizer, tmp_path / "cache", context_length=64)
    assert (out / "tokens.bin").read_bytes() != first


# --- 10. small data trains ------------------------------------------------------------------
def test_10_fourteen_conversations_train_with_batch_8_and_empty_val_warns(assets, tmp_path,
                                                                           capsys):
    data = write_lines(tmp_path / "train.jsonl", [chat_line(i) for i in range(14)])
    empty_val = write_lines(tmp_path / "val.jsonl", "")
    cfg = make_cfg(assets, tmp_path / "run", train_data=str(data), val_data=str(empty_val),
                   batch_size=8, context_length=256, max_steps=3, eval_every=1)
    assert train.main(["--config", str(_yaml(cfg, tmp_path))]) == 0
    err = capsys.readouterr().err
    assert "fewer than a batch of 8" in err
    assert "no usable samples; training continues without validation" in err
    assert (tmp_path / "run" / "final_model" / "forge1_tiny_final.pt").is_file()


def test_13_5_small_validation_counts_every_sample_and_matches_evaluate(assets, tmp_path):
    """A 3-document validation file with batch 4 crashed at the first evaluation; now every
    sample counts, and `evaluate` reports the same loss for the same file and layout."""
    from aethermind.artifacts.loading import load_model
    from aethermind.evaluation.evaluate import validation_loss

    cfg = make_cfg(assets, tmp_path, val_data=assets.val, layout="padded", context_length=512,
                   max_steps=2, eval_every=1, eval_batches=100)
    result = train.train(cfg)
    assert result["val_loss"] is not None
    model, tok = load_model(result["final_model"])
    report = validation_loss(model, tok, Path(assets.val))
    assert report["documents"] == 3
    assert abs(report["loss"] - result["val_loss"]) < 1e-4


def test_13_5_evaluate_scores_plain_text_like_pack(tmp_path, tiny_tokenizer, tiny_config):
    """A plain-text line holding '<|eos|>' is one document with loss on every token, exactly
    as pack encodes it (evaluate's own encoder turned the string into a special id)."""
    from aethermind.evaluation.evaluate import validation_loss
    from aethermind.model.transformer import Forge1Model

    val = write_lines(tmp_path / "v.jsonl", [json.dumps({"text": "hello <|eos|> world"}) + "\n"])
    report = validation_loss(Forge1Model(tiny_config).eval(), tiny_tokenizer, val)
    ids, mask, _ = _encode_text("hello <|eos|> world", tiny_tokenizer)
    assert report["tokens"] == sum(mask[1:]) == len(ids) - 1


# --- 11. the guide and blocked pickles ------------------------------------------------------
def test_11_blocked_pickle_names_what_was_blocked(tmp_path):
    from aethermind.artifacts.loading import LoadError, load_model

    evil = tmp_path / "forge1_tiny_final.pt"
    torch.save({"tok_emb.weight": torch.zeros(2), "x": SimpleNamespace(a=1)}, evil)
    with pytest.raises(LoadError) as err:
        load_model(evil)
    assert "types.SimpleNamespace" in str(err.value) and "weights_only=False" not in \
        str(err.value)


def test_11_14_guide_loads_weights_only_and_shows_the_true_figures():
    text = GUIDE.read_text(encoding="utf-8")
    loads = [line for line in text.splitlines() if "torch.load(" in line]
    assert loads and all("weights_only=True" in line for line in loads)
    assert "configs/cpu_config.yaml" in text
    for figure in ("2.8 M", "88.1 M", "287.4 M"):  # README's exact counts
        assert figure in text
    assert "~125M" not in text and "~350M" not in text


# --- 12. fail early, show progress ----------------------------------------------------------
def test_12_evaluate_checks_the_validation_file_before_generating(assets, tmp_path,
                                                                  monkeypatch, capsys):
    from aethermind.evaluation import evaluate

    def no_generation(*args, **kwargs):
        raise AssertionError("generation started before the inputs were checked")

    monkeypatch.setattr(evaluate, "run_prompts", no_generation)
    final = _final_model(assets, tmp_path)
    bad = write_lines(tmp_path / "val.jsonl", [chat_line(1)], "utf-16")
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--model", str(final), "--val", str(bad)])
    assert exit_.value.code == 2 and "UTF-16" in capsys.readouterr().err


def test_12_implicit_empty_val_file_is_a_warning_not_an_error(assets, tmp_path, monkeypatch,
                                                              capsys):
    from aethermind.evaluation import evaluate

    final = _final_model(assets, tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "val.jsonl").write_text("")  # e.g. synth --n-val 0
    assert evaluate.main(["--model", str(final), "--n-test", "0", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "no usable documents" in err and "validation loss skipped" in err


def test_12_second_ctrl_c_stops_at_once(capfd):
    with signals.StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
        assert "finishing this step" in capfd.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


class _BusyStream:
    """sys.stderr while the main thread is inside it (Rich's live view mid-render, a buffered
    write): any write from a signal handler re-enters it and fails."""

    def write(self, text: str) -> int:
        raise RuntimeError("reentrant call inside the stream")

    def flush(self) -> None:
        raise RuntimeError("reentrant call inside the stream")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_12_a_signal_mid_write_only_sets_the_flag(signame, capfd, monkeypatch):
    """The handler runs between any two bytecodes; printing through sys.stderr from it
    crashed a run whose Rich view was rendering (exit 1 instead of 128 + signal)."""
    if not hasattr(signal, signame):
        pytest.skip(f"no {signame} here")
    signum = getattr(signal, signame)
    with signals.StopFlag() as stop:
        monkeypatch.setattr(sys, "stderr", _BusyStream())
        monkeypatch.setattr(sys, "stdout", _BusyStream())
        os.kill(os.getpid(), signum)
        monkeypatch.undo()
        assert stop.signum == signum
    assert f"{'Ctrl-C' if signame == 'SIGINT' else signame}: finishing this step" in (
        capfd.readouterr().err)


# --- 13. colab_setup outside Colab ----------------------------------------------------------
def test_13_colab_setup_outside_colab_explains_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "colab_setup.py")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not running in Google Colab" in proc.stdout and "pip install" in proc.stdout
    assert "installing:" not in proc.stdout  # it changed nothing


# --- 14. /save lands in the output folder ---------------------------------------------------
def test_14_chat_save_defaults_to_the_output_folder(tmp_path, monkeypatch):
    from rich.console import Console

    from aethermind.inference.chat import ChatState, _command

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "run" / "final_model" / "forge1_tiny_final.pt"
    console = Console(record=True, width=300)
    _command("/save", ChatState(False, "s", [Turn("a", "b")]), console, str(model))
    saved = list((tmp_path / "run" / "chats").glob("chat_*.json"))
    assert len(saved) == 1 and str(saved[0]) in console.export_text()
    assert not list(tmp_path.glob("chat_*.json"))  # not the current folder
