"""A training run's inputs: its tokenizer, token shards and batch loaders, checked up front.

Turns the `TrainConfig` data keys into what the loop consumes: the tokenizer (bundled, trained
once and cached under output_dir, or a directory), `pack` shards built once per rank group
(rank 0 first, the others then hit the cache) and `BatchLoader`s sharded over the processes.
`load_init` reads the `init_from` weights through `artifacts.loading.load_model` (the one
loader: final_model/, .pt, Hugging Face Llama folder) and checks them against the run.
Every problem with the user's files becomes a one-line `TrainingError`. Knows nothing about
optimizers.
Usage: `loader = open_loader(build_shards(cfg, cfg.train_data, "train", tok), cfg, ctx, ...)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aethermind.artifacts.layout import TOKENIZER_DIR
from aethermind.artifacts.loading import LoadError, find_checkpoint, load_model
from aethermind.data.jsonl import check_text_file, skipped_note
from aethermind.data.loader import BatchLoader
from aethermind.data.pack import ensure_shards, read_index
from aethermind.data.tokenizer_train import read_jsonl_texts
from aethermind.model.transformer import Forge1Model
from aethermind.runtime import dist
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.config import TrainConfig
from aethermind.training.errors import TrainingError


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
            dist.log0("training a %d-token tokenizer on %s", cfg.tokenizer_vocab_size,
                      cfg.train_data)
            tok = Forge1Tokenizer.train(read_jsonl_texts(Path(cfg.train_data), "text"),
                                        cfg.tokenizer_vocab_size)
            tok.save(tok_dir)
        dist.barrier()
        return Forge1Tokenizer(tok_dir)
    except ValueError as err:  # a corrupt cached tokenizer.json, unreadable train_data
        raise TrainingError(f"tokenizer: {err}") from None


def check_init_source(cfg: TrainConfig) -> Path:
    """The `init_from` file or folder exists and is a model (no weights read yet)."""
    assert cfg.init_from is not None
    try:
        return find_checkpoint(cfg.init_from)
    except LoadError as err:
        raise TrainingError(f"init_from {cfg.init_from}: {err}") from None


def load_init(cfg: TrainConfig, tokenizer: Forge1Tokenizer) -> Forge1Model:
    """The `init_from` model (on the CPU), refused in one line when it is missing, not a Llama,
    not the configured variant's shape, or trained with another tokenizer than the run's."""
    source = check_init_source(cfg)
    try:
        with warnings.catch_warnings():  # its own tokenizer wins; compared just below
            warnings.filterwarnings("ignore", message="ignoring the given tokenizer")
            model, tok = load_model(source, cfg.variant, tokenizer)
    except LoadError as err:
        raise TrainingError(f"init_from {cfg.init_from}: {err}") from None
    if tok.fingerprint() != tokenizer.fingerprint():
        own = source if source.is_dir() else source.parent / TOKENIZER_DIR
        fix = f"set tokenizer: {own}" if (own / "tokenizer.json").is_file() else \
            "set tokenizer: to the folder of the tokenizer it was trained with"
        raise TrainingError(f"init_from {cfg.init_from}: its tokenizer ({tok.fingerprint()}) "
                            f"is not this run's (tokenizer: {cfg.tokenizer}, "
                            f"{tokenizer.fingerprint()}); {fix}")
    return model


def check_data_files(cfg: TrainConfig) -> None:
    """Every data file exists and is UTF-8 text, or one line says which is not and why."""
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


def open_loader(shards: Path, cfg: TrainConfig, ctx: dist.DistContext, *, shuffle: bool,
                split: str, path: str) -> BatchLoader | None:
    """A BatchLoader over `shards`, or None for an empty split. Fewer samples than one global
    batch: batches keep the tail (shorter, or wrapped across processes) with a note."""
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


def micro_batches(loader: BatchLoader) -> Iterator[dict[str, Any]]:
    """Endless stream of micro-batches across epochs (the loader tracks epoch and offset)."""
    while True:
        yield from loader
