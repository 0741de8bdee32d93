"""`aethermind export` / scripts/export.py: .pt, safetensors, GGUF layout, atomic writes, errors."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _export_helpers import trained_model
from tokenizers import Tokenizer

from aethermind.artifacts.exported import ExportError, read_safetensors
from aethermind.artifacts.loading import load_model
from aethermind.export.cli import FORMAT_SETS, export_model, main, output_paths
from aethermind.model.config import Forge1Config
from aethermind.model.hf_convert import to_hf
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_dir(export_run_dir: Path) -> Path:
    """conftest's shared training folder: read-only, every test exports into its tmp_path."""
    return export_run_dir


@pytest.fixture
def untied_dir(export_untied_dir: Path) -> Path:
    return export_untied_dir


def _guide_commands() -> list[str]:
    text = (REPO / "docs" / "guide.md").read_text(encoding="utf-8")
    section = text[text.index("## 7. Exporting"):text.index("## 8.")]
    return re.findall(r"^python scripts/export\.py .*$", section, re.MULTILINE)


def _run_guide(root: Path, command: str) -> subprocess.CompletedProcess:
    args = shlex.split(command, comments=True)[1:]
    args[0] = str(REPO / args[0])
    return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False)


def _guide_root(root: Path, variant: str) -> None:
    """A scratch repo root whose outputs/final_model holds a `variant` model (no config.json,
    so the variant comes from the weights, as for a bare state dict)."""
    tok = Forge1Tokenizer()
    model = Forge1Model(Forge1Config.from_variant(variant, vocab_size=tok.get_vocab_size_padded()))
    final = root / "outputs" / "final_model"
    final.mkdir(parents=True)
    torch.save(model.state_dict(), final / f"forge1_{variant}_final.pt")


def test_guide_section_7_commands_with_the_tiny_variant(tmp_path):
    """Every export command of the guide as written, with nano -> tiny (verbatim nano: slow)."""
    commands = _guide_commands()
    assert len(commands) >= 3 and "--format" not in commands[0]
    _guide_root(tmp_path, "tiny")
    exports = tmp_path / "outputs" / "exports"
    for command in commands:
        shutil.rmtree(exports, ignore_errors=True)
        done = _run_guide(tmp_path, command.replace("nano", "tiny"))
        assert done.returncode == 0, (command, done.stderr[-2000:])
        args = shlex.split(command, comments=True)
        fmt = args[args.index("--format") + 1] if "--format" in args else "both"
        dtype = args[args.index("--dtype") + 1] if "--dtype" in args else "f16"
        paths = output_paths(exports, "tiny", dtype)
        want = set(FORMAT_SETS.get(fmt, (fmt,)))
        if want & {"pytorch", "safetensors"}:
            want.add("tokenizer")
        assert {k for k, p in paths.items() if p.exists()} == want, command


@pytest.mark.slow
def test_guide_section_7_first_command_verbatim_with_nano(tmp_path):
    _guide_root(tmp_path, "nano")
    done = _run_guide(tmp_path, _guide_commands()[0])
    assert done.returncode == 0, done.stderr[-2000:]
    path = tmp_path / "outputs" / "exports" / "forge1_nano.safetensors"
    model, _ = load_model(path)
    assert read_safetensors(path)[1].variant == "nano"
    assert model.lm_head.weight is model.tok_emb.weight


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
def test_weights_reload_with_metadata_and_same_logits(run_dir, tmp_path, suffix):
    fmt = {"pt": "pytorch", "safetensors": "safetensors"}[suffix]
    (path,) = [p for p in export_model(run_dir, formats=(fmt,), output=tmp_path)
               if p.suffix == f".{suffix}"]
    assert path.name == f"forge1_custom.{suffix}"
    ref, tok = trained_model()
    meta = _meta(path)
    assert meta["variant"] == "custom" and meta["tokenizer_fingerprint"] == tok.fingerprint()
    model, _ = load_model(path)  # the one reader chat, evaluate and serve use
    assert model.config == ref.config
    assert model.lm_head.weight is model.tok_emb.weight  # reloaded tied
    ids = torch.randint(0, tok.get_vocab_size(), (1, 32))
    with torch.no_grad():
        assert torch.equal(model(ids), ref(ids))
    assert Forge1Tokenizer(tmp_path / "tokenizer").fingerprint() == tok.fingerprint()


def _meta(path: Path) -> dict:
    """The metadata an export file carries, read straight from the file."""
    if path.suffix == ".safetensors":
        meta = read_safetensors(path)[1]
        return {"variant": meta.variant, "tokenizer_fingerprint": meta.tokenizer_fingerprint}
    state = torch.load(path, weights_only=True)
    return {k: state[k] for k in ("variant", "tokenizer_fingerprint")}


def test_tied_embeddings_are_stored_once(run_dir, untied_dir, tmp_path):
    tied = export_model(run_dir, output=tmp_path / "tied")
    untied = export_model(untied_dir, output=tmp_path / "untied")
    emb_bytes = trained_model()[0].tok_emb.weight.numel() * 4
    for a, b in zip(tied[1:], untied[1:], strict=True):  # .pt, .safetensors
        grown = b.stat().st_size - a.stat().st_size
        assert abs(grown - emb_bytes) < 0.05 * emb_bytes, (a.name, grown, emb_bytes)
    sd, _ = read_safetensors(untied[2])
    model, _ = load_model(untied[2])
    assert model.lm_head.weight is not model.tok_emb.weight
    assert torch.equal(sd["lm_head.weight"], model.lm_head.weight)


def test_a_failed_write_leaves_the_existing_export_whole(run_dir, tmp_path, monkeypatch):
    export_model(run_dir, formats=("pytorch", "safetensors", "hf"), output=tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        target = args[1] if len(args) > 1 else kwargs["filename"]
        if hasattr(target, "write"):  # torch.save into an open file
            target.write(b"half")
        else:
            Path(target).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    monkeypatch.setattr("safetensors.torch.save_file", crash)
    for fmt in ("pytorch", "safetensors", "hf"):
        with pytest.raises(OSError):
            export_model(run_dir, formats=(fmt,), output=tmp_path, overwrite=True)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no half file, no leftover temp file


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/nope.pt"], "checkpoint not found"),
    (["--model", "{run}", "--variant", "nano"], "does not match the checkpoint"),
    (["--model", "{run}", "--output", "{file}/sub"], "cannot write the export"),
    (["--model", "{run}", "--output", "{file}"], "is a file"),
    (["--model", "{run}", "--format", "gguf", "--dtype", "q4"], "invalid choice: 'q4'"),
    (["--model", "{run}", "--format", "hf", "--dtype", "q8_0"], "writes no GGUF"),
    (["--model", "{run}", "--dtype", "f16"], "writes no GGUF"),
    (["--model", "{tmp}/nope.pt", "--format", "pytorch", "--dtype", "f32"], "writes no GGUF"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, args, message):
    (tmp_path / "f").write_text("x")
    args = [a.format(tmp=tmp_path, run=run_dir, file=tmp_path / "f") for a in args]
    with pytest.raises(SystemExit) as exc:
        main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and message in lines[-1], lines
    if "invalid choice" in message:  # argparse's own error: usage lines, then the error
        assert lines[0].startswith("usage:") and not any("Traceback" in x for x in lines)
    else:
        assert len(lines) == 1


def test_a_dtype_for_a_format_without_gguf_is_refused_before_loading(tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --dtype was checked")

    monkeypatch.setattr("aethermind.export.cli.load_verified", no_load)
    for formats in (("hf",), FORMAT_SETS["both"]):
        with pytest.raises(ExportError, match="writes no GGUF"):
            export_model(tmp_path / "any.pt", formats=formats, output=tmp_path / "out",
                         gguf_dtype="q8_0")
    with pytest.raises(ExportError, match="choose one of f32, f16, q8_0"):
        export_model(tmp_path / "any.pt", formats=("gguf",), gguf_dtype="q4")  # type: ignore
    assert not (tmp_path / "out").exists()


def test_gguf_without_dtype_uses_the_default(run_dir, tmp_path):
    (path,) = export_model(run_dir, formats=("gguf",), output=tmp_path)
    assert path.name == "forge1_custom-f16.gguf"


def test_aethermind_cli_dispatches_export_and_import_hf(run_dir, tmp_path, capsys):
    from aethermind.cli import main as cli

    assert cli(["export", "--model", str(run_dir), "--format", "pytorch",
                "--output", str(tmp_path)]) == 0
    assert (tmp_path / "forge1_custom.pt").is_file()
    with pytest.raises(SystemExit) as exc:
        cli(["import-hf", "--model", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["import-hf"])
    assert exc.value.code == 2 and "required: --model" in capsys.readouterr().err


# --- GGUF, read back with the gguf package (llama.cpp itself: test_interop.py) ---------------
def _gguf(run_dir: Path, out: Path, dtype: str):
    import gguf

    (path,) = export_model(run_dir, formats=("gguf",), output=out, gguf_dtype=dtype)
    assert path.name == f"forge1_custom-{dtype}.gguf"
    return gguf.GGUFReader(path)


def _field(reader, key):
    return reader.fields[key].contents()


def test_gguf_hparams_tokenizer_and_metadata(run_dir, tmp_path):
    import gguf

    reader = _gguf(run_dir, tmp_path, "f32")
    model, tok = trained_model()
    cfg = model.config
    expect = {"general.architecture": "llama", "llama.block_count": cfg.n_layers,
              "llama.embedding_length": cfg.dim, "llama.feed_forward_length": cfg.ffn_dim,
              "llama.attention.head_count": cfg.n_heads,
              "llama.attention.head_count_kv": cfg.n_kv_heads,
              "llama.context_length": cfg.max_seq_len, "llama.rope.dimension_count": 16,
              "llama.rope.freq_base": cfg.rope_theta, "llama.vocab_size": cfg.vocab_size,
              "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
              "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1,
              "tokenizer.ggml.eot_token_id": 8, "tokenizer.ggml.eom_token_id": 5,
              "tokenizer.ggml.padding_token_id": 2,
              "tokenizer.ggml.add_bos_token": False, "forge1.variant": "custom",
              "forge1.tokenizer_fingerprint": tok.fingerprint()}
    assert {k: _field(reader, k) for k in expect} == expect
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert json.loads(_field(reader, "forge1.config")) == cfg.to_dict()
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == cfg.vocab_size
    n = tok.get_vocab_size()
    ref = Tokenizer.from_str(tok.to_json())  # the `tokenizers` library's own id -> piece
    assert tokens[:n] == [ref.id_to_token(i) for i in range(n)]
    assert tokens[:12] == list(tok.special_ids)
    # the think tags are USER_DEFINED (llama.cpp renders them), the other 10 CONTROL
    assert {t: types[i] for t, i in tok.special_ids.items() if types[i] != gguf.TokenType.CONTROL} \
        == {"<|think|>": gguf.TokenType.USER_DEFINED, "<|/think|>": gguf.TokenType.USER_DEFINED}
    assert set(types[12:n]) == {gguf.TokenType.NORMAL}
    assert set(types[n:]) == {gguf.TokenType.UNUSED}
    merges = json.loads(tok.to_json())["model"]["merges"]
    assert _field(reader, "tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    from aethermind.text.chat_template import CHAT_TEMPLATE

    assert _field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE


@pytest.mark.parametrize("dtype, tol", [("f32", 0.0), ("f16", 1e-3), ("q8_0", 2e-2)])
def test_gguf_tensors_are_the_weights_with_q_k_permuted(run_dir, tmp_path, dtype, tol):
    import gguf

    from aethermind.export.gguf import unpermute_rope

    reader = _gguf(run_dir, tmp_path, dtype)
    model, _ = trained_model()
    cfg = model.config
    hf_sd, _ = to_hf(model.state_dict(), cfg)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.n_layers)
    by_name = {t.name: t for t in reader.tensors}
    assert "output.weight" not in by_name  # tied: llama.cpp reuses token_embd
    assert len(by_name) == len(hf_sd)
    for hf_name, want in hf_sd.items():
        t = by_name[names.get_name(hf_name, try_suffixes=(".weight",))]
        got = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type)))
        got = got.reshape(want.shape).float()
        if hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.n_heads if "q_proj" in hf_name else cfg.n_kv_heads
            assert not torch.equal(got, want)  # the permutation is not the identity
            got = unpermute_rope(got, heads)
        expect_type = "F32" if want.ndim == 1 else dtype.upper()
        assert t.tensor_type.name == expect_type
        assert (got - want).abs().max().item() <= tol * want.abs().max().item() + 1e-12


def test_rope_permutation_turns_rotate_half_into_adjacent_pairs():
    """The math llama.cpp relies on: permuted weights + pairwise RoPE == ours + rotate-half."""
    from aethermind.export.gguf import permute_rope
    from aethermind.model.transformer import apply_rope, rope_tables

    heads, hd, dim, T = 2, 8, 16, 5
    w = torch.randn(heads * hd, dim)
    x = torch.randn(T, dim)
    cos, sin = rope_tables(hd, T, 10000.0)
    ours = apply_rope((x @ w.T).view(T, heads, hd).transpose(0, 1), cos, sin)
    q = (x @ permute_rope(w, heads).T).view(T, heads, hd // 2, 2)
    c, s = cos[:, : hd // 2].unsqueeze(0), sin[:, : hd // 2].unsqueeze(0)
    pairs = torch.stack((q[..., 0] * c.transpose(0, 1) - q[..., 1] * s.transpose(0, 1),
                         q[..., 0] * s.transpose(0, 1) + q[..., 1] * c.transpose(0, 1)), -1)
    theirs = pairs.reshape(T, heads, hd).transpose(0, 1)  # interleaved layout
    assert torch.allclose(theirs, _interleave(ours), atol=1e-5)


def _interleave(x: torch.Tensor) -> torch.Tensor:
    """Rotate-half layout [a0..a(n-1), b0..b(n-1)] -> pairs [a0, b0, a1, b1, ...]."""
    half = x.shape[-1] // 2
    return torch.stack((x[..., :half], x[..., half:]), -1).flatten(-2)



def test_exports_and_training_checkpoints_load_like_final_models(run_dir, tmp_path):
    """chat/evaluate read the export files; export reads a training checkpoint."""
    from aethermind.artifacts.loading import load_model

    ref, tok = trained_model()
    export_model(run_dir, output=tmp_path / "exports")
    ids = torch.randint(0, tok.get_vocab_size(), (1, 16))
    for name in ("forge1_custom.pt", "forge1_custom.safetensors"):
        model, loaded_tok = load_model(tmp_path / "exports" / name, device="cpu")
        assert loaded_tok.fingerprint() == tok.fingerprint()
        with torch.no_grad():
            assert torch.equal(model(ids), ref(ids))
    step = tmp_path / "run" / "checkpoints" / "step_0000010.pt"
    step.parent.mkdir(parents=True)
    torch.save({"step": 10, "model": ref.state_dict(), "model_config": ref.config.to_dict(),
                "tokenizer_fingerprint": tok.fingerprint()}, step)
    (path,) = export_model(step, formats=("pytorch",), output=tmp_path / "from_step",
                           tokenizer=run_dir / "final_model" / "tokenizer")[1:]
    model, _ = load_model(path, tokenizer=run_dir / "final_model" / "tokenizer")
    assert model.config == ref.config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ref.state_dict().items())
