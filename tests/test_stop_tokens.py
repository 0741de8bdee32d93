"""One stop-token list: our engine, transformers (the exported generation_config) and llama.cpp
(the exported GGUF) end a turn on exactly `chat_format.STOP_TOKENS`.

A model is built by hand to emit a chosen chain of tokens whatever the context: attention and
MLP outputs are zero, so the residual stream at a position is the token's own embedding (one
unit vector per id), and `lm_head` maps each id to the next one in the chain. A special
token is put in the chain; each runtime must stop right before it exactly when it is a stop
token, and otherwise generate through it to the length limit (our engine: every special token;
transformers and llama.cpp: each stop token and two others, plus their whole stop set).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _infer_helpers import make_tokenizer

from aethermind.artifacts.layout import final_dir, write_final
from aethermind.export.cli import export_model
from aethermind.inference.engine import Engine, SamplingParams
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text import chat_format as cf
from aethermind.text.tokenizer import Forge1Tokenizer

LIMIT = 8
# Each stop token, and two that must not stop (BOS is the one our engine used to stop on too).
CASES = (*cf.STOP_TOKENS, cf.BOS, cf.NO_THINK)


def _prompt(tok: Forge1Tokenizer) -> list[int]:
    return cf.encode_prompt(cf.Conversation(), "Hi", tok)


def _chain(tok: Forge1Tokenizer, special: str) -> list[int]:
    """Three text tokens, the special token, then a text token repeated to the limit."""
    a, b, c = tok.encode(" a b c")
    d = tok.encode("d")[0]
    return [a, b, c, tok.special_ids[special]] + [d] * (LIMIT - 4)


def forced_model(tok: Forge1Tokenizer, special: str) -> Forge1Model:
    vocab = tok.get_vocab_size_padded()
    cfg = Forge1Config(vocab_size=vocab, dim=vocab, n_layers=1, n_heads=4, n_kv_heads=2,
                       ffn_dim=64, max_seq_len=64, tie_embeddings=False)
    model = Forge1Model(cfg)
    chain = _chain(tok, special)
    successor = dict(zip([_prompt(tok)[-1], *chain[:-1]], chain, strict=True))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.zero_()  # attention and MLP add nothing to the residual stream
        model.tok_emb.weight.copy_(torch.eye(vocab))  # (V, C): token i -> unit vector i
        for i in range(vocab):  # lm_head (V, C): unit vector i -> logit of its successor
            model.lm_head.weight[successor.get(i, chain[-1]), i] = 10.0
    return model.eval()


def _expected(tok: Forge1Tokenizer, special: str) -> list[int]:
    """What every runtime must return: the chain up to (not including) the first stop token."""
    chain = _chain(tok, special)
    return chain[:3] if special in cf.STOP_TOKENS else chain


def _engine(model: Forge1Model, tok: Forge1Tokenizer) -> list[int]:
    gen = Engine(model).generate(_prompt(tok), SamplingParams(max_new_tokens=LIMIT,
                                                             temperature=0.0),
                                 cf.stop_ids(tok))
    return gen.tokens


def _export(tmp_path: Path, tok: Forge1Tokenizer, special: str, formats: tuple) -> list[Path]:
    model = forced_model(tok, special)
    write_final(model.state_dict(), model.config, tok, final_dir(tmp_path), "custom")
    kwargs = {"gguf_dtype": "f32"} if "gguf" in formats else {}
    return export_model(tmp_path, formats=formats, output=tmp_path / "exports", **kwargs)


def test_stop_tokens_end_a_turn_and_nothing_else_does():
    assert set(cf.STOP_TOKENS) == {cf.END_ASSISTANT, cf.EOS, cf.USER}
    tok = make_tokenizer()
    for special in cf.SPECIAL_TOKENS:
        assert _engine(forced_model(tok, special), tok) == _expected(tok, special), special


@pytest.mark.parametrize("special", CASES)
def test_transformers_stops_where_our_engine_does(tmp_path, special):
    transformers = pytest.importorskip("transformers")
    tok = make_tokenizer()
    (hf_dir,) = _export(tmp_path, tok, special, ("hf",))
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert set(hf.generation_config.eos_token_id) == set(cf.stop_ids(tok))
    prompt = _prompt(tok)
    with torch.no_grad():  # generation_config.json supplies eos_token_id (it samples: greedy here)
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=LIMIT, do_sample=False)
    out = out[0, len(prompt):]
    new = out.tolist()
    theirs = new[:-1] if new[-1] in cf.stop_ids(tok) else new
    ours = _engine(forced_model(tok, special), tok)
    assert theirs == ours == _expected(tok, special)
    assert (len(new) < LIMIT) == (special in cf.STOP_TOKENS)


@pytest.mark.interop
@pytest.mark.parametrize("special", CASES)
def test_llama_cpp_stops_where_our_engine_does(tmp_path, special):
    llama_cpp = pytest.importorskip("llama_cpp")
    tok = make_tokenizer()
    (gguf,) = _export(tmp_path, tok, special, ("gguf",))
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=64, verbose=False, n_threads=1)
    try:
        eog = {i for i in range(llm.n_vocab())
               if llama_cpp.llama_vocab_is_eog(llm._model.vocab, i)}
        assert eog == set(cf.stop_ids(tok))  # llama.cpp's end-of-generation set is ours
        out = llm.create_completion(_prompt(tok), max_tokens=LIMIT, temperature=0.0, top_k=1)
    finally:
        llm.close()
    ours = _engine(forced_model(tok, special), tok)
    assert ours == _expected(tok, special)
    choice = out["choices"][0]
    assert out["usage"]["completion_tokens"] == len(ours)
    assert choice["finish_reason"] == ("stop" if special in cf.STOP_TOKENS else "length")
    assert choice["text"] == tok.decode(ours, skip_special=True)
