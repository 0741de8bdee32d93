"""Token shards and the BatchLoader: layouts, caching, staleness, sharding, exact resume."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import torch

from aethermind.data import pack
from aethermind.data.loader import BatchLoader
from aethermind.data.synth import write_synth
from aethermind.text.chat_format import Conversation, Turn, render
from aethermind.text.tokenizer import Forge1Tokenizer

T = 64


@pytest.fixture(scope="module")
def synth_jsonl(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return write_synth(out, n_train=300, n_val=20, seed=0)[0]


@pytest.fixture(scope="module")
def packed(synth_jsonl, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "packed"
    return pack.build_shards(synth_jsonl, tiny_tokenizer, out, context_length=T)


def _stream(tok, jsonl):
    ids, mask = [], []
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        i, m, _ = pack._encode_text(json.loads(line)["text"], tok)
        ids += i
        mask += m
    return ids, mask


def test_packed_windows_tile_the_stream_with_padding_only_at_the_end(packed, synth_jsonl,
                                                                     tiny_tokenizer):
    index = pack.read_index(packed)
    ids, mask = _stream(tiny_tokenizer, synth_jsonl)
    tokens = np.fromfile(packed / "tokens.bin", dtype=index["dtype"])
    n = index["n_samples"]
    assert n == -(-(len(ids) - 1) // T) and len(tokens) == n * T + 1
    assert tokens[:len(ids)].tolist() == ids
    assert (tokens[len(ids):] == tiny_tokenizer.pad_id).all()
    assert np.fromfile(packed / "mask.bin", dtype=np.uint8)[:len(ids)].tolist() == mask
    n_lines = len(synth_jsonl.read_text(encoding="utf-8").splitlines())
    assert index["dtype"] == "uint16" and index["n_documents"] == n_lines


def test_token_dtype_widens_past_uint16():
    assert pack.token_dtype(65535) == np.uint16 and pack.token_dtype(65536) == np.uint32


def test_workers_give_identical_shards(synth_jsonl, tiny_tokenizer, packed, tmp_path,
                                      monkeypatch):
    monkeypatch.setattr(pack, "MIN_PARALLEL_BYTES", 0)  # force the pool on this small file
    two = pack.build_shards(synth_jsonl, tiny_tokenizer, tmp_path / "w2", context_length=T,
                            workers=2)
    for name in ("tokens.bin", "mask.bin"):
        assert (two / name).read_bytes() == (packed / name).read_bytes()


def test_packed_batches_mask_documents_and_shift_targets(packed, tiny_tokenizer):
    batch = next(iter(BatchLoader(packed, 4, shuffle=False)))
    tokens, targets, doc_ids = batch["tokens"], batch["targets"], batch["doc_ids"]
    assert tokens.shape == targets.shape == doc_ids.shape == (4, T)
    assert tokens.dtype == targets.dtype == doc_ids.dtype == torch.int64
    bos = tokens == tiny_tokenizer.bos_id
    assert torch.equal(doc_ids, torch.cumsum(bos.long(), dim=1))
    assert torch.equal(tokens[0, 1:], torch.where(targets[0, :-1] >= 0, targets[0, :-1],
                                                  tokens[0, 1:]))
    whole = BatchLoader(packed, 16, shuffle=False)._batch(np.arange(16))["targets"].flatten()
    learned = tiny_tokenizer.decode(whole[whole >= 0].tolist())
    assert "<|assistant|>" in learned and "<|/think|>" in learned
    assert "<|user|>" not in learned and "<|system|>" not in learned


def test_padded_rows_hold_one_conversation_and_pads_never_count(synth_jsonl, tiny_tokenizer,
                                                                 tmp_path):
    out = pack.build_shards(synth_jsonl, tiny_tokenizer, tmp_path / "pad", context_length=256,
                            layout="padded")
    loader = BatchLoader(out, 8, shuffle=False, loss_on_all_tokens=True)
    batch = next(iter(loader))
    assert batch["doc_ids"] is None
    tokens, targets = batch["tokens"], batch["targets"]
    assert (tokens[:, 0] == tiny_tokenizer.bos_id).all()
    assert (targets[tokens[:, 1:].eq(tiny_tokenizer.pad_id).nonzero(as_tuple=True)] == -100).all()
    assert ((tokens == tiny_tokenizer.bos_id).sum(dim=1) == 1).all()


def test_padded_layout_drops_and_counts_too_long(tiny_tokenizer, tmp_path):
    short = render(Conversation(turns=[Turn("Hi", "Hello!")]))
    long = render(Conversation(turns=[Turn("Tell me a long story. " * 40, "Once. " * 40)]))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in (short, long, short)))
    out = pack.build_shards(src, tiny_tokenizer, tmp_path / "pad", context_length=64,
                            layout="padded")
    index = pack.read_index(out)
    assert (index["n_samples"], index["dropped_too_long"], index["n_documents"]) == (2, 1, 3)


def test_plain_text_and_malformed_lines(tiny_tokenizer, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "just some prose"}\nnot json\n{"text": 5}\n\n{"nope": "x"}\n')
    index = pack.read_index(pack.build_shards(src, tiny_tokenizer, tmp_path / "s",
                                              context_length=8))
    assert index["plain_text_documents"] == 1
    assert (index["malformed_lines"], index["malformed_first"]) == (3, [2, 3, 5])


def test_ensure_shards_reuses_then_rebuilds_on_input_or_tokenizer_change(tiny_tokenizer,
                                                                         tmp_path):
    src = tmp_path / "train.jsonl"
    write_synth(tmp_path, n_train=40, n_val=2)
    first = pack.ensure_shards(src, tiny_tokenizer, tmp_path / "cache", context_length=T)
    stamp = (first / "index.json").stat().st_mtime_ns
    again = pack.ensure_shards(src, tiny_tokenizer, tmp_path / "cache", context_length=T)
    assert again == first and (again / "index.json").stat().st_mtime_ns == stamp
    n_lines = len(src.read_text(encoding="utf-8").splitlines())
    with src.open("a") as f:
        f.write(json.dumps({"text": "one more document"}) + "\n")
    pack.ensure_shards(src, tiny_tokenizer, tmp_path / "cache", context_length=T)
    assert pack.read_index(first)["n_documents"] == n_lines + 1
    other = Forge1Tokenizer.train(["a different corpus entirely " * 5] * 10, vocab_size=320)
    pack.ensure_shards(src, other, tmp_path / "cache", context_length=T)
    assert pack.read_index(first)["tokenizer_fingerprint"] == other.fingerprint()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_touched_but_unchanged_input_is_not_stale(tiny_tokenizer, tmp_path):
    src = write_synth(tmp_path, n_train=20, n_val=2)[0]
    out = pack.ensure_shards(src, tiny_tokenizer, tmp_path / "c", context_length=T)
    os.utime(src, ns=(1, 1))
    assert pack.stale_reason(pack.read_index(out), src, tiny_tokenizer, context_length=T,
                             layout="packed") is None


def test_loader_refuses_shards_of_another_tokenizer(packed):
    with pytest.raises(pack.StaleShardsError, match="rebuild"):
        BatchLoader(packed, 2, tokenizer_fingerprint="0" * 16)


def test_loader_reads_memmaps(packed):
    loader = BatchLoader(packed, 2)
    assert isinstance(loader._tokens, np.memmap) and isinstance(loader._mask, np.memmap)


def _all(loader, n=None):
    """Tokens of the next `n` batches (islice pulls no extra batch), or of the rest of the epoch."""
    return [batch["tokens"] for batch in itertools.islice(loader, n)]


def test_loader_is_deterministic_and_reshuffles_each_epoch(packed):
    a, b = BatchLoader(packed, 4, seed=1), BatchLoader(packed, 4, seed=1)
    ep0 = _all(a)
    assert all(torch.equal(x, y) for x, y in zip(ep0, _all(b), strict=True))
    ep1 = _all(a)
    assert a.epoch == 1 and len(ep1) == len(ep0) == len(a)
    assert not torch.equal(torch.stack(ep0), torch.stack(ep1))
    assert not torch.equal(torch.stack(ep0), torch.stack(_all(BatchLoader(packed, 4, seed=2))))


def test_ranks_get_disjoint_slices_of_equal_length(packed):
    ranks = [BatchLoader(packed, 3, rank=r, world_size=3, shuffle=False) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == ranks[0].n_samples // 9
    firsts = [r._rank_indices(r._order(0), 0) for r in ranks]
    seen = np.concatenate(firsts)
    assert len(set(seen.tolist())) == 9


def test_resume_from_state_dict_gives_the_same_batches(packed):
    full = BatchLoader(packed, 4, seed=7)
    expected = _all(full) + _all(full, 5)  # an epoch and a bit
    first = BatchLoader(packed, 4, seed=7)
    got = _all(first, 10)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = BatchLoader(packed, 4, seed=7)
    resumed.load_state_dict(state)
    got += _all(resumed) + _all(resumed, 5)
    assert len(got) == len(expected)
    assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True))


def test_load_state_dict_refuses_other_geometry(packed):
    state = BatchLoader(packed, 4).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(packed, 2).load_state_dict(state)


def test_loader_rejects_too_little_data(packed):
    with pytest.raises(ValueError, match="fewer than"):
        BatchLoader(packed, 10_000)


def test_drop_last_false_wraps_the_tail_so_ranks_stay_equal(packed):
    n = pack.read_index(packed)["n_samples"]
    ranks = [BatchLoader(packed, 4, rank=r, world_size=2, shuffle=False, drop_last=False)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == -(-n // 8)
    seen = np.concatenate([r._rank_indices(r._order(0), b) for b in range(len(ranks[0]))
                           for r in ranks])
    assert set(seen.tolist()) == set(range(n))
    one = BatchLoader(packed, n + 3, shuffle=False, drop_last=False)  # one process: no wrap,
    assert len(one) == 1 and next(iter(one))["tokens"].shape[0] == n  # every sample once


def test_bestfit_rows_hold_whole_documents_and_lose_none(synth_jsonl, tiny_tokenizer, tmp_path):
    out = pack.build_shards(synth_jsonl, tiny_tokenizer, tmp_path / "bf", context_length=T * 4,
                            layout="bestfit")
    index = pack.read_index(out)
    rows = np.fromfile(out / "tokens.bin", dtype=index["dtype"]).reshape(-1, T * 4 + 1)
    masks = np.fromfile(out / "mask.bin", dtype=np.uint8).reshape(rows.shape)
    bos, eos, pad = tiny_tokenizer.bos_id, tiny_tokenizer.eos_id, tiny_tokenizer.pad_id
    docs = []
    for row, mask in zip(rows, masks, strict=True):
        assert row[0] == bos  # every row starts a document: nothing is cut
        real = row != pad
        assert real[:real.sum()].all() and not mask[~real].any()  # padding only at the end
        starts = np.flatnonzero(row == bos).tolist() + [int(real.sum())]
        docs += [tuple(row[a:b]) for a, b in itertools.pairwise(starts)]
    assert all(d[-1] == eos for d in docs)
    ids, _ = _stream(tiny_tokenizer, synth_jsonl)
    stream_docs = []
    for tok in ids:
        stream_docs.append([tok]) if tok == bos else stream_docs[-1].append(tok)
    kept = [tuple(d) for d in stream_docs if len(d) <= T * 4 + 1]
    assert sorted(docs) == sorted(kept)
    assert index["dropped_too_long"] == len(stream_docs) - len(kept)
    padded = pack.read_index(pack.build_shards(synth_jsonl, tiny_tokenizer, tmp_path / "pd",
                                               context_length=T * 4, layout="padded"))
    assert index["n_tokens"] - index["real_tokens"] < \
        0.5 * (padded["n_tokens"] - padded["real_tokens"])  # far less padding than one per row
    batch = next(iter(BatchLoader(out, 4, shuffle=False)))
    assert batch["doc_ids"] is not None and (batch["doc_ids"][:, 0] == 1).all()
