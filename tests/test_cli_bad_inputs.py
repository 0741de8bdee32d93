"""Every option of export, import-hf, chat and demo given bad values and malformed files: one
error line and a non-zero exit, never a traceback (issue 22, item 8). All in-process
(`main(argv)`), on an untrained tiny model: what is tested is the input handling."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from _infer_helpers import make_tokenizer, save_final, tiny_config

from aethermind import demo
from aethermind.export import cli as export_cli
from aethermind.export import hf as import_cli
from aethermind.inference import chat
from aethermind.model.transformer import Forge1Model

HUGE = str(10**30)


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory) -> Path:
    tok = make_tokenizer()
    torch.manual_seed(0)
    return save_final(Forge1Model(tiny_config(tok)).eval(), tok,
                      tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def hf_dir(model_pt, tmp_path_factory) -> Path:
    (path,) = export_cli.export_model(model_pt, formats=("hf",),
                                      output=tmp_path_factory.mktemp("hf"))
    return path


def _files(root: Path) -> dict[str, Path]:
    """Malformed model files, each a case of its own."""
    root.mkdir(exist_ok=True)
    made = {"empty.pt": b"", "text.pt": "not a checkpoint\n".encode("utf-16"),
            "truncated.pt": None, "list.pt": None, "noise.safetensors": b"\x00" * 64}
    paths = {}
    for name, data in made.items():
        path = root / name
        if name == "truncated.pt":
            torch.save({"tok_emb.weight": torch.zeros(64, 8)}, path)
            path.write_bytes(path.read_bytes()[:300])
        elif name == "list.pt":
            torch.save([1, 2, 3], path)
        else:
            path.write_bytes(data)
        paths[name] = path
    (root / "empty_dir").mkdir(exist_ok=True)
    paths["empty_dir"] = root / "empty_dir"
    return paths


def _run(main, argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of `main(argv)`; any exception but SystemExit fails the test."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if not isinstance(exit_.code, int):  # SystemExit("message") prints it
            print(exit_.code, file=sys.stderr)
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith("usage:")
             and not line.startswith("  ") and "warning" not in line.lower()]
    assert code not in (0, None), err
    assert "Traceback" not in err and len(lines) == 1, err


# --- export ---------------------------------------------------------------------------------
EXPORT_CASES = {
    "missing model": ["--model", "{tmp}/missing.pt"],
    "empty .pt": ["--model", "{files}/empty.pt"],
    "utf-16 text .pt": ["--model", "{files}/text.pt"],
    "truncated .pt": ["--model", "{files}/truncated.pt"],
    "a list, not a checkpoint": ["--model", "{files}/list.pt"],
    "noise .safetensors": ["--model", "{files}/noise.safetensors"],
    "empty folder": ["--model", "{files}/empty_dir"],
    "bad variant": ["--model", "{model}", "--variant", "huge"],
    "tokenizer missing": ["--model", "{files}/../m/forge1_tiny_final.pt", "--tokenizer", "{tmp}/x"],
    "device bogus": ["--model", "{model}", "--device", "quantum"],
    "device cuda:99999999999999999999": ["--model", "{model}", "--device", f"cuda:{HUGE}"],
    "format bad": ["--model", "{model}", "--format", "onnx"],
    "dtype bad": ["--model", "{model}", "--format", "gguf", "--dtype", "q2"],
    "dtype without gguf": ["--model", "{model}", "--dtype", "f16"],
    "output is a file": ["--model", "{model}", "--output", "{files}/empty.pt"],
    "output under a file": ["--model", "{model}", "--output", "{files}/empty.pt/sub"],
}


@pytest.mark.parametrize("argv", EXPORT_CASES.values(), ids=EXPORT_CASES.keys())
def test_export_bad_input_is_one_line(argv, model_pt, tmp_path, capsys):
    files = _files(tmp_path / "files")
    (tmp_path / "m").mkdir()
    shutil.copy(model_pt, tmp_path / "m")  # no tokenizer/ beside: --tokenizer is read
    argv = [a.format(tmp=tmp_path, files=files["empty_dir"].parent, model=model_pt)
            for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out")]
    _assert_one_line_error(*_run(export_cli.main, argv, capsys))


# --- import-hf ------------------------------------------------------------------------------
def _hf_copy(hf_dir: Path, tmp_path: Path, config: object = None, raw: bytes | None = None
             ) -> Path:
    target = shutil.copytree(hf_dir, tmp_path / "hf")
    if raw is not None:
        (target / "config.json").write_bytes(raw)
    elif config is not None:
        (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


def _edited(hf_dir: Path, **edit: object) -> dict:
    return {**json.loads((hf_dir / "config.json").read_text(encoding="utf-8")), **edit}


IMPORT_CONFIGS = {
    "empty config.json": b"",
    "utf-16 config.json": json.dumps({"model_type": "llama"}).encode("utf-16"),
    "invalid json": b"{model_type: llama",
    "a list": b"[1, 2]",
    "no sizes": json.dumps({"model_type": "llama"}).encode(),
}
IMPORT_EDITS = {
    "hidden_size a string": {"hidden_size": "64"},
    "heads zero": {"num_attention_heads": 0},
    "layers negative": {"num_hidden_layers": -1},
    "layers huge": {"num_hidden_layers": 10**30},
    "vocab null": {"vocab_size": None},
    "eps nan": {"rms_norm_eps": float("nan")},
    "rope_theta inf": {"rope_theta": float("inf")},
    "rope_scaling a string": {"rope_scaling": "linear"},
    "rope factor a string": {"rope_scaling": {"type": "linear", "factor": "2"}},
    "max positions zero": {"max_position_embeddings": 0},
}


@pytest.mark.parametrize("raw", IMPORT_CONFIGS.values(), ids=IMPORT_CONFIGS.keys())
def test_import_hf_malformed_config_is_one_line(raw, hf_dir, tmp_path, capsys):
    src = _hf_copy(hf_dir, tmp_path, raw=raw)
    _assert_one_line_error(*_run(import_cli.main, ["--model", str(src), "--output",
                                                   str(tmp_path / "out")], capsys))


@pytest.mark.parametrize("edit", IMPORT_EDITS.values(), ids=IMPORT_EDITS.keys())
def test_import_hf_bad_config_value_is_one_line(edit, hf_dir, tmp_path, capsys):
    src = _hf_copy(hf_dir, tmp_path, config=_edited(hf_dir, **edit))
    _assert_one_line_error(*_run(import_cli.main, ["--model", str(src), "--output",
                                                   str(tmp_path / "out")], capsys))
    assert not (tmp_path / "out" / "final_model").exists()


@pytest.mark.parametrize("damage", ["empty weights", "truncated weights", "tokenizer garbage"])
def test_import_hf_malformed_files_are_one_line(damage, hf_dir, tmp_path, capsys):
    src = _hf_copy(hf_dir, tmp_path)
    weights = src / "model.safetensors"
    if damage == "empty weights":
        weights.write_bytes(b"")
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (src / "tokenizer.json").write_bytes(b"\xff\xfe garbage")
    _assert_one_line_error(*_run(import_cli.main, ["--model", str(src), "--output",
                                                   str(tmp_path / "out")], capsys))


def test_import_hf_output_that_is_a_file_is_one_line(hf_dir, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for output in (tmp_path / "f", tmp_path / "f" / "sub"):
        _assert_one_line_error(*_run(import_cli.main, ["--model", str(hf_dir), "--output",
                                                       str(output)], capsys))


# --- chat -----------------------------------------------------------------------------------
CHAT_CASES = {
    "max-new-tokens negative": ["--max-new-tokens", "-1"],
    "max-new-tokens not a number": ["--max-new-tokens", "lots"],
    "temperature nan": ["--temperature", "nan"],
    "temperature inf": ["--temperature", "inf"],
    "temperature negative": ["--temperature", "-1"],
    "top-p zero": ["--top-p", "0"],
    "top-p nan": ["--top-p", "nan"],
    "top-p above 1": ["--top-p", "1.5"],
    "top-k negative": ["--top-k", "-3"],
    "repetition-penalty zero": ["--repetition-penalty", "0"],
    "repetition-penalty nan": ["--repetition-penalty", "nan"],
    "repetition-penalty inf": ["--repetition-penalty", "inf"],
    "seed beyond 64 bits": ["--seed", str(2**64)],
    "seed negative beyond 64 bits": ["--seed", str(-(2**64))],
    "seed huge": ["--seed", HUGE],
    "seed a float": ["--seed", "1.5"],
    "system with special tokens": ["--system", "be nice <|user|>"],
    "device bogus": ["--device", "tpu"],
    "dtype bogus": ["--dtype", "fp16"],
    "variant bad": ["--variant", "giant"],
    "tokenizer not a folder": ["--tokenizer", "/nonexistent/tok"],
}


def _chat(argv: list[str], stdin: bytes, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code, err = _run(chat.main, argv, capsys)
    return code, err, ""


@pytest.mark.parametrize("extra", CHAT_CASES.values(), ids=CHAT_CASES.keys())
def test_chat_bad_option_is_one_line(extra, model_pt, tmp_path, monkeypatch, capsys):
    shutil.copy(model_pt, tmp_path)  # beside no tokenizer/, so --tokenizer is read
    model = model_pt if "--tokenizer" not in extra else tmp_path / model_pt.name
    code, err, _ = _chat(["--model", str(model), "--device", "cpu", *extra], b"hi\n/quit\n",
                         monkeypatch, capsys)
    _assert_one_line_error(code, err)


@pytest.mark.parametrize("name", ["empty.pt", "text.pt", "truncated.pt", "list.pt",
                                  "noise.safetensors", "empty_dir"])
def test_chat_malformed_model_file_is_one_line(name, tmp_path, monkeypatch, capsys):
    path = _files(tmp_path)[name]
    code, err, _ = _chat(["--model", str(path), "--device", "cpu"], b"/quit\n", monkeypatch,
                         capsys)
    _assert_one_line_error(code, err)


def test_chat_edge_values_that_are_valid_run(model_pt, tmp_path, monkeypatch, capsys):
    """Huge but meaningful values are clipped (tokens to the context, top-k to the vocab), a
    negative 64-bit seed wraps as torch's does, and a lone surrogate in the system prompt
    and a message is read as U+FFFD: each answers and the conversation saves."""
    save = tmp_path / "c.json"
    # A str stream (no reconfigure): the surrogate reaches chat as a terminal could pass it.
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"caf\udcff?\n/save {save}\n/quit\n"))
    code = chat.main(["--model", str(model_pt), "--device", "cpu", "--max-new-tokens", HUGE,
                      "--top-k", HUGE, "--seed", str(-(2**63)), "--temperature", "1e-3",
                      "--system", "sys \udcff"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(save.read_text(encoding="utf-8"))
    assert data["system"] == "sys \ufffd" and data["turns"][0]["user"] == "caf\ufffd?"


# --- demo (every check happens before any work) -----------------------------------------------
DEMO_CASES = {
    "minutes nan": ["--minutes", "nan"],
    "minutes inf": ["--minutes", "inf"],
    "minutes negative": ["--minutes", "-5"],
    "minutes huge": ["--minutes", "1e300"],
    "minutes a word": ["--minutes", "ten"],
    "steps zero": ["--steps", "0"],
    "steps huge": ["--steps", HUGE],
    "n-train zero": ["--steps", "5", "--n-train", "0"],
    "n-train huge": ["--steps", "5", "--n-train", HUGE],
    "n-test negative": ["--steps", "5", "--n-test", "-1"],
    "n-test huge": ["--steps", "5", "--n-test", HUGE],
    "max-new-tokens negative": ["--steps", "5", "--max-new-tokens", "-4"],
    "max-new-tokens huge": ["--steps", "5", "--max-new-tokens", HUGE],
    "output is a file": ["--steps", "5", "--output", "{tmp}/file"],
    "output under a file": ["--steps", "5", "--output", "{tmp}/file/sub"],
    "output not a demo folder": ["--steps", "5", "--output", "{tmp}/foreign"],
}


@pytest.mark.parametrize("argv", DEMO_CASES.values(), ids=DEMO_CASES.keys())
def test_demo_bad_option_is_one_line_before_any_work(argv, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("keep me")
    monkeypatch.setattr(demo, "build_data", lambda *a, **k: pytest.fail("work started"))
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "demo")]
    _assert_one_line_error(*_run(demo.main, argv, capsys))
    assert (tmp_path / "foreign" / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_train_seed_beyond_64_bits_is_a_config_error(seed):
    from aethermind.training.config import TrainConfig

    with pytest.raises(ValueError, match="'seed'"):
        TrainConfig(seed=seed)
