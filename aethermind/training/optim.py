"""AdamW (or Muon + AdamW) with sensible parameter groups, and the learning-rate schedule.

Weight decay pulls weights toward zero; on norm gains (which should sit near 1) and on embedding
rows (most of which get no gradient in a given step) it only hurts, so both are excluded, as in
GPT-3 / LLaMA practice. The schedule is a function of the step alone, so resuming needs no
scheduler state beyond the step counter.
Muon (`optimizer: muon`) orthogonalizes each hidden matrix's momentum before the step, which
learns more per step than AdamW on small transformers (the modded-nanogpt and nanochat
recipes); embeddings and norm gains stay on AdamW, where an orthogonal update means nothing.
Usage: `opt = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))`;
`lr = lr_at(step, max_lr=3e-4, warmup_steps=20, total_steps=1000, min_lr_ratio=0.1,
schedule="cosine")` (the values come from TrainConfig).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from aethermind.training.config import OptimizerName


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


# Quintic Newton-Schulz coefficients of the Muon paper (Jordan et al., 2024): five iterations
# take every singular value of a matrix near 1 (to within ~0.5-1.5), which is all Muon needs.
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About U V^T of each matrix g = U S V^T (g: (..., rows, cols), a stack is done at once).
    bf16 on accelerators as in the paper; fp32 on the CPU, where bf16 matmuls are slower."""
    a, b, c = _NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.device.type == "cuda" else torch.float32)
    wide = x.shape[-2] <= x.shape[-1]
    x = x if wide else x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.mT).to(g.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the hidden matrices (group 0), AdamW on the other groups, as one optimizer.

    One object, so the training loop, GradScaler, clipping, `set_lr` and checkpoints see a plain
    optimizer. Muon's step is scaled by 0.2 * sqrt(max(rows, cols)) so its update has AdamW's
    size ("match RMS", Liu et al. 2025, "Muon is Scalable"): one `learning_rate` serves both.
    """

    def __init__(self, muon_group: dict, adamw_groups: list[dict], *, lr: float,
                 betas: tuple[float, float], eps: float, momentum: float = 0.95,
                 adamw_kwargs: dict[str, Any]):
        self._adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps,
                                        **adamw_kwargs)
        muon_group = {**muon_group, "lr": lr, "momentum": momentum}
        super().__init__([muon_group, *self._adamw.param_groups], {})
        self._share()

    def _share(self) -> None:
        """The AdamW half works on this object's group dict and state (also after a load)."""
        self._adamw.param_groups = self.param_groups[1:]
        self._adamw.state = self.state

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - Muon half here, then the AdamW half
        loss = closure() if closure is not None else None
        group = self.param_groups[0]
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is not None:
                by_shape.setdefault(tuple(p.shape), []).append(p)
        for shape, params in by_shape.items():  # one stacked orthogonalization per shape
            updates = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(mu).add_(p.grad)
                updates.append(p.grad.add(buf, alpha=mu))  # Nesterov
            ortho = orthogonalize(torch.stack(updates))
            scale = lr * 0.2 * math.sqrt(max(shape))
            for p, update in zip(params, ortho, strict=True):
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-scale)
        self._adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share()


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    betas: tuple[float, float], eps: float = 1e-8,
                    fused: bool | None = None, name: OptimizerName = "adamw"
                    ) -> torch.optim.Optimizer:
    """AdamW (or Muon + AdamW) over `param_groups`; `fused=None` picks fused AdamW when
    available for the model's device.

    The hyperparameters have no defaults here: TrainConfig owns them (optimizer, learning_rate,
    weight_decay, beta1, beta2), so a run's YAML is the one place they are set.
    """
    device = next(model.parameters()).device
    if fused is None:
        fused = fused_available(device)
    kwargs = {"fused": True} if fused else {"foreach": device.type != "meta"}
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)
    if name != "muon":
        raise ValueError(f"optimizer={name!r}: choose adamw or muon")
    if any(type(p).__name__ == "DTensor" for p in groups[0]["params"]):
        raise ValueError("optimizer=muon needs whole matrices, and FSDP shards them: "
                         "use optimizer=adamw with fsdp, or DDP")
    # An untied output layer stays on AdamW (as in nanochat): its rows are per-token logits.
    head = getattr(model, "lm_head", None)
    head_ids = {id(head.weight)} if head is not None else set()
    matrices = [p for p in groups[0]["params"] if id(p) not in head_ids]
    heads = [p for p in groups[0]["params"] if id(p) in head_ids]
    adamw_groups = [{"params": heads, "weight_decay": weight_decay}] if heads else []
    return MuonAdamW({"params": matrices, "weight_decay": weight_decay},
                     [*adamw_groups, groups[1]], lr=lr, betas=betas, eps=eps,
                     adamw_kwargs=kwargs)


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
