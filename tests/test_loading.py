"""load_model: the training layout loads back exactly; every mistake is one clear LoadError."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from _infer_helpers import save_final

from aethermind.artifacts.loading import LoadError, load_model
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer


@pytest.fixture
def saved(tiny_config, tiny_tokenizer, tmp_path):
    model = Forge1Model(tiny_config).eval()
    return model, save_final(model, tiny_tokenizer, tmp_path / "outputs")


def _same_logits(a, b):
    ids = torch.arange(12, 40).view(1, -1)
    with torch.no_grad():
        return torch.equal(a(ids), b(ids))


def test_loads_the_training_layout_exactly(saved, tiny_tokenizer):
    model, ckpt = saved
    loaded, tok = load_model(ckpt)
    assert _same_logits(model, loaded) and not loaded.training
    assert tok.fingerprint() == tiny_tokenizer.fingerprint()  # tokenizer/ beside the .pt
    assert loaded.lm_head.weight is loaded.tok_emb.weight  # tie survives loading


@pytest.mark.parametrize("which", ["final_model", "outputs"])
def test_a_directory_finds_its_checkpoint(saved, which):
    model, ckpt = saved
    path = ckpt.parent if which == "final_model" else ckpt.parent.parent
    assert _same_logits(model, load_model(path)[0])


def test_variant_without_config_json_uses_the_preset(tmp_path):
    tok = Forge1Tokenizer()
    cfg = Forge1Config.tiny(vocab_size=tok.get_vocab_size_padded())
    model = Forge1Model(cfg)
    ckpt = tmp_path / "forge1_tiny_final.pt"
    torch.save(model.state_dict(), ckpt)
    loaded, _ = load_model(ckpt, "tiny")
    assert loaded.config.dim == cfg.dim and _same_logits(model.eval(), loaded)
    loaded, _ = load_model(ckpt)  # no variant: inferred from the shapes
    assert loaded.config.n_layers == cfg.n_layers
    with pytest.raises(LoadError, match="use --variant tiny"):
        load_model(ckpt, "nano")


def test_a_training_checkpoint_carries_its_own_config(tiny_config, tiny_tokenizer, tmp_path):
    """A custom shape (no preset) loads from a step_*.pt alone: the shape is read, not guessed."""
    model = Forge1Model(tiny_config).eval()
    ckpt = tmp_path / "step_0000002.pt"
    torch.save({"step": 2, "model": model.state_dict(), "model_config": tiny_config.to_dict()},
               ckpt)
    loaded, _ = load_model(ckpt, tokenizer=tiny_tokenizer)
    assert loaded.config == tiny_config and _same_logits(model, loaded)
    with pytest.raises(LoadError, match="--variant tiny does not match.*drop --variant"):
        load_model(ckpt, "tiny", tokenizer=tiny_tokenizer)


def test_unknown_shape_without_a_saved_config_is_a_clear_error(tiny_config, tmp_path):
    ckpt = tmp_path / "forge1_tiny_final.pt"
    torch.save(Forge1Model(tiny_config).state_dict(), ckpt)  # dim 64: no preset has it
    with pytest.raises(LoadError, match="matches no preset: put the training run's config.json"):
        load_model(ckpt)
    with pytest.raises(LoadError, match="does not fit the tiny model"):
        load_model(ckpt, "tiny")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(LoadError, match="checkpoint not found") as err:
        load_model(tmp_path / "nope.pt", "nano")
    assert "\n" not in str(err.value)


def test_variant_that_does_not_match_config_is_an_error(saved):
    with pytest.raises(LoadError, match="--variant nano does not match") as err:
        load_model(saved[1], "nano")
    assert "\n" not in str(err.value)


def test_config_json_that_does_not_match_the_weights_is_an_error(saved):
    cfg = json.loads((saved[1].parent / "config.json").read_text())
    cfg["ffn_dim"] = 64
    (saved[1].parent / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="does not fit"):
        load_model(saved[1])


def test_tokenizer_that_does_not_match_the_vocab_is_an_error(saved, default_tokenizer):
    shutil.rmtree(saved[1].parent / "tokenizer")  # nothing saved beside: the given one is used
    with pytest.raises(LoadError, match="tokenizer has .* checkpoint's vocabulary is 448"):
        load_model(saved[1], tokenizer=default_tokenizer)


def test_saved_tokenizer_wins_over_a_different_given_one(saved, default_tokenizer,
                                                         tiny_tokenizer):
    with pytest.warns(UserWarning, match="ignoring the given tokenizer"):
        _, tok = load_model(saved[1], tokenizer=default_tokenizer)
    assert tok.fingerprint() == tiny_tokenizer.fingerprint()


def test_given_tokenizer_is_used_when_none_is_saved(saved, tiny_tokenizer, tmp_path):
    shutil.rmtree(saved[1].parent / "tokenizer")
    tiny_tokenizer.save(tmp_path / "tok")
    _, tok = load_model(saved[1], tokenizer=tmp_path / "tok")
    assert tok.fingerprint() == tiny_tokenizer.fingerprint()


def test_tokenizer_directory_that_does_not_exist_is_an_error(saved, tmp_path):
    with pytest.raises(LoadError, match="--tokenizer"):
        load_model(saved[1], tokenizer=tmp_path / "missing")


def test_not_a_state_dict_is_an_error(tmp_path):
    bad = tmp_path / "forge1_tiny_final.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(LoadError, match="not a Forge-1 state dict"):
        load_model(bad)
    bad.write_bytes(b"garbage")
    with pytest.raises(LoadError, match="not a PyTorch checkpoint"):
        load_model(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_falls_back_to_the_cpu_with_a_warning(saved):
    with pytest.warns(UserWarning, match="no CUDA GPU is available: running on the CPU"):
        model, _ = load_model(saved[1], device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(LoadError, match="unknown device 'gpu'"):
        load_model(saved[1], device="gpu")


# --- a Hugging Face folder (export --format hf, or a fine-tune of it) -------------------------
@pytest.fixture
def hf_folder(saved, tiny_tokenizer, tmp_path):
    from aethermind.artifacts.exported import ExportMeta
    from aethermind.export.hf import write_hf_dir

    model, _ = saved
    return model, write_hf_dir(model, tiny_tokenizer, ExportMeta.of(model, tiny_tokenizer),
                               tmp_path / "forge1_tiny_hf")


def test_a_hugging_face_folder_loads_directly(hf_folder, tiny_tokenizer):
    from aethermind.artifacts.loading import find_checkpoint

    model, folder = hf_folder
    for path in (folder, folder / "model.safetensors"):
        loaded, tok = load_model(path)
        assert _same_logits(model, loaded) and not loaded.training
        assert tok.fingerprint() == tiny_tokenizer.fingerprint()
        assert find_checkpoint(path) == folder  # the served model's id is the folder's name


def test_a_hugging_face_folder_checks_variant_and_ignores_a_given_tokenizer(
        hf_folder, default_tokenizer, tiny_tokenizer):
    _, folder = hf_folder
    with pytest.raises(LoadError, match="--variant nano does not match"):
        load_model(folder, "nano")
    with pytest.warns(UserWarning, match="holds its own"):
        _, tok = load_model(folder, tokenizer=default_tokenizer)
    assert tok.fingerprint() == tiny_tokenizer.fingerprint()


def test_a_broken_hugging_face_folder_points_to_import_hf(hf_folder):
    _, folder = hf_folder
    (folder / "model.safetensors").unlink()
    with pytest.raises(LoadError) as err:
        load_model(folder)
    message = str(err.value)
    assert "model.safetensors" in message and "aethermind import-hf" in message
    assert "\n" not in message and "checkpoint not found" not in message
