"""Exports and imports that never lose or silently corrupt a model (issue 22, items 6-8):
import-hf never replaces a model without --overwrite, a killed writer's temp files are cleaned
by the next export or import, a damaged checkpoint is refused before export, two models never
share one tokenizer/, legacy rope_scaling is read exactly or refused, a full disk is one line
naming it, and a resumed run uses the optimizer settings its config shows."""

from __future__ import annotations

import collections
import errno
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from _infer_helpers import make_tokenizer, save_final, tiny_config
from rich.console import Console

from aethermind.artifacts import checkpoint as ckpt
from aethermind.artifacts.loading import LoadError, load_model
from aethermind.export import cli as export_cli
from aethermind.export import hf as import_cli
from aethermind.inference import chat
from aethermind.model.hf_convert import from_hf_config_dict, to_hf_config_dict
from aethermind.model.transformer import Forge1Model
from aethermind.runtime import files
from aethermind.text.chat_format import Turn
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.optim import build_optimizer
from aethermind.training.state import load_model_state


def _tiny(seed: int = 0) -> Forge1Model:
    torch.manual_seed(seed)
    return Forge1Model(tiny_config(make_tokenizer())).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety")
    save_final(_tiny(), make_tokenizer(), out)
    return out


@pytest.fixture(scope="module")
def hf_dir(run_dir, tmp_path_factory) -> Path:
    (path,) = export_cli.export_model(run_dir, formats=("hf",),
                                      output=tmp_path_factory.mktemp("hf"))
    return path


def _one_line_exit(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- item 6: nothing a user made is lost -----------------------------------------------------
def test_import_hf_refuses_to_replace_a_model_without_overwrite(hf_dir, tmp_path, capsys):
    trained = tmp_path / "final_model" / "forge1_tiny_final.pt"
    trained.parent.mkdir()
    trained.write_bytes(b"a trained model")
    err = _one_line_exit(import_cli.main, ["--model", str(hf_dir), "--output", str(tmp_path)],
                         capsys)
    assert "--overwrite" in err and trained.read_bytes() == b"a trained model"
    assert import_cli.main(["--model", str(hf_dir), "--output", str(tmp_path),
                            "--overwrite"]) == 0
    assert not trained.exists() and load_model(tmp_path)[0].config.dim == 64


def test_chat_save_never_replaces_a_file_and_names_a_free_one(run_dir, tmp_path):
    model = next((run_dir / "final_model").glob("*.pt"))
    before = model.read_bytes()
    state = chat.ChatState(False, "s", [Turn("hi", "hello")])
    buf = io.StringIO()
    console = Console(file=buf, width=200)
    taken = tmp_path / "chat.json"
    taken.write_text("an earlier chat")
    for target in (model, taken):
        assert chat._command(f"/save {target}", state, console, str(model)) is True
    assert model.read_bytes() == before and taken.read_text() == "an earlier chat"
    out = buf.getvalue()
    assert out.count("never replaces a file") == 2 and f"try /save {tmp_path}/chat-2.json" in out
    chat._command(f"/save {tmp_path / 'chat-2.json'}", state, console, str(model))
    assert json.loads((tmp_path / "chat-2.json").read_text())["turns"][0]["user"] == "hi"


def test_export_and_import_clean_a_killed_writers_temp_files(run_dir, hf_dir, tmp_path):
    pid = _dead_pid()
    for out in (tmp_path / "exports", tmp_path / "imported"):
        out.mkdir()
        (out / f".forge1_nano.safetensors.tmp{pid}").write_bytes(b"\0" * 1000)
        (out / f".forge1_nano_hf.tmp{pid}").mkdir()
        (out / f".forge1_nano_hf.tmp{pid}" / "model.safetensors").write_bytes(b"\0" * 1000)
    export_cli.export_model(run_dir, formats=("pytorch",), output=tmp_path / "exports")
    import_cli.import_hf(hf_dir, tmp_path / "imported")
    for out in (tmp_path / "exports", tmp_path / "imported"):
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_refused_export_still_clears_a_killed_writers_temp_files(run_dir, tmp_path):
    out = tmp_path / "exports"
    export_cli.export_model(run_dir, formats=("pytorch",), output=out)
    litter = out / f".forge1_custom_hf.tmp{_dead_pid()}"
    litter.mkdir()
    (litter / "model.safetensors").write_bytes(b"\0" * 1000)
    with pytest.raises(export_cli.ExportError, match="pass --overwrite"):
        export_cli.export_model(run_dir, formats=("pytorch",), output=out)
    assert not litter.exists()


def test_a_live_writers_temp_files_are_left_alone(run_dir, tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    live = out / f".forge1_nano.safetensors.tmp{files.os.getpid()}"
    live.write_bytes(b"being written")
    export_cli.export_model(run_dir, formats=("pytorch",), output=out)
    assert live.read_bytes() == b"being written"


# --- item 7: nothing silently wrong ----------------------------------------------------------
def _flip_a_weight_byte(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_export_refuses_a_checkpoint_with_a_flipped_byte(run_dir, tmp_path, capsys):
    bad = shutil.copytree(run_dir / "final_model", tmp_path / "final_model")
    pt = next(bad.glob("*.pt"))
    _flip_a_weight_byte(pt)
    load_model(pt)  # torch itself loads it: the damage would be exported silently
    err = _one_line_exit(export_cli.main, ["--model", str(pt), "--output",
                                           str(tmp_path / "out")], capsys)
    assert "CRC32" in err and not (tmp_path / "out" / "forge1_tiny.pt").exists()


def test_export_refuses_non_finite_weights(run_dir, tmp_path, capsys):
    bad = shutil.copytree(run_dir / "final_model", tmp_path / "final_model")
    pt = next(bad.glob("*.pt"))
    sd = torch.load(pt, weights_only=True)
    sd["layers.1.mlp.w_down.weight"][3, 5] = float("nan")
    torch.save(sd, pt)
    err = _one_line_exit(export_cli.main, ["--model", str(pt), "--output",
                                           str(tmp_path / "out")], capsys)
    assert "layers.1.mlp.w_down.weight" in err and "NaN" in err


def _other_tokenizer_run(tmp_path: Path) -> Path:
    tok = Forge1Tokenizer.train(["an entirely different corpus of words " * 20,
                                 "with other merges and other ids"] * 10, vocab_size=340)
    torch.manual_seed(1)
    model = Forge1Model(tiny_config(tok))
    save_final(model, tok, tmp_path / "other")
    return tmp_path / "other"


def test_a_second_model_with_another_tokenizer_cannot_take_over_tokenizer_dir(run_dir,
                                                                               tmp_path, capsys):
    out = tmp_path / "exports"
    export_cli.export_model(run_dir, formats=("safetensors",), output=out)
    before = (out / "tokenizer" / "tokenizer.json").read_bytes()
    other = _other_tokenizer_run(tmp_path)
    err = _one_line_exit(export_cli.main, ["--model", str(other), "--format", "pytorch",
                                           "--output", str(out)], capsys)
    assert "another --output" in err and "forge1_custom.safetensors" in err
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == before
    load_model(out / "forge1_custom.safetensors")  # the first still loads, with its tokenizer
    # Replacing every export the old tokenizer served is fine: nothing is left mismatched.
    export_cli.export_model(other, output=out, overwrite=True)
    load_model(out / "forge1_custom.pt")


def test_loader_refuses_a_tokenizer_dir_that_is_not_the_weights_one(run_dir, tmp_path):
    out = tmp_path / "exports"
    export_cli.export_model(run_dir, output=out)
    other = _other_tokenizer_run(tmp_path)
    Forge1Tokenizer(other / "final_model" / "tokenizer").save(out / "tokenizer")
    for name in ("forge1_custom.safetensors", "forge1_custom.pt"):
        with pytest.raises(LoadError, match="belongs to another model"):
            load_model(out / name)


def test_reexporting_replaces_files_only_with_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "exports"
    first = export_cli.export_model(run_dir, formats=("pytorch", "safetensors", "ollama"),
                                    output=out)
    mine = out / "forge1_custom.pt"
    mine.write_bytes(b"the user's own file")
    err = _one_line_exit(export_cli.main, ["--model", str(run_dir), "--format", "all",
                                           "--output", str(out)], capsys)
    assert "--overwrite" in err and "forge1_custom.pt" in err and "forge1_custom.Modelfile" in err
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(out.iterdir()) == sorted(first)  # nothing new written
    assert export_cli.export_model(run_dir, formats=("pytorch", "safetensors", "ollama"),
                                   output=out, overwrite=True) == first
    load_model(mine)


def _hf(**rope: object) -> dict:
    cfg = to_hf_config_dict(tiny_config(make_tokenizer()))
    cfg.pop("rope_parameters")
    return {**cfg, "rope_scaling": rope or None}


@pytest.mark.parametrize("rope", [{"type": "linear", "factor": 1.0},
                                  {"rope_type": "yarn", "factor": 1.0},
                                  {"rope_type": "llama3", "factor": 1.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 64}],
                         ids=["linear", "yarn", "llama3"])
def test_rope_scaling_that_is_the_identity_imports_as_plain_rope(rope):
    assert from_hf_config_dict(_hf(**rope)).max_seq_len == 128


def test_dynamic_rope_scaling_imports_capped_at_the_context_where_it_is_plain_rope():
    assert from_hf_config_dict(_hf(type="dynamic", factor=4.0)).max_seq_len == 128
    cfg = from_hf_config_dict(_hf(type="dynamic", factor=4.0,
                                  original_max_position_embeddings=64))
    assert cfg.max_seq_len == 64


@pytest.mark.parametrize("rope", [{"type": "linear", "factor": 2.0},
                                  {"rope_type": "yarn", "factor": 4.0},
                                  {"rope_type": "yarn", "factor": 1.0, "attention_factor": 1.2},
                                  {"rope_type": "llama3", "factor": 8.0},
                                  {"rope_type": "longrope", "factor": 1.0},
                                  {"type": "linear", "factor": 0.5}],
                         ids=["linear", "yarn", "yarn-attention", "llama3", "unknown", "shrink"])
def test_rope_scaling_forge1_cannot_represent_is_refused(rope, hf_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="rope_scaling"):
        from_hf_config_dict(_hf(**rope))
    src = shutil.copytree(hf_dir, tmp_path / "hf")
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    (src / "config.json").write_text(json.dumps({**cfg, "rope_scaling": rope}))
    err = _one_line_exit(import_cli.main, ["--model", str(src), "--output",
                                           str(tmp_path / "out")], capsys)
    assert "rope_scaling" in err and not (tmp_path / "out").exists()


def test_resume_uses_the_configs_weight_decay_and_betas_not_the_checkpoints():
    model = _tiny()
    old = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), fused=False)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    old.step()
    state = {"model": model.state_dict(), "optimizer": old.state_dict()}
    new = build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.8, 0.99), fused=False)
    load_model_state(model, new, state, fsdp=False)
    assert [g["weight_decay"] for g in new.param_groups] == [0.0, 0.0]
    assert {g["betas"] for g in new.param_groups} == {(0.8, 0.99)}
    moments = [s["exp_avg"] for s in new.state.values()]  # the moments did come back
    assert moments and all(torch.equal(a, old.state[p]["exp_avg"])
                           for p, a in zip(old.state, moments, strict=True))


# --- item 8: a full disk is one line that names it -------------------------------------------
Usage = collections.namedtuple("Usage", "total used free")


@pytest.fixture
def full_disk(monkeypatch):
    """The disk reports 12 KB free, as it would after a write failed for lack of space."""
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 12_000))


def test_checkpoint_save_on_a_full_disk_keeps_the_last_one(tmp_path, full_disk, monkeypatch):
    state = {"step": 1, "model": {"w": torch.ones(3)}, "optimizer": {}, "config": {},
             "tokenizer_fingerprint": "x"}
    first = ckpt.save_checkpoint(state, tmp_path, 1)

    def torch_save_on_full_disk(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")
    monkeypatch.setattr(torch, "save", torch_save_on_full_disk)
    with pytest.raises(OSError) as exc:
        ckpt.save_checkpoint({**state, "step": 2}, tmp_path, 2)
    assert exc.value.errno == errno.ENOSPC and "no space left on the disk" in str(exc.value)
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp file, old kept
    assert ckpt.load_checkpoint(first)["step"] == 1


@pytest.mark.parametrize("fmt", ["safetensors", "hf", "pytorch"])
def test_export_on_a_full_disk_is_one_line_and_keeps_the_old_export(fmt, run_dir, tmp_path,
                                                                    capsys, monkeypatch):
    out = tmp_path / "out"
    old = export_cli.export_model(run_dir, formats=(fmt,), output=out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def save_file(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, "
                                          "kind: StorageFull, message: \"No space left\" })")

    def torch_save(obj, f):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 12_000))
    err = _one_line_exit(export_cli.main, ["--model", str(run_dir), "--format", fmt,
                                           "--output", str(out), "--overwrite"], capsys)
    assert "no space left on the disk mounted at" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before and old
