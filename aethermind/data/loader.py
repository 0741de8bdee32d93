"""BatchLoader: deterministic, resumable, rank-sharded batches read from `pack.py` memmap shards.

Samples are read straight from the memmaps (only the rows of a batch are ever in RAM). Order:
epoch e is a permutation drawn from `numpy.random.default_rng([seed, e])`, so it depends on
nothing but (seed, epoch). Each global batch of `batch_size * world_size` samples is split into
`world_size` disjoint slices; the tail that does not fill a global batch is skipped this epoch
(and lands elsewhere in the next permutation; `drop_last=False` wraps around instead), so every
rank gets the same number of batches.
`state_dict()` records (epoch, batches consumed in it); loading it resumes at the next batch
exactly, so a resumed run sees the same batches as an uninterrupted one.
Targets are the next token where the shard's loss mask is 1 (else -100); with
`loss_on_all_tokens` every non-pad next token is a target (pretraining-style).
`to_device(batch, device)` gives a batch's (tokens, targets, doc_ids) on the model's device.
Usage: `for batch in BatchLoader(shard_dir, 8, seed=0): model(batch["tokens"], batch["targets"],
doc_ids=batch["doc_ids"])`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aethermind.data.pack import StaleShardsError, read_index

IGNORE_INDEX = -100


class BatchLoader:
    def __init__(self, shard_dir: str | Path, batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 loss_on_all_tokens: bool = False, drop_last: bool = True,
                 tokenizer_fingerprint: str | None = None) -> None:
        """Open the shards in `shard_dir`. Pass `tokenizer_fingerprint` to refuse shards that
        were built with another tokenizer (their ids would mean different tokens).
        `drop_last=False` (small data, validation) keeps the tail: one process gets a shorter
        last batch; under several processes the last global batch is filled by wrapping around
        to the epoch's first samples, as DistributedSampler does."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        self.shard_dir = Path(shard_dir)
        self.index = read_index(self.shard_dir)
        found = self.index["tokenizer_fingerprint"]
        if tokenizer_fingerprint is not None and found != tokenizer_fingerprint:
            raise StaleShardsError(
                f"shards in {shard_dir} were built with tokenizer {found}, not "
                f"{tokenizer_fingerprint}: rebuild them (aethermind data pack) or delete the dir")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.loss_on_all_tokens, self.drop_last = loss_on_all_tokens, drop_last
        self.layout: str = self.index["layout"]
        self.n_samples: int = self.index["n_samples"]
        self._len, self._stride = self.index["sample_len"], self.index["sample_stride"]
        self.epoch, self.offset = 0, 0
        if len(self) == 0 or self.n_samples == 0:  # checked first: an empty file cannot be mapped
            raise ValueError(
                f"{shard_dir} holds {self.n_samples} samples, fewer than batch_size * world_size "
                f"= {batch_size * world_size}: use more data, a smaller batch or drop_last=False")
        dtype = np.dtype(self.index["dtype"])
        self._tokens = np.memmap(self.shard_dir / "tokens.bin", dtype=dtype, mode="r")
        self._mask = np.memmap(self.shard_dir / "mask.bin", dtype=np.uint8, mode="r")

    def __len__(self) -> int:
        """Batches per epoch for this rank (the same on every rank)."""
        glob = self.batch_size * self.world_size
        return self.n_samples // glob if self.drop_last else -(-self.n_samples // glob)

    def _order(self, epoch: int) -> np.ndarray:
        order = np.arange(self.n_samples) if not self.shuffle \
            else np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)
        need = len(self) * self.batch_size * self.world_size
        if self.world_size == 1 or need <= len(order):
            return order  # one process: the last batch is just shorter, every sample once
        return np.resize(order, need)  # wrap-around tail: every rank gets full batches

    def _rank_indices(self, order: np.ndarray, batch: int) -> np.ndarray:
        glob = self.batch_size * self.world_size
        start = batch * glob + self.rank * self.batch_size
        return order[start:start + self.batch_size]

    def _batch(self, indices: np.ndarray) -> dict[str, torch.Tensor | None]:
        rows = [(int(i) * self._stride, int(i) * self._stride + self._len) for i in indices]
        ids = np.stack([self._tokens[a:b] for a, b in rows]).astype(np.int64)  # (B, T+1)
        tokens, nxt = ids[:, :-1], ids[:, 1:]  # (B, T) each
        if self.loss_on_all_tokens:
            keep = nxt != self.index["pad_id"]
        else:
            keep = np.stack([self._mask[a + 1:b] for a, b in rows]).astype(bool)  # (B, T)
        targets = np.where(keep, nxt, IGNORE_INDEX)
        doc_ids = None
        if self.layout in ("packed", "bestfit"):
            # A new document starts at each <|bos|>; tokens before the first one in a window
            # continue the previous document (id 0). The model masks attention across ids.
            doc_ids = torch.from_numpy(np.cumsum(tokens == self.index["bos_id"], axis=1))
        return {"tokens": torch.from_numpy(np.ascontiguousarray(tokens)),
                "targets": torch.from_numpy(targets), "doc_ids": doc_ids}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | None]]:
        """Yield the rest of the current epoch (a fresh one if it was finished)."""
        if self.offset >= len(self):
            self.epoch, self.offset = self.epoch + 1, 0
        order = self._order(self.epoch)
        while self.offset < len(self):
            batch = self._batch(self._rank_indices(order, self.offset))
            self.offset += 1  # counted before yielding: state_dict() then points past it
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed,
                "batch_size": self.batch_size, "world_size": self.world_size,
                "n_samples": self.n_samples}

    def load_state_dict(self, state: dict) -> None:
        """Resume at (epoch, offset). Refuses a state from a different data/batch geometry."""
        for key in ("seed", "batch_size", "world_size", "n_samples"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"loader state has {key}={state[key]}, this loader "
                                 f"{getattr(self, key)}: resume with the same data and settings")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def to_device(batch: dict[str, Any], device: torch.device, pin: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(tokens, targets, doc_ids) of a batch on `device`; `pin` stages CUDA copies through
    page-locked memory so they run asynchronously."""
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = torch.as_tensor(t)
        if pin and device.type == "cuda":
            t = t.pin_memory()
        return t.to(device, non_blocking=pin)

    return move(batch["tokens"]), move(batch["targets"]), move(batch.get("doc_ids"))
