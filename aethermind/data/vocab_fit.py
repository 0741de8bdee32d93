"""Fit a vocabulary to a corpus by keeping only the tokens it uses out of a base BPE tokenizer.

A small model trained on a narrow corpus (the built-in reasoning data uses ~1.6k of the bundled
tokenizer's 16k tokens) spends most of each step on the output projection and the embedding
of tokens it never sees: keeping just the used tokens makes the demo's steps ~3x cheaper and
learns the same per step. The fitted tokenizer splits every text of the corpus exactly as the
base does (same merges, in the same order, for the tokens kept), and still encodes any text
(all 256 byte tokens stay), only with fewer merges outside the corpus.
Usage: `small = fit_vocabulary(Forge1Tokenizer(), texts)`; `small.save("outputs/demo/tok")`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from tokenizers import pre_tokenizers

from aethermind.text.tokenizer import Forge1Tokenizer

# Pre-tokens never span whitespace (except one leading space), and merges never cross
# pre-tokens, so the set of tokens a corpus uses is the set its distinct chunks use: encoding
# a few thousand distinct chunks instead of every text makes fitting take about a second.
_CHUNK = re.compile(r" ?\S+|\s+")


def id_to_token(tok: Forge1Tokenizer) -> dict[int, str]:
    """Every id of `tok` and its token string (byte-level form), specials included."""
    spec = json.loads(tok.to_json())
    out = {i: t for t, i in spec["model"]["vocab"].items()}
    out.update({t["id"]: t["content"] for t in spec.get("added_tokens", [])})
    return out


def _used_tokens(base: Forge1Tokenizer, texts: Iterable[str]) -> set[str]:
    chunks: set[str] = set()
    for text in texts:
        chunks.update(_CHUNK.findall(text))
    used: set[int] = set()
    for ids in base.encode_batch(sorted(chunks), allow_special=True):
        used.update(ids)
    names = id_to_token(base)
    return {names[i] for i in used}


def fit_vocabulary(base: Forge1Tokenizer, texts: Iterable[str]) -> Forge1Tokenizer:
    """`base` restricted to the tokens `texts` use (plus specials, bytes and the merge parts
    that build them). Raises ValueError if `base` is not a byte-level BPE tokenizer."""
    spec = json.loads(base.to_json())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError("fit_vocabulary needs a BPE tokenizer (the Forge-1 default is one)")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))
              for m in model["merges"]]
    made_by: dict[str, list[tuple[str, str]]] = {}
    for a, b in merges:
        made_by.setdefault(a + b, []).append((a, b))
    keep = {t["content"] for t in spec.get("added_tokens", [])}
    keep |= set(pre_tokenizers.ByteLevel.alphabet())
    # Every merge that can build a kept token keeps its parts: then the merge actually used
    # for each kept token is present, and a BPE run over a subset of merges that contains
    # every merge it applied gives the same tokens (the lowest-ranked applicable merge is
    # unchanged at every step).
    keep |= _used_tokens(base, texts)
    stack = list(keep)
    while stack:
        for a, b in made_by.get(stack.pop(), ()):
            for part in (a, b):
                if part not in keep:
                    keep.add(part)
                    stack.append(part)
    old = model["vocab"]
    ordered = sorted((t for t in keep if t in old), key=old.__getitem__)
    new_id = {t: i for i, t in enumerate(ordered)}
    model["vocab"] = new_id
    model["merges"] = [[a, b] for a, b in merges if a in new_id and b in new_id
                       and a + b in new_id]
    for added in spec.get("added_tokens", []):
        added["id"] = new_id[added["content"]]
    return Forge1Tokenizer.from_json(json.dumps(spec, ensure_ascii=False))
