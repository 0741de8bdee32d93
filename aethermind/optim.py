"""AdamW with sensible parameter groups, and the learning-rate schedule as a pure function.

Weight decay pulls weights toward zero; on norm gains (which should sit near 1) and on embedding
rows (most of which get no gradient in a given step) it only hurts, so both are excluded, as in
GPT-3 / LLaMA practice. The schedule is a function of the step alone, so resuming needs no
scheduler state beyond the step counter.
Usage: `opt = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))`;
`lr = lr_at(step, max_lr=3e-4, warmup_steps=20, total_steps=1000, min_lr_ratio=0.1,
schedule="cosine")` (the values come from TrainConfig).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices of Linear layers decay; norms, biases and embeddings do not."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # named_parameters dedups tied weights
        if not p.requires_grad:
            continue
        if p.ndim < 2 or id(p) in embedding_ids:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def fused_available(device: torch.device) -> bool:
    """Fused AdamW (one kernel for all tensors) exists for CUDA and, in recent torch, CPU."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    return device.type in ("cuda", "cpu")


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    betas: tuple[float, float], eps: float = 1e-8,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `param_groups`; `fused=None` picks fused when available for the model's device.

    The hyperparameters have no defaults here: TrainConfig owns them (learning_rate,
    weight_decay, beta1, beta2), so a run's YAML is the one place they are set.
    """
    device = next(model.parameters()).device
    if fused is None:
        fused = fused_available(device)
    kwargs = {"fused": True} if fused else {"foreach": device.type != "meta"}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             **kwargs)


def lr_at(step: int, *, max_lr: float, warmup_steps: int, total_steps: int,
          min_lr_ratio: float, schedule: str) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warmup from max_lr/warmup_steps to max_lr over `warmup_steps`, then `schedule`:
    cosine or linear decay to the floor `min_lr_ratio * max_lr` at `total_steps`, or constant.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    floor = max_lr * min_lr_ratio
    if schedule == "constant":
        return max_lr
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return max_lr - (max_lr - floor) * progress
    if schedule == "cosine":
        return floor + (max_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {schedule!r}: choose cosine, linear or constant")


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length from the guide's `warmup_ratio` (at least one step when the ratio is > 0)."""
    return max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
