"""`init_from`: training starts from existing weights (fresh optimizer, schedule and data
position), the source is recorded, `--resume` wins, and every bad source is one line up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from _train_helpers import make_cfg, write_chats, write_yaml

from aethermind.artifacts import checkpoint as ckpt
from aethermind.artifacts.exported import ExportMeta
from aethermind.artifacts.loading import load_model
from aethermind.export.hf import write_hf_dir
from aethermind.training import train
from aethermind.training.config import ConfigError, TrainConfig


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_tokenizer_dir):
    """A tiny run trained for a few steps: the weights later runs start from (read-only)."""
    root = tmp_path_factory.mktemp("init_source")
    assets = SimpleNamespace(tok=str(tiny_tokenizer_dir), cache=str(root / "cache"),
                             train=str(write_chats(root / "train.jsonl", 96, seed=0)))
    result = train.train(make_cfg(assets, root / "run", max_steps=12))
    assert result["status"] == "completed"
    return SimpleNamespace(assets=assets, final=root / "run" / "final_model", root=root)


def sd_of(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def test_init_from_loads_the_weights_with_a_fresh_schedule_and_records_the_source(
        source, tmp_path):
    fresh = train.train(make_cfg(source.assets, tmp_path / "fresh", max_steps=3))
    cfg = make_cfg(source.assets, tmp_path / "ft", max_steps=3, learning_rate=1e-12,
                   checkpoint_every=3, init_from=str(source.final))
    result = train.train(cfg)
    assert result["step"] == 3  # the schedule starts at 0, not where the source stopped
    assert result["losses"][0] < fresh["losses"][0] - 0.5  # the trained weights, not random
    before, after = sd_of(source.final), sd_of(tmp_path / "ft" / "final_model")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(cfg.checkpoint_path)[-1])
    assert state["config"]["init_from"] == str(source.final)
    assert all(s["step"].item() == 3 for s in state["optimizer"]["state"].values())
    saved = yaml.safe_load((tmp_path / "ft" / "final_model" / "train_config.yaml").read_text())
    assert saved["init_from"] == str(source.final)


def test_the_variant_comes_from_the_source_when_not_given(source, tmp_path):
    cfg = make_cfg(source.assets, tmp_path / "ft", max_steps=1, variant=None,
                   init_from=str(source.final))
    assert train.train(cfg)["status"] == "completed"
    assert (tmp_path / "ft" / "final_model" / "forge1_tiny_final.pt").is_file()


def test_a_hugging_face_llama_folder_is_a_source(source, tmp_path):
    model, tok = load_model(source.final)
    hf = write_hf_dir(model, tok, ExportMeta.of(model, tok), tmp_path / "hf")
    cfg = make_cfg(source.assets, tmp_path / "ft", max_steps=2, learning_rate=1e-12,
                   init_from=str(hf))
    train.train(cfg)
    before, after = sd_of(source.final), sd_of(tmp_path / "ft" / "final_model")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_resume_wins_and_never_reads_init_from_again(source, tmp_path):
    moved = tmp_path / "source"
    shutil.copytree(source.final, moved)
    common = dict(max_steps=8, checkpoint_every=4, learning_rate=1e-3, init_from=str(moved))
    straight = train.train(make_cfg(source.assets, tmp_path / "a", **common))
    cfg = make_cfg(source.assets, tmp_path / "b", **common)
    first = train.train(cfg, stop_after=4)
    shutil.rmtree(moved)  # a resumed full fine-tune needs nothing from the source any more
    second = train.train(cfg, resume=True)
    assert second["status"] == "completed"
    assert first["losses"] + second["losses"] == pytest.approx(straight["losses"], abs=1e-6)


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = train.main(argv)
    return code, capsys.readouterr().err.strip()


def test_a_missing_source_fails_before_anything_is_written(source, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_yaml(make_cfg(source.assets, out), tmp_path / "c.yaml")
    code, err = run_main(["--config", str(cfg), "--init-from", str(tmp_path / "nope")], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "init_from" in err and "not found" in err and not out.exists()


def test_a_non_llama_hugging_face_folder_is_refused(source, tmp_path, capsys):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    cfg = write_yaml(make_cfg(source.assets, tmp_path / "out"), tmp_path / "c.yaml")
    code, err = run_main(["--config", str(cfg), "--init-from", str(folder)], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "only Llama" in err


def test_a_source_of_another_variant_is_refused(source, tmp_path, capsys):
    cfg = write_yaml(make_cfg(source.assets, tmp_path / "out"), tmp_path / "c.yaml")
    code, err = run_main(["--config", str(cfg), "--variant", "nano",
                          "--init-from", str(source.final)], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "does not match" in err and "tiny" in err


def test_a_source_with_another_tokenizer_is_refused(source, tmp_path, capsys):
    cfg = write_yaml(make_cfg(source.assets, tmp_path / "out", tokenizer="default"),
                     tmp_path / "c.yaml")
    code, err = run_main(["--config", str(cfg), "--init-from", str(source.final)], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "its tokenizer" in err and str(source.final / "tokenizer") in err
    assert not (tmp_path / "out" / "cache").exists()  # refused before any data was packed


def test_init_from_with_a_trained_tokenizer_is_a_config_error():
    with pytest.raises(ConfigError, match="'tokenizer' has value 'train'"):
        TrainConfig(init_from="x", tokenizer="train")


def test_plan_takes_the_shape_of_init_from_when_no_variant_is_given(source, capsys):
    from aethermind.training import plan

    assert plan.main(["--set", f"init_from={source.final}", "--set",
                      f"tokenizer={source.assets.tok}", "--set", "context_length=64"]) == 0
    n = load_model(source.final)[0].num_parameters()
    assert f"({n / 1e6:.1f}M parameters)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a missing source is a one-line error, as in train
        plan.main(["--set", f"init_from={source.root}/nope"])
    assert "init_from" in capsys.readouterr().err
