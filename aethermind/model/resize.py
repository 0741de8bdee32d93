"""Resize a Forge-1 state dict's vocabulary: the rows of `tok_emb` (and of an untied `lm_head`).

Used when a Hub Llama's tokenizer is adopted (`tokenizer.adopt_json` appends the Forge-1 special
tokens after its ids): the rows of the ids the tokenizer already had are kept as they are, the
rows past them become the new tokens and the padding up to a multiple of 64. Rows the source
model had past its tokenizer belong to no token and are dropped.
New rows are the mean of the trained rows plus a little noise (Hewitt, "Initializing New Word
Embeddings for Pretrained Language Models", 2021): a row at the mean gives a logit that is
about the average logit, so before any training the new tokens take about an average
token's probability and the model's text distribution barely moves, whereas a random row of
the init scale can make one new token dominate or vanish. The noise (1% of the rows' spread,
from a fixed seed: loading the same folder twice gives the same model) makes the new rows
differ, so each token can learn its own meaning.
Knows nothing of tokenizers or files. Usage: `sd, cfg = resize_vocab(sd, cfg, 49216, 49152)`.
"""

from __future__ import annotations

import dataclasses

import torch

from aethermind.model.config import Forge1Config

NOISE = 0.01  # new rows' noise std, as a fraction of the trained rows' std
SEED = 0


def _resized(weight: torch.Tensor, rows: int, known: int, gen: torch.Generator) -> torch.Tensor:
    kept = weight[:known]  # (known, C)
    mean = kept.float().mean(dim=0)  # (C,)
    noise = torch.randn(rows - known, weight.shape[1], generator=gen) * kept.float().std() * NOISE
    new = (mean + noise).to(weight.dtype)  # (rows - known, C)
    return torch.cat([kept, new]).contiguous()  # (rows, C)


def resize_vocab(sd: dict[str, torch.Tensor], cfg: Forge1Config, rows: int, known: int
                 ) -> tuple[dict[str, torch.Tensor], Forge1Config]:
    """(state dict, config) with `rows` vocabulary rows; rows below `known` are kept.

    Raises ValueError when the embedding does not have `cfg.vocab_size` rows, has fewer than
    `known` (the tokenizer has ids the model never had), or `rows < known`.
    """
    have = int(sd["tok_emb.weight"].shape[0])
    if have != cfg.vocab_size:
        raise ValueError(f"weights do not fit the config (tok_emb.weight has {have} rows, "
                         f"vocab_size is {cfg.vocab_size})")
    if known > have:
        raise ValueError(f"the tokenizer has {known} tokens but the model only {have} "
                         "embedding rows: they do not belong together")
    if rows < known:
        raise ValueError(f"cannot resize the vocabulary to {rows} rows: {known} are in use")
    gen = torch.Generator().manual_seed(SEED)
    out = dict(sd)
    out["tok_emb.weight"] = _resized(sd["tok_emb.weight"], rows, known, gen)
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["tok_emb.weight"]
    else:
        out["lm_head.weight"] = _resized(sd["lm_head.weight"], rows, known, gen)
    return out, dataclasses.replace(cfg, vocab_size=rows)
