"""TrainConfig: YAML loading, --set overrides with type coercion, and errors before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from aethermind.data.pack import LAYOUTS
from aethermind.training import train
from aethermind.training.config import (
    ConfigError,
    TrainConfig,
    coerce,
    dump_yaml,
    from_dict,
    keys,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_cli_keys_are_frozen():
    # Adding or renaming a key is a deliberate edit here (torchtitan's test_no_new_cli_options).
    assert keys() == [
        "variant", "init_from", "lora", "train_data", "val_data", "tokenizer",
        "tokenizer_vocab_size",
        "data_cache_dir", "layout", "loss_on_all_tokens", "device", "precision",
        "gradient_checkpointing", "compile", "attention", "fsdp", "num_workers", "pin_memory",
        "batch_size", "gradient_accumulation_steps", "context_length", "optimizer", "learning_rate",
        "min_lr_ratio",
        "warmup_ratio", "lr_scheduler", "weight_decay", "beta1", "beta2", "max_grad_norm",
        "epochs", "max_steps", "max_bad_steps", "output_dir", "checkpoint_dir",
        "checkpoint_every", "keep_checkpoints", "eval_every", "eval_batches", "log_every",
        "dashboard", "tensorboard", "seed"]


def test_local_config_matches_the_guide_table():
    cfg = load_config(CONFIGS / "local_config.yaml")
    assert (cfg.precision, cfg.gradient_checkpointing, cfg.batch_size,
            cfg.gradient_accumulation_steps, cfg.context_length, cfg.max_grad_norm,
            cfg.learning_rate, cfg.warmup_ratio, cfg.lr_scheduler) == (
        "fp16", True, 2, 8, 1024, 1.0, 3e-4, 0.02, "cosine")
    assert cfg.train_data == "data/train.jsonl" and cfg.output_dir == "outputs"


def test_shipped_configs_load():
    colab = load_config(CONFIGS / "colab_config.yaml")
    cpu = load_config(CONFIGS / "cpu_config.yaml")
    assert (colab.variant, colab.precision) == ("mini", "fp16")
    assert (cpu.variant, cpu.precision, cpu.device) == ("tiny", "fp32", "cpu")


def test_set_overrides_the_file_and_coerces_types(tmp_path):
    path = write(tmp_path, "max_steps: 100\nlearning_rate: 1.0e-3\n")
    cfg = load_config(path, ["max_steps=20", "learning_rate=5e-4", "compile=true",
                             "val_data=null", "output_dir=runs/try1"], variant="tiny")
    assert (cfg.max_steps, cfg.learning_rate, cfg.compile) == (20, 5e-4, True)
    assert cfg.val_data is None and cfg.output_dir == "runs/try1" and cfg.variant == "tiny"


def test_yaml_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML reads 3e-4 as the string "3e-4"; it must still mean 0.0003.
    assert load_config(write(tmp_path, "learning_rate: 3e-4\n")).learning_rate == 3e-4


def test_unknown_yaml_key_names_the_key_and_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'learnin_rate'.*allowed keys: .*"
                                          r"learning_rate"):
        load_config(write(tmp_path, "learnin_rate: 0.1\n"))


def test_unknown_set_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown key 'max_step'"):
        load_config(None, ["max_step=3"])


@pytest.mark.parametrize(("item", "pattern"), [
    ("batch_size=two", r"'batch_size' has value 'two': expected an integer"),
    ("precision=fp8", r"'precision' has value 'fp8': expected one of fp32, fp16, bf16"),
    ("batch_size=0", r"'batch_size' has value 0: expected an integer >= 1"),
    ("warmup_ratio=1.5", r"'warmup_ratio' has value 1.5: expected a number in \[0, 1\]"),
    ("device=tpu", r"'device' has value 'tpu': expected auto, cpu, cuda, cuda:N or mps"),
    ("variant=huge", r"'variant' has value 'huge': expected one of tiny, nano, mini"),
    ("layout=diagonal", r"'layout' has value 'diagonal': expected one of " + ", ".join(LAYOUTS)),
    ("compile=maybe", r"'compile' has value 'maybe': expected true/false or one of blocks"),
    ("optimizer=sgd", r"'optimizer' has value 'sgd': expected one of adamw, muon"),
    ("max_steps", r"expected key=value"),
])
def test_bad_values_name_key_value_and_what_is_allowed(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [item])


def test_muon_with_fsdp_is_refused_before_any_work():
    with pytest.raises(ConfigError, match=r"'optimizer' has value 'muon': expected adamw with"):
        load_config(None, ["optimizer=muon", "fsdp=true"])


def test_wrong_yaml_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'gradient_checkpointing' has value 'yes please'"):
        load_config(write(tmp_path, "gradient_checkpointing: yes please\n"))


def test_coerce_handles_optional_and_bool():
    assert coerce("checkpoint_dir", "none") is None
    assert coerce("pin_memory", "off") is False
    assert coerce("learning_rate", "1") == 1
    assert coerce("compile", "true") is True and coerce("compile", "blocks") == "blocks"


def test_resolved_config_round_trips_through_yaml():
    import yaml

    cfg = TrainConfig(variant="nano", max_steps=7)
    assert from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg


def test_bad_config_stops_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"
    rc = train.main(["--variant", "tiny", "--set", f"output_dir={out}", "--set",
                     "batch_size=-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "'batch_size' has value -1" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_config_file_is_one_clear_line(capsys):
    assert train.main(["--config", "no/such.yaml", "--variant", "tiny"]) == 2
    assert "--config no/such.yaml: file not found" in capsys.readouterr().err


def test_missing_variant_is_reported(tmp_path, capsys):
    rc = train.main(["--set", f"output_dir={tmp_path / 'o'}"])
    assert rc == 2 and "no variant" in capsys.readouterr().err


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    rc = train.main(["--variant", "tiny", "--set", "tensorboard=true", "--set",
                     f"output_dir={tmp_path / 'o'}"])
    assert rc == 1 and "pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_stage_and_fine_tune_configs_load():
    stage2 = load_config(CONFIGS / "stage2_reasoning.yaml")
    assert stage2.init_from == "outputs/stage1/final_model" and stage2.variant is None
    assert load_config(CONFIGS / "stage1_instructions.yaml").output_dir == "outputs/stage1"
    assert load_config(CONFIGS / "hub_finetune.yaml").lora is None
    hub_lora = load_config(CONFIGS / "hub_lora.yaml").lora
    assert hub_lora is not None and hub_lora.r == 16 and len(hub_lora.targets) == 7
    identity = load_config(CONFIGS / "identity.yaml", ["lora.r=8"])
    assert identity.init_from == "outputs/demo/final_model" and identity.lora.r == 8
