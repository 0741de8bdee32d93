"""The one validation-loss loop, shared by training's periodic evaluation and `aethermind evaluate`.

`loss_totals` returns [summed loss, loss tokens] over a `BatchLoader` of `pack` shards, summed
with the same `losses.summed_loss` that training minimises, so a reported loss and a training
loss mean the same thing. Callers divide (and, across processes, all-reduce first). It knows
nothing about training runs, configs or processes.
Usage: `total, count = loss_totals(model, loader, device).tolist(); loss = total / count`.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from aethermind.data.loader import BatchLoader, to_device
from aethermind.model.losses import summed_loss


def loss_totals(model: torch.nn.Module, loader: BatchLoader, device: torch.device, *,
                max_batches: int | None = None, autocast: AbstractContextManager | None = None,
                pin: bool = False) -> torch.Tensor:
    """[summed loss, loss tokens] (float64) over the loader's first `max_batches` batches (all
    if None), from the start of its first epoch; the model's train/eval mode is restored."""
    loader.load_state_dict({"epoch": 0, "offset": 0})
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            tokens, targets, doc_ids = to_device(batch, device, pin)
            with autocast or contextlib.nullcontext():
                totals[0] += summed_loss(model, tokens, targets, doc_ids).double()
            totals[1] += (targets != -100).sum()
    model.train(was_training)
    return totals
