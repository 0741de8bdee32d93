"""What a training run saves and resumes: full state dicts, the resume checks, the run's folder.

`model_state` gathers the unsharded model (and optimizer) state under a plain module, DDP or
FSDP2; `load_model_state` puts a checkpoint's back. `check_resumable` refuses a checkpoint of
another model size, tokenizer or optimizer before any work is done, and `claim_checkpoint_dir`
refuses to mix a fresh run with another run's checkpoints. The file format itself (atomic
writes, validation, rotation) is `artifacts.checkpoint`'s; this module knows what goes in.
Usage: `check_resumable(state, path, cfg.variant, tokenizer, cfg.optimizer)`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from aethermind.artifacts import checkpoint as ckpt
from aethermind.runtime import dist
from aethermind.runtime.files import remove_stale_temp_files
from aethermind.runtime.runlock import LockedError, OutputLock
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.config import OptimizerName
from aethermind.training.errors import TrainingError


def check_resumable(state: dict[str, Any], path: Path, variant: str | None,
                    tokenizer: Forge1Tokenizer, optimizer: OptimizerName = "adamw",
                    lora: dict[str, Any] | None = None, init_from: str | None = None) -> None:
    """Refuse to continue a run with a different model size, tokenizer, optimizer or LoRA
    setting (and, for LoRA, another init_from: the adapters belong to their base weights)."""
    saved = state["config"]
    if saved.get("lora") != lora:
        raise TrainingError(f"cannot resume: {path} was trained with lora "
                            f"{saved.get('lora')} but lora {lora} was asked; use the run's "
                            "lora settings or a new output_dir/checkpoint_dir")
    if lora is not None and saved.get("init_from") != init_from:
        raise TrainingError(f"cannot resume: {path} holds LoRA adapters for init_from "
                            f"{saved.get('init_from')}, not {init_from}; use that init_from or "
                            "a new output_dir/checkpoint_dir")
    was = saved.get("optimizer", "adamw")  # checkpoints from before the key trained AdamW
    if was != optimizer:
        raise TrainingError(f"cannot resume: {path} was trained with optimizer {was} but "
                            f"optimizer={optimizer} was asked; use --set optimizer={was} or a "
                            "new output_dir/checkpoint_dir")
    if saved.get("variant") != variant:
        raise TrainingError(f"cannot resume: {path} is a {saved.get('variant')} run but "
                            f"--variant {variant} was asked; use --variant {saved.get('variant')} "
                            "or a new output_dir/checkpoint_dir")
    if state["tokenizer_fingerprint"] != tokenizer.fingerprint():
        raise TrainingError(f"cannot resume: {path} was trained with tokenizer "
                            f"{state['tokenizer_fingerprint']} but this run's is "
                            f"{tokenizer.fingerprint()}; use the same tokenizer setting or a new "
                            "output_dir/checkpoint_dir")


def model_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, fsdp: bool,
                trainable_only: bool = False) -> tuple[dict, dict | None]:
    """Full (unsharded) model and optimizer state dicts; under FSDP a collective, on the CPU.
    `trainable_only` keeps just the parameters that train (a LoRA run's adapters: its frozen
    weights come back from init_from, so checkpoints stay small)."""
    if fsdp:
        # Imported only under FSDP: torch.distributed.checkpoint adds seconds to start-up.
        from torch.distributed.checkpoint import state_dict as dcp

        options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
        if optimizer is None:
            return dcp.get_model_state_dict(model, options=options), None
        return dcp.get_state_dict(model, optimizer, options=options)
    module = dist.unwrap(model)
    sd = module.state_dict()
    if trainable_only:
        names = {n for n, p in module.named_parameters() if p.requires_grad}
        sd = {k: v for k, v in sd.items() if k in names}
    return sd, optimizer and optimizer.state_dict()


def load_model_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any], fsdp: bool) -> None:
    """The inverse of `model_state`: full state dicts back into a (possibly sharded) run.

    Only the optimizer's moments and step counts come from the checkpoint: its hyperparameters
    (weight decay, betas, eps, ...) stay the ones this run's config built it with, because
    torch's `load_state_dict` would put the saved ones back while the new checkpoint's config
    shows the new ones (issue 22)."""
    hyper = [{k: v for k, v in group.items() if k != "params"}
             for group in optimizer.param_groups]
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    elif state.get("config", {}).get("lora") is not None:  # adapters only, onto init_from
        module = dist.unwrap(model)
        result = module.load_state_dict(state["model"], strict=False)
        trainable = {n for n, p in module.named_parameters() if p.requires_grad}
        bad = sorted(result.unexpected_keys) + sorted(trainable & set(result.missing_keys))
        if bad:
            raise TrainingError(f"cannot resume: the checkpoint's adapters do not fit this "
                                f"model (e.g. {bad[0]}); use a new output_dir")
        optimizer.load_state_dict(state["optimizer"])
    else:
        dist.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    changed = sorted({k for group, h in zip(optimizer.param_groups, hyper, strict=True)
                      for k in h if k != "lr" and group.get(k) != h[k]})
    for group, h in zip(optimizer.param_groups, hyper, strict=True):
        group.update(h)  # in place: MuonAdamW's AdamW half shares these dicts
    if changed:
        dist.log0("resume: optimizer %s from the config, not the checkpoint", ", ".join(changed))


def claim_checkpoint_dir(ckpt_dir: Path, resume: bool, overwrite: bool) -> None:
    """Clear crash leftovers; refuse to mix a fresh run with another run's checkpoints."""
    remove_stale_temp_files(ckpt_dir, ckpt.CKPT_GLOB)
    existing = ckpt.list_checkpoints(ckpt_dir)
    if not existing or resume:
        return
    if not overwrite:
        raise TrainingError(
            f"{ckpt_dir} already holds checkpoints of another run (newest {existing[-1].name}): "
            "continue it with --resume, or start fresh with a new output_dir (--set "
            "output_dir=...) or --overwrite (deletes them)")
    for path in existing:
        path.unlink(missing_ok=True)
    warnings.warn(f"--overwrite: deleted {len(existing)} checkpoint(s) of the earlier run in "
                  f"{ckpt_dir}", stacklevel=3)


@contextlib.contextmanager
def output_lock(folder: str | Path, what: str = "training run") -> Iterator[None]:
    """The run folder's lock for the run, held by the main process (the other ranks share its
    run); a folder another live run holds is a one-line TrainingError. Training and RL."""
    lock = OutputLock(folder, what) if dist.is_main() else contextlib.nullcontext()
    try:
        lock.__enter__()
    except LockedError as err:
        raise TrainingError(str(err)) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)

