"""Memory planner: the guide's budget table from a config, and its verdict."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aethermind.model.config import Forge1Config
from aethermind.training import plan
from aethermind.training.config import TrainConfig, load_config

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


def _local(variant: str) -> tuple[Forge1Config, TrainConfig]:
    """The planner's own view of configs/local_config.yaml for `variant`."""
    train = load_config(CONFIGS / "local_config.yaml", [], variant)
    return plan.model_config(train, variant), train


def _plan(capsys, variant: str, gpu_gb: int) -> str:
    assert plan.main(["--config", str(CONFIGS / "local_config.yaml"), "--variant", variant,
                      "--gpu-gb", str(gpu_gb)]) == 0
    return capsys.readouterr().out


def _is_largest_batch(cfg, train, gb, checkpointing, n):
    def total(bs):
        return plan.estimate(cfg, replace(train, batch_size=bs)).total(checkpointing)
    return total(n) <= gb * 2**30 < total(n + 1)


def test_mini_on_4gb_says_it_cannot_fit_and_names_what_does(capsys):
    """Weights, gradients and AdamW states alone exceed 4 GB: lowering the batch cannot help."""
    cfg, train = _local("mini")
    b = plan.estimate(cfg, train)
    assert b.fixed() > 4 * 2**30
    out = _plan(capsys, "mini", 4)
    static = (b.weights + b.gradients + b.optimizer) / 2**30
    assert "cannot train on a 4 GB GPU at any batch size or context length" in out
    assert f"optimizer states alone take {static:.2f} GB" in out
    assert "lower batch_size" not in out and "set batch_size" not in out
    nano, nano_train = _local("nano")
    n = plan.max_batch_size(nano, nano_train, 4 * 2**30, True)
    assert n >= 1 and _is_largest_batch(nano, nano_train, 4, True, n)
    assert f"the nano variant (--variant nano), batch_size up to {n} at context_length " \
           f"{nano_train.context_length} with gradient checkpointing" in out
    need = plan.estimate(cfg, replace(train, batch_size=1)).total(True) / 2**30
    shown = float(out.split("a GPU of at least ")[1].split(" GB")[0])
    assert need <= shown < need + 0.1


def test_nano_on_4gb_fits_and_gives_the_largest_batches(capsys):
    cfg, train = _local("nano")
    out = _plan(capsys, "nano", 4)
    assert "Verdict: fits a 4 GB GPU with gradient checkpointing" in out
    without = plan.max_batch_size(cfg, train, 4 * 2**30, False)
    with_ckpt = plan.max_batch_size(cfg, train, 4 * 2**30, True)
    assert _is_largest_batch(cfg, train, 4, False, without)
    assert _is_largest_batch(cfg, train, 4, True, with_ckpt)
    assert f"At context_length {train.context_length}, batch_size up to {without} fits " \
           f"without gradient checkpointing and up to {with_ckpt} with it." in out
    assert ("Checkpointing is not needed" in out) == (train.batch_size <= without)


def test_mini_on_16gb_fits_without_checkpointing(capsys):
    cfg, train = _local("mini")
    out = _plan(capsys, "mini", 16)
    without = plan.max_batch_size(cfg, train, 16 * 2**30, False)
    assert train.batch_size <= without and _is_largest_batch(cfg, train, 16, False, without)
    assert f"batch_size up to {without} fits without gradient checkpointing" in out
    assert f"Checkpointing is not needed at batch_size {train.batch_size}" in out


def test_too_long_a_context_says_which_context_fits(capsys):
    """The weights fit but not one row: the advice is the context length, not the batch."""
    cfg, train = _local("nano")
    assert plan.max_batch_size(cfg, train, 2 * 2**30, True) == 0
    out = _plan(capsys, "nano", 2)
    tokens = int(out.split("context_length up to ")[1].split()[0])
    one = plan.estimate(cfg, replace(train, batch_size=1, context_length=tokens))
    over = plan.estimate(cfg, replace(train, batch_size=1, context_length=tokens + 1))
    assert one.total(True) <= 2 * 2**30 < over.total(True)


def test_verdict_suggests_checkpointing_when_that_is_enough(capsys):
    plan.main(["--config", str(CONFIGS / "local_config.yaml"), "--variant", "nano",
               "--set", "gradient_checkpointing=false", "--set", "batch_size=8",
               "--gpu-gb", "6"])
    assert "it fits with gradient_checkpointing: true" in capsys.readouterr().out
