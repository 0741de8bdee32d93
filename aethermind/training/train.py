"""`aethermind train`: the one training loop (guide sections 4 and 10), resumable and crash-safe.

`train(cfg)` runs setup (device, seed, tokenizer, data, model, optimizer, resume), then the loop
(lr, micro-batch accumulation, clip, step, log, eval, save), then teardown (final checkpoint,
final_model/ export, loss PNG), and returns metrics. The same code runs as one process or as K
under `torchrun --nproc_per_node=K` (DDP, or FSDP2 with `fsdp: true`).
Loss: summed cross-entropy over loss-bearing tokens divided by the step's global count of such
tokens, so K processes x A micro-batches give exactly the gradient of one big batch.
Usage: `python scripts/train.py --config configs/local_config.yaml --variant nano [--resume]`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from aethermind.artifacts import checkpoint as ckpt
from aethermind.artifacts.layout import final_dir, write_final
from aethermind.model.config import VARIANTS, Forge1Config
from aethermind.model.losses import summed_loss as compute_loss  # tests patch this name
from aethermind.model.transformer import Forge1Model
from aethermind.runtime import dist
from aethermind.runtime.files import atomic_text, remove_stale_temp_files
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.config import ConfigError, TrainConfig, dump_yaml, load_config
from aethermind.training.dashboard import Dashboard, MetricsWriter, memory_text, plot_losses
from aethermind.training.optim import build_optimizer, lr_at, set_lr, warmup_steps_for


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line meant for the user."""


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the step boundary and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if not _in_main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (the last checkpoint stays)
        self.signum = signum
        if signum == signal.SIGINT and dist.is_main():
            print("\nCtrl-C: finishing this step, then saving a checkpoint; press Ctrl-C again "
                  "to stop at once", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- setup helpers --------------------------------------------------------------------------
def load_tokenizer(cfg: TrainConfig) -> Forge1Tokenizer:
    """default | train (once, cached under output_dir/tokenizer) | a directory."""
    if cfg.tokenizer == "default":
        return Forge1Tokenizer()
    if cfg.tokenizer != "train":
        try:
            return Forge1Tokenizer(cfg.tokenizer)
        except (FileNotFoundError, ValueError) as err:
            raise TrainingError(f"tokenizer: {err}") from None
    tok_dir = Path(cfg.output_dir) / "tokenizer"
    try:
        if (tok_dir / "tokenizer.json").is_file():
            return Forge1Tokenizer(tok_dir)
        if dist.is_main():
            from aethermind.data.tokenizer_train import read_jsonl_texts

            dist.log0("training a %d-token tokenizer on %s", cfg.tokenizer_vocab_size,
                      cfg.train_data)
            tok = Forge1Tokenizer.train(read_jsonl_texts(Path(cfg.train_data), "text"),
                                        cfg.tokenizer_vocab_size)
            tok.save(tok_dir)
        dist.barrier()
        return Forge1Tokenizer(tok_dir)
    except ValueError as err:  # a corrupt cached tokenizer.json, unreadable train_data
        raise TrainingError(f"tokenizer: {err}") from None


def _check_data_files(cfg: TrainConfig) -> None:
    """Every data file exists and is UTF-8 text, or one line says which is not and why."""
    from aethermind.data.jsonl import check_text_file

    for split, path in (("train", cfg.train_data), ("val", cfg.val_data)):
        if path is None:
            continue
        if not Path(path).is_file():
            raise TrainingError(f"{split}_data {path}: file not found; create it with "
                                "`python data/preprocess.py` or `aethermind data synth`")
        try:
            check_text_file(path)
        except ValueError as err:
            raise TrainingError(f"{split}_data {err}") from None


def build_shards(cfg: TrainConfig, path: str, split: str, tokenizer: Forge1Tokenizer) -> Path:
    """Tokenize + pack `path` once (rank 0 first, the others then hit the cache)."""
    from aethermind.data.jsonl import skipped_note
    from aethermind.data.pack import ensure_shards, read_index

    kwargs = dict(context_length=cfg.context_length, layout=cfg.layout, workers=cfg.num_workers)
    try:
        if dist.is_main():
            ensure_shards(path, tokenizer, cfg.cache_path / split, **kwargs)
        dist.barrier()
        out = ensure_shards(path, tokenizer, cfg.cache_path / split, **kwargs)
    except ValueError as err:  # DataFileError: UTF-16, binary, invalid UTF-8
        raise TrainingError(f"{split}_data {err}") from None
    index = read_index(out)
    if index["malformed_lines"] and dist.is_main():
        warnings.warn(f"{split}_data: " + skipped_note(path, index["malformed_first"],
                                                       index["malformed_lines"]), stacklevel=2)
    return out


def check_resumable(state: dict[str, Any], path: Path, variant: str,
                    tokenizer: Forge1Tokenizer, optimizer: str = "adamw") -> None:
    """Refuse to continue a run with a different model size, tokenizer or optimizer."""
    saved = state["config"]
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


def model_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, fsdp: bool
                ) -> tuple[dict, dict | None]:
    """Full (unsharded) model and optimizer state dicts; under FSDP a collective, on the CPU."""
    if fsdp:
        from torch.distributed.checkpoint import state_dict as dcp

        options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
        if optimizer is None:
            return dcp.get_model_state_dict(model, options=options), None
        return dcp.get_state_dict(model, optimizer, options=options)
    return dist.unwrap(model).state_dict(), optimizer and optimizer.state_dict()


def load_model_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        return
    dist.unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def no_sync(model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def _restore():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return _restore()
    return contextlib.nullcontext()


def loss_totals(model: torch.nn.Module, loader: Any, device: torch.device, *,
                max_batches: int | None = None, autocast: Any = None, pin: bool = False
                ) -> torch.Tensor:
    """[summed loss, loss tokens] over the loader's first `max_batches` batches (all if None),
    from the start of its first epoch. The one validation-loss loop: training's periodic
    evaluation and `aethermind evaluate` both call it on a `BatchLoader` of `pack` shards."""
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
                totals[0] += compute_loss(model, tokens, targets, doc_ids).double()
            totals[1] += (targets != -100).sum()
    model.train(was_training)
    return totals


def evaluate(model: torch.nn.Module, loader: Any, cfg: TrainConfig, ctx: dist.DistContext,
             autocast: Any) -> float:
    """Token-weighted validation loss over the first `eval_batches` batches, split over ranks
    (the same rows as one process would see, so K processes report the same number)."""
    totals = loss_totals(model, loader, ctx.device, autocast=autocast, pin=cfg.pin_memory,
                         max_batches=max(1, cfg.eval_batches // ctx.world_size))
    dist.all_reduce_sum(totals)
    return (totals[0] / totals[1].clamp(min=1)).item()


def open_loader(shards: Path, cfg: TrainConfig, ctx: dist.DistContext, *, shuffle: bool,
                split: str, path: str) -> Any:
    """A BatchLoader over `shards`, or None for an empty split. Fewer samples than one global
    batch: batches keep the tail (shorter, or wrapped across processes) with a note."""
    from aethermind.data.loader import BatchLoader
    from aethermind.data.pack import read_index

    n, glob = read_index(shards)["n_samples"], cfg.batch_size * ctx.world_size
    if n == 0:
        return None
    small = n < glob
    if small and split == "train":
        warnings.warn(f"train_data {path} packs into only {n} sample(s) of {cfg.context_length} "
                      f"tokens, fewer than a batch of {glob}: each batch holds all of them (add "
                      "data or lower batch_size for real training)", stacklevel=2)
    return BatchLoader(shards, cfg.batch_size, seed=cfg.seed, shuffle=shuffle, rank=ctx.rank,
                       world_size=ctx.world_size, loss_on_all_tokens=cfg.loss_on_all_tokens,
                       drop_last=split == "train" and not small)


def to_device(batch: dict[str, Any], device: torch.device, pin: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = torch.as_tensor(t)
        if pin and device.type == "cuda":
            t = t.pin_memory()
        return t.to(device, non_blocking=pin)

    return move(batch["tokens"]), move(batch["targets"]), move(batch.get("doc_ids"))


def _micro_batches(loader: Any):
    """Endless stream of micro-batches across epochs (the loader tracks epoch and offset)."""
    while True:
        yield from loader


# --- the loop -------------------------------------------------------------------------------
def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Train per `cfg`; returns {status, step, losses, val_loss, final_model, ...}.

    `stop_after` ends this call after that many optimizer steps, exactly as SIGINT would
    (checkpoint, then return with status "interrupted"); tests and time-boxed sessions use it.
    The output folder is locked for the run (a second run there is refused). A fresh run in a
    folder holding another run's checkpoints is refused unless `resume` (continue it) or
    `overwrite` (delete them first).
    """
    from aethermind.runtime.runlock import LockedError, OutputLock

    _preflight(cfg)  # before the lock creates the output folder: a refused run leaves nothing
    lock = OutputLock(cfg.output_dir) if dist.is_main() else contextlib.nullcontext()
    try:
        lock.__enter__()
    except LockedError as err:
        raise TrainingError(str(err)) from None
    try:
        return _train(cfg, resume=resume, stop_after=stop_after, overwrite=overwrite)
    finally:
        lock.__exit__(None, None, None)


def _preflight(cfg: TrainConfig) -> None:
    """Checks that need no work done yet, so a bad config fails before anything is written."""
    if cfg.variant is None:
        raise ConfigError("no variant: pass --variant " + "|".join(VARIANTS) +
                          " or set variant: in the config")
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise TrainingError("tensorboard: true needs the tensorboard package: "
                            "pip install tensorboard (or set tensorboard: false)")


def _claim_checkpoint_dir(ckpt_dir: Path, resume: bool, overwrite: bool) -> None:
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


def _train(cfg: TrainConfig, *, resume: bool, stop_after: int | None, overwrite: bool
           ) -> dict[str, Any]:
    # ------------------------------------------------------------------ setup: device + seed
    ctx = dist.setup(cfg.device)
    precision = dist.resolve_precision(cfg.precision, ctx.device)
    if ctx.device.type == "cuda":  # the guide's troubleshooting tells users to look for this
        dist.log0("Using GPU: %s", torch.cuda.get_device_name(ctx.device))
    dist.seed_everything(cfg.seed, 0)  # same init on every rank; data is sharded by the loader
    out_dir, ckpt_dir = Path(cfg.output_dir), cfg.checkpoint_path
    main_proc = dist.is_main()
    if ctx.world_size > 1 and cfg.gradient_accumulation_steps % ctx.world_size:
        raise ConfigError(f"config key 'gradient_accumulation_steps' has value "
                          f"{cfg.gradient_accumulation_steps}: must be a multiple of the "
                          f"{ctx.world_size} processes, which keeps the global batch")
    accum = cfg.gradient_accumulation_steps // ctx.world_size  # per process
    if main_proc:
        _claim_checkpoint_dir(ckpt_dir, resume, overwrite)
    dist.barrier()
    # ------------------------------------------------------------------ setup: tokenizer + data
    _check_data_files(cfg)  # before a tokenizer is trained or anything is packed
    tokenizer = load_tokenizer(cfg)
    model_cfg = Forge1Config.from_variant(cfg.variant,
                                          vocab_size=tokenizer.get_vocab_size_padded())
    if cfg.context_length > model_cfg.max_seq_len:
        raise ConfigError(f"config key 'context_length' has value {cfg.context_length}: the "
                          f"{cfg.variant} variant allows at most {model_cfg.max_seq_len}")
    found = ckpt.latest_valid(ckpt_dir) if resume else None
    if found is not None:  # refuse a mismatched resume before any expensive work
        check_resumable(found[1], found[0], cfg.variant, tokenizer, cfg.optimizer)
    elif resume:
        warnings.warn(f"--resume: no valid checkpoint in {ckpt_dir}; starting from step 0",
                      stacklevel=2)
    train_shards = build_shards(cfg, cfg.train_data, "train", tokenizer)
    val_shards = build_shards(cfg, cfg.val_data, "val", tokenizer) if cfg.val_data else None
    loader = open_loader(train_shards, cfg, ctx, shuffle=True, split="train",
                         path=cfg.train_data)
    if loader is None:
        raise TrainingError(f"train_data {cfg.train_data}: no usable training text (the file "
                            "is empty or every line is malformed); expected JSONL lines like "
                            '{"text": "..."}')
    val_loader = None
    if val_shards is not None:  # built once, reused at every evaluation
        val_loader = open_loader(val_shards, cfg, ctx, shuffle=False, split="val",
                                 path=cfg.val_data)
        if val_loader is None:
            warnings.warn(f"val_data {cfg.val_data}: no usable samples; training continues "
                          "without validation", stacklevel=2)
    steps_per_epoch = max(1, len(loader) // accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    # ------------------------------------------------------------------ setup: model + optimizer
    model = Forge1Model(model_cfg).to(ctx.device)
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    model.attention_backend = cfg.attention
    wrapped = torch.compile(model) if cfg.compile else model
    wrapped = dist.wrap_model(wrapped, ctx, fsdp=cfg.fsdp)
    # After wrapping: FSDP2 swaps parameters for sharded DTensors, which the optimizer must hold.
    optimizer = build_optimizer(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2),
                                fused=None if not cfg.fsdp else False, name=cfg.optimizer)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    autocast = torch.autocast(ctx.device.type, dtype=amp_dtype or torch.float32,
                              enabled=amp_dtype is not None)
    # ------------------------------------------------------------------ setup: resume
    step, rng = 0, None
    if found is not None:
        path, state = found
        found = None  # let the state be freed once it is loaded
        load_model_state(wrapped, optimizer, state, cfg.fsdp)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        try:
            loader.load_state_dict(state["loader"])
        except ValueError as err:  # e.g. another number of processes or another data file
            raise TrainingError(f"cannot resume from {path}: {err}") from None
        step, rng = state["step"], state["rng"]
        dist.log0("resumed from %s (step %d)", path, step)
        del state
    if main_proc:
        atomic_text(dump_yaml(cfg), ckpt_dir / "train_config.yaml")
    if rng is not None:
        ckpt.set_rng_state(rng)  # last, after everything that draws random numbers at setup
    dist.log0("Forge-1 %s: %.1fM parameters, %s, %s, %d steps (%d per epoch), "
              "global batch %d x %d tokens", cfg.variant, model.num_parameters() / 1e6,
              ctx.device, precision, total_steps, steps_per_epoch,
              cfg.batch_size * cfg.gradient_accumulation_steps, cfg.context_length)
    # ------------------------------------------------------------------ setup: dashboard
    metrics_out = MetricsWriter(out_dir / "metrics.jsonl",
                                resume_step=step if resume else None) if main_proc else None
    dash = Dashboard(total_steps, out_dir, mode=cfg.dashboard, log_every=cfg.log_every,
                     start_step=step, tensorboard=cfg.tensorboard, enabled=main_proc)

    def save(at_step: int) -> None:
        model_sd, optim_sd = model_state(wrapped, optimizer, cfg.fsdp)
        if not main_proc:
            return
        state = {"step": at_step, "model": model_sd, "optimizer": optim_sd,
                 "scaler": scaler.state_dict(), "loader": loader.state_dict(),
                 "rng": ckpt.rng_state(), "config": cfg.to_dict(),
                 "model_config": model_cfg.to_dict(),
                 "tokenizer_fingerprint": tokenizer.fingerprint()}
        try:
            path = ckpt.save_checkpoint(state, ckpt_dir, at_step, keep=cfg.keep_checkpoints)
        except OSError as err:  # disk full, read-only: the previous checkpoint is untouched
            previous = ckpt.list_checkpoints(ckpt_dir)
            kept = f"the last checkpoint {previous[-1]} is intact" if previous else \
                "no earlier checkpoint exists"
            raise TrainingError(f"cannot write the step {at_step} checkpoint to {ckpt_dir} "
                                f"({err.strerror or err}); {kept}: free space or choose "
                                "another checkpoint_dir, then --resume") from None
        dash.message(f"checkpoint saved: {path}")

    # ------------------------------------------------------------------ loop
    warmup = warmup_steps_for(total_steps, cfg.warmup_ratio)
    batches = _micro_batches(loader)
    losses: list[float] = []
    val_loss = None
    status, bad_steps, last_saved, start_step = "completed", 0, step, step
    wrapped.train()
    with StopFlag() as stop, contextlib.closing(dash):  # the live view stops even on errors
        while step < total_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, max_lr=cfg.learning_rate, warmup_steps=warmup,
                       total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio,
                       schedule=cfg.lr_scheduler)
            set_lr(optimizer, lr)
            micro = [to_device(next(batches), ctx.device, cfg.pin_memory) for _ in range(accum)]
            # Normalise by the step's global count of loss tokens (not per micro-batch means).
            counts = torch.stack([(t != -100).sum() for _, t, _ in micro]).sum().double()
            n_tokens = dist.all_reduce_sum(counts).clamp(min=1)
            loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
            for i, (tokens, targets, doc_ids) in enumerate(micro):
                with no_sync(wrapped, i == accum - 1), autocast:
                    loss = compute_loss(wrapped, tokens, targets, doc_ids)
                scaler.scale(loss * (ctx.world_size / n_tokens)).backward()
                loss_sum += loss.detach().double()
            step_loss = (dist.all_reduce_sum(loss_sum) / n_tokens).item()
            grad_norm = float("nan")
            if math.isfinite(step_loss):
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.max_grad_norm or float("inf")))
            finite = math.isfinite(step_loss) and (math.isfinite(grad_norm) or
                                                   precision == "fp16")  # scaler skips inf
            if finite:
                scaler.step(optimizer)
                scaler.update()
                bad_steps = 0
            else:
                bad_steps += 1
                dash.message(f"step {step + 1}: non-finite loss/gradients ({step_loss}); step "
                             f"skipped ({bad_steps} in a row, stop at {cfg.max_bad_steps})")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if bad_steps >= cfg.max_bad_steps:
                status = "diverged"
                break
            # -------------------------------------------------------------- log / eval / save
            losses.append(step_loss)
            now = time.perf_counter()
            tokens_seen = cfg.batch_size * cfg.context_length * accum * ctx.world_size
            record = {"step": step, "loss": step_loss if finite else None, "lr": lr,
                      "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                      "tokens_per_s": tokens_seen / (now - t0), "steps_per_s": 1 / (now - t0),
                      "epoch": loader.epoch}
            if val_loader is not None and (step == total_steps or (
                    cfg.eval_every and step % cfg.eval_every == 0)):
                eval_model = wrapped if cfg.fsdp else dist.unwrap(wrapped)
                val_loss = evaluate(eval_model, val_loader, cfg, ctx, autocast)
                record["val_loss"] = val_loss
            if metrics_out is not None:
                metrics_out.write(record)
            dash.update({**record, "memory": memory_text(ctx.device)})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save(step)
                last_saved = step
            if ctx.world_size > 1:  # every rank must agree to stop at the same step
                flag = torch.tensor(float(stop.signum is not None), device=ctx.device)
                if dist.all_reduce_sum(flag).item() and stop.signum is None:
                    stop.signum = signal.SIGTERM
            asked = stop.signum is not None or (stop_after and step - start_step >= stop_after)
            if asked and step < total_steps:  # on the last step, finishing is the clean exit
                status = "interrupted"
                break
    # ------------------------------------------------------------------ teardown
    final_path = None
    if status != "diverged" and last_saved != step:
        save(step)
    if status == "completed":
        final_sd = model_state(wrapped, None, cfg.fsdp)[0]  # a collective under FSDP
        if main_proc:
            final_path = write_final(final_sd, model_cfg, tokenizer, final_dir(out_dir),
                                     cfg.variant)
            dash.message(f"final model: {final_path}")
    if metrics_out is not None:
        metrics_out.close()
        plot_losses(out_dir / "metrics.jsonl", out_dir / "loss_curve.png")
    dist.barrier()
    result = {"status": status, "step": step, "losses": losses, "val_loss": val_loss,
              "final_model": final_path, "signal": stop.signum, "total_steps": total_steps}
    if status == "diverged":
        result["message"] = (f"training stopped at step {step}: {bad_steps} non-finite losses "
                             f"in a row; the last good checkpoint is in {ckpt_dir} (lower "
                             "learning_rate or use bf16/fp32, then --resume)")
    return result


# --- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training YAML, e.g. configs/local_config.yaml")
    parser.add_argument("--variant", choices=VARIANTS, help="model size (default: the config's)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest valid checkpoint in checkpoint_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="start fresh even though checkpoint_dir holds another run's "
                        "checkpoints (deletes them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_steps=20 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dist.setup_logging()
    with dist.plain_warnings():
        try:
            cfg = load_config(args.config, args.set, args.variant)
            result = train(cfg, resume=args.resume, overwrite=args.overwrite)
        except (ConfigError, TrainingError) as err:
            print(f"aethermind train: {err}", file=sys.stderr)
            return 2 if isinstance(err, ConfigError) else 1
        except OSError as err:  # e.g. a read-only or full output folder during set-up
            print(f"aethermind train: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # during set-up/packing, or a second Ctrl-C mid-step
            print("aethermind train: stopped at once; checkpoints written so far are intact "
                  "(continue with --resume)", file=sys.stderr)
            return 130
        finally:
            dist.teardown()
    if result["status"] == "diverged":
        print(f"aethermind train: {result['message']}", file=sys.stderr)
        return 1
    if result["status"] == "interrupted" and result["signal"] is not None:
        dist.log0("interrupted at step %d: checkpoint saved; continue with --resume",
                  result["step"])
        return 128 + int(result["signal"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
