"""`aethermind train`: the one training loop (guide sections 4 and 10), resumable and crash-safe.

`train(cfg)` runs `setup` (device, seed, tokenizer, data, model, optimizer, resume, dashboard)
into a `Run`, then `run_loop` (lr, micro-batch accumulation, clip, step, log, eval, save), then
`teardown` (final checkpoint, final_model/ export, loss PNG), and returns metrics. The same code
runs as one process or as K under `torchrun --nproc_per_node=K` (DDP, or FSDP2 with `fsdp: true`).
Loss: summed cross-entropy over loss-bearing tokens divided by the step's global count of such
tokens, so K processes x A micro-batches give exactly the gradient of one big batch.
The run's inputs (tokenizer, shards, loaders, the `init_from` weights) come from `inputs.py`,
what a checkpoint holds and the resume checks from `state.py`, LoRA adapters from `lora.py`,
stopping on signals from `signals.py`, the validation-loss loop from `evaluation.loss`.
`init_from` starts from existing weights with a fresh optimizer, schedule and data position;
the shape is the source's (`variant`, if given, must match it). `--resume` wins over it when
the run folder holds a checkpoint: a full fine-tune then never reads init_from again, a LoRA
run reads only its frozen base weights from it (checkpoints hold the adapters). A LoRA run
writes the merged weights to final_model/ and the PEFT adapter to <output_dir>/adapter/.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from aethermind.artifacts import checkpoint as ckpt
from aethermind.artifacts.exported import variant_of
from aethermind.artifacts.layout import final_dir, write_final
from aethermind.data.loader import BatchLoader, to_device
from aethermind.evaluation.loss import loss_totals
from aethermind.model.config import VARIANTS, Forge1Config
from aethermind.model.losses import summed_loss as compute_loss  # tests patch this name
from aethermind.model.transformer import Forge1Model
from aethermind.runtime import dist
from aethermind.runtime.files import atomic_text
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training import lora
from aethermind.training.config import (
    ConfigError,
    TrainConfig,
    add_run_args,
    dump_yaml,
    load_config,
)
from aethermind.training.dashboard import Dashboard, MetricsWriter, memory_text, plot_losses
from aethermind.training.errors import TrainingError
from aethermind.training.inputs import (
    build_shards,  # tests patch this name
    check_data_files,
    check_init_source,
    load_init,
    load_tokenizer,
    micro_batches,
    open_loader,
)
from aethermind.training.optim import build_optimizer, lr_at, set_lr, warmup_steps_for
from aethermind.training.signals import StopFlag
from aethermind.training.state import (
    check_resumable,
    claim_checkpoint_dir,
    load_model_state,
    model_state,
    output_lock,
)

Status = Literal["completed", "interrupted", "diverged"]


# --- run state --------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything `setup` builds for one process of a run; the loop and teardown read it."""

    cfg: TrainConfig
    ctx: dist.DistContext
    precision: str  # resolved: fp16/bf16 fall back to fp32 on the CPU
    accum: int  # micro-batches per optimizer step in this process
    tokenizer: Forge1Tokenizer
    model_cfg: Forge1Config
    variant: str  # names final_model's weights: the config's, else the shape's preset or custom
    model: Forge1Model  # the bare module: parameters to clip, counts to log
    wrapped: torch.nn.Module  # compiled and/or DDP/FSDP-wrapped: what forward/backward run
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: torch.autocast
    loader: BatchLoader
    val_loader: BatchLoader | None
    total_steps: int
    step: int  # optimizer steps done: the resume point after setup, then advanced by the loop
    dash: Dashboard
    metrics: MetricsWriter | None  # rank 0 only


@dataclass
class Progress:
    """What the loop leaves for teardown."""

    status: Status = "completed"
    losses: list[float] = field(default_factory=list)  # this call's steps, skipped ones included
    val_loss: float | None = None  # the latest
    bad_steps: int = 0  # non-finite steps in a row
    last_saved: int = 0  # step of the newest checkpoint


# --- setup ------------------------------------------------------------------------------------
def setup(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Run:
    """Device, seed, data, model, optimizer, resume, dashboard. The order is part of the
    contract: the model draws its init from the seeded RNG, and a resumed run's RNG state is
    restored last, so resumed and uninterrupted runs give the same losses."""
    ctx = dist.setup(cfg.device)
    precision = dist.resolve_precision(cfg.precision, ctx.device)
    if ctx.device.type == "cuda":  # the guide's troubleshooting tells users to look for this
        dist.log0("Using GPU: %s", torch.cuda.get_device_name(ctx.device))
    dist.seed_everything(cfg.seed, 0)  # same init on every rank; data is sharded by the loader
    if ctx.world_size > 1 and cfg.gradient_accumulation_steps % ctx.world_size:
        raise ConfigError(f"config key 'gradient_accumulation_steps' has value "
                          f"{cfg.gradient_accumulation_steps}: must be a multiple of the "
                          f"{ctx.world_size} processes, which keeps the global batch")
    accum = cfg.gradient_accumulation_steps // ctx.world_size  # per process
    if dist.is_main():
        claim_checkpoint_dir(cfg.checkpoint_path, resume, overwrite)
    dist.barrier()
    # ------------------------------------------------------------------ tokenizer + data
    check_data_files(cfg)  # before a tokenizer is trained or anything is packed
    tokenizer = load_tokenizer(cfg)
    found = ckpt.latest_valid(cfg.checkpoint_path) if resume else None
    if found is not None:  # refuse a mismatched resume before any expensive work
        check_resumable(found[1], found[0], cfg.variant, tokenizer, cfg.optimizer,
                        cfg.lora and cfg.lora.to_dict(), cfg.init_from)
    # A resumed full fine-tune must not read init_from again; LoRA needs its frozen base.
    init = load_init(cfg, tokenizer) if cfg.init_from and (
        found is None or cfg.lora is not None) else None
    if init is not None:
        model_cfg = init.config
    elif cfg.init_from is not None:  # resuming: the shape the checkpoint was trained with
        model_cfg = Forge1Config.from_dict(found[1]["model_config"])
    else:
        model_cfg = Forge1Config.from_variant(cfg.variant,
                                              vocab_size=tokenizer.get_vocab_size_padded())
    variant = cfg.variant or variant_of(model_cfg)
    if cfg.context_length > model_cfg.max_seq_len:
        raise ConfigError(f"config key 'context_length' has value {cfg.context_length}: the "
                          f"{variant} model allows at most {model_cfg.max_seq_len}")
    if found is None and resume:
        warnings.warn(f"--resume: no valid checkpoint in {cfg.checkpoint_path}; starting from "
                      "step 0", stacklevel=3)
    loader, val_loader = _open_data(cfg, ctx, tokenizer)
    steps_per_epoch = max(1, len(loader) // accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    # ------------------------------------------------------------------ model + optimizer
    model, wrapped, optimizer = _build_model(cfg, ctx, model_cfg, init)
    init = None  # the model holds the weights now
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    autocast = torch.autocast(ctx.device.type, dtype=amp_dtype or torch.float32,
                              enabled=amp_dtype is not None)  # a no-op context in fp32
    # ------------------------------------------------------------------ resume
    step, rng = 0, None
    if found is not None:
        step, rng = _resume(*found, cfg, wrapped, optimizer, scaler, loader)
        found = None  # let the checkpoint be freed once it is loaded
    if dist.is_main():
        atomic_text(dump_yaml(cfg), cfg.checkpoint_path / "train_config.yaml")
    if rng is not None:
        ckpt.set_rng_state(rng)  # last, after everything that draws random numbers at setup
    dist.log0("Forge-1 %s: %.1fM parameters, %s, %s, %d steps (%d per epoch), "
              "global batch %d x %d tokens", variant, model.num_parameters() / 1e6,
              ctx.device, precision, total_steps, steps_per_epoch,
              cfg.batch_size * cfg.gradient_accumulation_steps, cfg.context_length)
    if cfg.init_from is not None:
        dist.log0("initialised from %s%s", cfg.init_from,
                  " (weights from the resumed checkpoint)" if step and cfg.lora is None else "")
    if cfg.lora is not None:
        n = lora.trainable_count(model)
        dist.log0("LoRA r=%d alpha=%g on %s: %.2fM trainable parameters (%.2f%%)", cfg.lora.r,
                  cfg.lora.alpha, ",".join(cfg.lora.targets), n / 1e6,
                  100 * n / model.num_parameters())
    # ------------------------------------------------------------------ dashboard
    out_dir, main_proc = Path(cfg.output_dir), dist.is_main()
    metrics = MetricsWriter(out_dir / "metrics.jsonl",
                            resume_step=step if resume else None) if main_proc else None
    dash = Dashboard(total_steps, out_dir, mode=cfg.dashboard, log_every=cfg.log_every,
                     start_step=step, tensorboard=cfg.tensorboard, enabled=main_proc)
    return Run(cfg=cfg, ctx=ctx, precision=precision, accum=accum, tokenizer=tokenizer,
               model_cfg=model_cfg, variant=variant, model=model, wrapped=wrapped,
               optimizer=optimizer, scaler=scaler, autocast=autocast, loader=loader,
               val_loader=val_loader, total_steps=total_steps, step=step, dash=dash,
               metrics=metrics)


def _build_model(cfg: TrainConfig, ctx: dist.DistContext, model_cfg: Forge1Config,
                 init: Forge1Model | None = None
                 ) -> tuple[Forge1Model, torch.nn.Module, torch.optim.Optimizer]:
    """The model (`init`'s weights, else initialised from the seeded RNG; with LoRA adapters
    on it when configured), its compiled/wrapped form, its optimizer (trainable parameters)."""
    model = (init if init is not None else Forge1Model(model_cfg)).to(ctx.device)
    if cfg.lora is not None:
        lora.add_adapters(model, cfg.lora)
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    model.attention_backend = cfg.attention
    compile = dist.resolve_compile(cfg.compile, ctx.device)
    wrapped = torch.compile(model) if compile is True else model
    if compile == "blocks":  # in place: the state dict keeps its keys
        for block in model.layers:
            block.compile()
    wrapped = dist.wrap_model(wrapped, ctx, fsdp=cfg.fsdp)
    # After wrapping: FSDP2 swaps parameters for sharded DTensors, which the optimizer must hold.
    optimizer = build_optimizer(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2),
                                fused=None if not cfg.fsdp else False, name=cfg.optimizer)
    return model, wrapped, optimizer


def _open_data(cfg: TrainConfig, ctx: dist.DistContext, tokenizer: Forge1Tokenizer
               ) -> tuple[BatchLoader, BatchLoader | None]:
    """Train and validation loaders over shards packed once (validation: None if absent)."""
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
                          "without validation", stacklevel=4)
    return loader, val_loader


def _resume(path: Path, state: dict[str, Any], cfg: TrainConfig, wrapped: torch.nn.Module,
            optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            loader: BatchLoader) -> tuple[int, Any]:
    """Load a checkpoint into the run; returns (its step, its RNG state to restore last)."""
    load_model_state(wrapped, optimizer, state, cfg.fsdp)
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    try:
        loader.load_state_dict(state["loader"])
    except ValueError as err:  # e.g. another number of processes or another data file
        raise TrainingError(f"cannot resume from {path}: {err}") from None
    dist.log0("resumed from %s (step %d)", path, state["step"])
    return state["step"], state["rng"]


def save(run: Run, at_step: int) -> None:
    """Checkpoint the run after `at_step` steps (a collective under FSDP; rank 0 writes)."""
    cfg = run.cfg
    model_sd, optim_sd = model_state(run.wrapped, run.optimizer, cfg.fsdp,
                                     trainable_only=cfg.lora is not None)
    if not dist.is_main():
        return
    state = {"step": at_step, "model": model_sd, "optimizer": optim_sd,
             "scaler": run.scaler.state_dict(), "loader": run.loader.state_dict(),
             "rng": ckpt.rng_state(), "config": cfg.to_dict(),
             "model_config": run.model_cfg.to_dict(),
             "tokenizer_fingerprint": run.tokenizer.fingerprint()}
    ckpt_dir = cfg.checkpoint_path
    try:
        path = ckpt.save_checkpoint(state, ckpt_dir, at_step, keep=cfg.keep_checkpoints)
    except OSError as err:  # disk full, read-only: the previous checkpoint is untouched
        previous = ckpt.list_checkpoints(ckpt_dir)
        kept = f"the last checkpoint {previous[-1]} is intact" if previous else \
            "no earlier checkpoint exists"
        raise TrainingError(f"cannot write the step {at_step} checkpoint to {ckpt_dir} "
                            f"({err.strerror or err}); {kept}: free space or choose "
                            "another checkpoint_dir, then --resume") from None
    run.dash.message(f"checkpoint saved: {path}")


# --- the loop ---------------------------------------------------------------------------------
def evaluate(model: torch.nn.Module, loader: BatchLoader, cfg: TrainConfig,
             ctx: dist.DistContext, autocast: Any) -> float:
    """Token-weighted validation loss over the first `eval_batches` batches, split over ranks
    (the same rows as one process would see, so K processes report the same number)."""
    totals = loss_totals(model, loader, ctx.device, autocast=autocast, pin=cfg.pin_memory,
                         max_batches=max(1, cfg.eval_batches // ctx.world_size))
    dist.all_reduce_sum(totals)
    return (totals[0] / totals[1].clamp(min=1)).item()


def run_loop(run: Run, stop: StopFlag, stop_after: int | None = None) -> Progress:
    """Optimizer steps from `run.step` until `total_steps`, divergence (`max_bad_steps`
    non-finite steps in a row), a signal, or `stop_after` steps of this call."""
    cfg, ctx = run.cfg, run.ctx
    warmup = warmup_steps_for(run.total_steps, cfg.warmup_ratio)
    batches = micro_batches(run.loader)
    progress = Progress(last_saved=run.step)
    start_step = run.step
    run.wrapped.train()
    while run.step < run.total_steps:
        t0 = time.perf_counter()
        lr = lr_at(run.step, max_lr=cfg.learning_rate, warmup_steps=warmup,
                   total_steps=run.total_steps, min_lr_ratio=cfg.min_lr_ratio,
                   schedule=cfg.lr_scheduler)
        set_lr(run.optimizer, lr)
        micro = [to_device(next(batches), ctx.device, cfg.pin_memory) for _ in range(run.accum)]
        step_loss = _accumulate_gradients(run, micro)
        grad_norm = float("nan")
        if math.isfinite(step_loss):
            run.scaler.unscale_(run.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                run.model.parameters(), cfg.max_grad_norm or float("inf")))
        finite = math.isfinite(step_loss) and (math.isfinite(grad_norm) or
                                               run.precision == "fp16")  # scaler skips inf
        if finite:
            run.scaler.step(run.optimizer)
            run.scaler.update()
            progress.bad_steps = 0
        else:
            progress.bad_steps += 1
            run.dash.message(f"step {run.step + 1}: non-finite loss/gradients ({step_loss}); "
                             f"step skipped ({progress.bad_steps} in a row, stop at "
                             f"{cfg.max_bad_steps})")
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        if progress.bad_steps >= cfg.max_bad_steps:
            progress.status = "diverged"
            break
        # -------------------------------------------------------------- log / eval / save
        progress.losses.append(step_loss)
        seconds = time.perf_counter() - t0
        tokens_seen = cfg.batch_size * cfg.context_length * run.accum * ctx.world_size
        _log_step(run, progress, {
            "step": run.step, "loss": step_loss if finite else None, "lr": lr,
            "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
            "tokens_per_s": tokens_seen / seconds, "steps_per_s": 1 / seconds,
            "epoch": run.loader.epoch})
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
            save(run, run.step)
            progress.last_saved = run.step
        asked = _stop_asked(run, stop) or (stop_after and run.step - start_step >= stop_after)
        if asked and run.step < run.total_steps:  # on the last step, finishing is the clean exit
            progress.status = "interrupted"
            break
    return progress


def _accumulate_gradients(run: Run, micro: list[tuple]) -> float:
    """Forward and backward over the step's micro-batches; returns the step's mean loss.
    Normalised by the step's global count of loss tokens (not per micro-batch means)."""
    counts = torch.stack([(t != -100).sum() for _, t, _ in micro]).sum().double()
    n_tokens = dist.all_reduce_sum(counts).clamp(min=1)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.ctx.device)
    for i, (tokens, targets, doc_ids) in enumerate(micro):
        with dist.no_sync(run.wrapped, i == run.accum - 1), run.autocast:
            loss = compute_loss(run.wrapped, tokens, targets, doc_ids)
        run.scaler.scale(loss * (run.ctx.world_size / n_tokens)).backward()
        loss_sum += loss.detach().double()
    return (dist.all_reduce_sum(loss_sum) / n_tokens).item()


def _log_step(run: Run, progress: Progress, record: dict[str, Any]) -> None:
    """Validation loss when due (every `eval_every` steps and at the end), then the metrics
    line and the dashboard."""
    cfg = run.cfg
    if run.val_loader is not None and (run.step == run.total_steps or (
            cfg.eval_every and run.step % cfg.eval_every == 0)):
        eval_model = run.wrapped if cfg.fsdp else dist.unwrap(run.wrapped)
        progress.val_loss = evaluate(eval_model, run.val_loader, cfg, run.ctx, run.autocast)
        record["val_loss"] = progress.val_loss
    if run.metrics is not None:
        run.metrics.write(record)
    run.dash.update({**record, "memory": memory_text(run.ctx.device)})


def _stop_asked(run: Run, stop: StopFlag) -> bool:
    """Whether a signal asked to stop; under several processes, whether any rank got one
    (every rank must stop at the same step)."""
    if run.ctx.world_size > 1:
        flag = torch.tensor(float(stop.signum is not None), device=run.ctx.device)
        if dist.all_reduce_sum(flag).item() and stop.signum is None:
            stop.signum = signal.SIGTERM
    return stop.signum is not None


# --- teardown ---------------------------------------------------------------------------------
def teardown(run: Run, progress: Progress, signum: int | None) -> dict[str, Any]:
    """Final checkpoint (unless just saved or diverged), final_model/ export when completed,
    metrics closed and plotted; returns the result `train` hands back."""
    cfg, out_dir = run.cfg, Path(run.cfg.output_dir)
    final_path = None
    if progress.status != "diverged" and progress.last_saved != run.step:
        save(run, run.step)
    if progress.status == "completed":
        final_sd = _final_state(run)  # a collective under FSDP
        if dist.is_main():
            final_path = write_final(final_sd, run.model_cfg, run.tokenizer, final_dir(out_dir),
                                     run.variant)
            if cfg.init_from is not None:  # provenance: config.json is the shape only
                atomic_text(dump_yaml(cfg), final_dir(out_dir) / "train_config.yaml")
            run.dash.message(f"final model: {final_path}")
            if cfg.lora is not None:
                adapter = lora.save_adapter(run.model, cfg.lora, out_dir / "adapter",
                                            base=cfg.init_from)
                run.dash.message(f"LoRA adapter (PEFT, HF names): {adapter}")
    if run.metrics is not None:
        run.metrics.close()
        plot_losses(out_dir / "metrics.jsonl", out_dir / "loss_curve.png")
    dist.barrier()
    result = {"status": progress.status, "step": run.step, "losses": progress.losses,
              "val_loss": progress.val_loss, "final_model": final_path, "signal": signum,
              "total_steps": run.total_steps}
    if progress.status == "diverged":
        result["message"] = (f"training stopped at step {run.step}: {progress.bad_steps} "
                             "non-finite losses in a row; the last good checkpoint is in "
                             f"{cfg.checkpoint_path} (lower learning_rate or use bf16/fp32, "
                             "then --resume)")
    return result


def _final_state(run: Run) -> dict[str, torch.Tensor]:
    """The weights final_model/ gets: the model's, or under LoRA the base with the adapters
    merged in (so chat, evaluate, export and serve need to know nothing about LoRA)."""
    if run.cfg.lora is None:
        return model_state(run.wrapped, None, run.cfg.fsdp)[0]
    return lora.merge(lora.base_state_dict(run.model), run.model_cfg,
                      *lora.adapter_tensors(run.model))


# --- entry ------------------------------------------------------------------------------------
def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Train per `cfg`; returns {status, step, losses, val_loss, final_model, ...}.

    `stop_after` ends this call after that many optimizer steps, exactly as SIGINT would
    (checkpoint, then return with status "interrupted"); tests and time-boxed sessions use it.
    The output folder is locked for the run (a second run there is refused). A fresh run in a
    folder holding another run's checkpoints is refused unless `resume` (continue it) or
    `overwrite` (delete them first).
    """
    _preflight(cfg, resume)  # before the lock creates the output folder: a refusal leaves nothing
    with output_lock(cfg.output_dir):
        run = setup(cfg, resume=resume, overwrite=overwrite)
        with StopFlag() as stop, contextlib.closing(run.dash):  # the live view stops on errors
            progress = run_loop(run, stop, stop_after)
        return teardown(run, progress, stop.signum)


def _preflight(cfg: TrainConfig, resume: bool) -> None:
    """Checks that need no work done yet, so a bad config fails before anything is written."""
    if cfg.variant is None and cfg.init_from is None:
        raise ConfigError("no variant: pass --variant " + "|".join(VARIANTS) +
                          " or set variant: in the config (or init_from:)")
    resuming = resume and ckpt.list_checkpoints(cfg.checkpoint_path)
    if cfg.init_from is not None and (not resuming or cfg.lora is not None):
        check_init_source(cfg)  # a missing source fails before anything is written
    if cfg.lora is not None and importlib.util.find_spec("peft") is None:
        raise TrainingError("lora: needs the peft package: pip install 'aethermind[lora]' "
                            "(or pip install peft)")
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise TrainingError("tensorboard: true needs the tensorboard package: "
                            "pip install tensorboard (or set tensorboard: false)")


# --- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training YAML, e.g. configs/local_config.yaml")
    parser.add_argument("--variant", choices=VARIANTS, help="model size (default: the config's)")
    add_run_args(parser, "checkpoint_dir")
    parser.add_argument("--init-from", metavar="PATH",
                        help="start from these weights (final_model/, .pt or HF Llama folder): "
                        "fresh optimizer, schedule and data position; --resume wins")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dist.setup_logging()
    with dist.plain_warnings():
        try:
            extra = [f"init_from={args.init_from}"] if args.init_from else []
            cfg = load_config(args.config, args.set + extra, args.variant)
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
