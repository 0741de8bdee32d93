"""Memory planner: the guide's budget table from a config, and its verdict."""

from __future__ import annotations

from pathlib import Path

from aethermind.model.config import Forge1Config
from aethermind.training import plan
from aethermind.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_static_memory_is_16_bytes_per_parameter():
    cfg = Forge1Config.nano(vocab_size=16384)
    b = plan.estimate(cfg, TrainConfig(precision="fp16", batch_size=2, context_length=1024))
    assert b.params == plan.count_params(cfg)
    assert (b.weights, b.gradients, b.optimizer) == (4 * b.params, 4 * b.params, 8 * b.params)


def test_checkpointing_cuts_activations_and_scales_with_batch():
    cfg = Forge1Config.nano(vocab_size=16384)
    small = plan.estimate(cfg, TrainConfig(precision="fp16", batch_size=2, context_length=1024))
    big = plan.estimate(cfg, TrainConfig(precision="fp16", batch_size=4, context_length=1024))
    assert small.activations_ckpt < small.activations / 3
    assert big.activations == 2 * small.activations
    assert small.total(True) < small.total(False)


def test_nano_local_config_fits_4gb_and_mini_does_not(capsys):
    assert plan.main(["--config", str(CONFIGS / "local_config.yaml"), "--variant", "nano",
                      "--gpu-gb", "4"]) == 0
    out = capsys.readouterr().out
    assert "| Optimizer states (AdamW, 2 x fp32)" in out and "checkpointing" in out
    assert "Verdict: fits a 4 GB GPU with gradient checkpointing" in out
    plan.main(["--config", str(CONFIGS / "local_config.yaml"), "--variant", "mini",
               "--gpu-gb", "4"])
    assert "does NOT fit" in capsys.readouterr().out


def test_verdict_suggests_checkpointing_when_that_is_enough(capsys):
    plan.main(["--config", str(CONFIGS / "local_config.yaml"), "--variant", "nano",
               "--set", "gradient_checkpointing=false", "--set", "batch_size=8",
               "--gpu-gb", "6"])
    assert "it fits with gradient_checkpointing: true" in capsys.readouterr().out
