"""The GGUF export run by llama.cpp itself (llama-cpp-python): `make test-interop`.

Same token ids as Forge1Tokenizer (pre-tokenizer "smollm" = our digits + GPT-2 regex), f32
logits within 1e-3 of Forge-1's, the same greedy tokens, and q8_0 close to f32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _export_helpers import logits, trained_folder, trained_model
from _infer_helpers import CONVERSATIONS

from aethermind import chat_format as cf
from aethermind.engine import Engine, SamplingParams
from aethermind.export import export_model

pytestmark = pytest.mark.interop

MIXED = ("Hello world! 12345 + 0.75 = 12345.75; x=3.14e-2, 1,000,000 ½ ² ٣٤ ⅷ\n"
         "café naïve Ñandú ß İstanbul 東京タワー 한국어 Привет мир 😀👍🏽 🗼\n"
         "it's we'll they're I'M  two  spaces\tand\ttabs \n\n\n  trailing   \r\n"
         "<|user|>What is 2+2?<|/user|>\n<|think|>\n2 plus 2 is 4.\n<|/think|>\n"
         "<|assistant|>The answer is 4.<|/assistant|>\n<|eos|> <|pad|>x<|no_think|>")


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    trained_folder(out)
    return {dtype: export_model(out, formats=("gguf",), output=out, dtype=dtype)[0]
            for dtype in ("f32", "q8_0")}


def _llama(path: Path):
    from llama_cpp import Llama  # the `interop` extra; make test-interop installs it

    return Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False,
                 n_threads=1, n_batch=128)


def _chat_prompt(tok) -> list[int]:
    conv = cf.Conversation(turns=[cf.Turn("Sort 3, 1, 2", "1, 2, 3")])
    return cf.encode_prompt(conv, "What is 2+2?", tok)


def test_llama_cpp_tokenizes_like_forge1(ggufs):
    llm = _llama(ggufs["f32"])
    _, tok = trained_model()
    for text in (MIXED, *MIXED.split("\n"), " 1 22 333", "a\u00a0b\u3000c", "x" * 300):
        data = text.encode("utf-8")
        assert llm.tokenize(data, add_bos=False, special=True) \
            == tok.encode(text, allow_special=True), text
        assert llm.tokenize(data, add_bos=False, special=False) == tok.encode(text), text
    ids = tok.encode(MIXED, allow_special=True)
    assert llm.detokenize(ids, special=True).decode("utf-8") == tok.decode(ids) == MIXED


def test_llama_cpp_f32_logits_and_greedy_tokens_match_forge1(ggufs):
    llm = _llama(ggufs["f32"])
    model, tok = trained_model()
    prompt = _chat_prompt(tok)
    llm.eval(prompt)
    theirs = np.array(llm.scores[: len(prompt)])
    with torch.no_grad():
        ours = logits(model, torch.tensor([prompt]))[0].numpy()
    assert np.abs(theirs - ours).max() <= 1e-3
    stops = {tok.special_ids[cf.END_ASSISTANT], tok.eos_id}
    ref = Engine(model).generate(prompt, SamplingParams(max_new_tokens=40), stop_ids=stops)
    llm.reset()
    out: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        if token in stops or len(out) == 40:
            break
        out.append(token)
    assert out == ref.tokens and len(out) > 5


def test_q8_0_stays_close_to_f32(ggufs):
    model, tok = trained_model()
    prompt = _chat_prompt(tok)
    with torch.no_grad():
        ours = logits(model, torch.tensor([prompt]))[0].numpy()
    llm = _llama(ggufs["q8_0"])
    llm.eval(prompt)
    q8 = np.array(llm.scores[: len(prompt)])
    assert np.abs(q8 - ours).max() <= 0.02 * np.abs(ours).max()
    assert (q8.argmax(-1) == ours.argmax(-1)).mean() >= 0.95
    assert ggufs["q8_0"].stat().st_size < 0.5 * ggufs["f32"].stat().st_size


def test_llama_cpp_chat_completion_uses_the_embedded_template_and_stops(ggufs):
    """create_chat_completion renders the GGUF's chat template and stops at <|/assistant|>."""
    llm = _llama(ggufs["f32"])
    model, tok = trained_model()
    for conv in CONVERSATIONS[:2]:
        question = conv.turns[0].user
        prompt = cf.encode_prompt(cf.Conversation(), question, tok)
        ref = Engine(model).generate(prompt, SamplingParams(max_new_tokens=60),
                                     stop_ids=[tok.special_ids[cf.END_ASSISTANT], tok.eos_id])
        assert ref.finish_reason == "stop"
        out = llm.create_chat_completion([{"role": "user", "content": question}],
                                         temperature=0.0, top_k=1, max_tokens=60)
        choice = out["choices"][0]
        assert choice["message"]["content"] == tok.decode(ref.tokens, skip_special=True)
        assert choice["finish_reason"] == "stop"
        assert out["usage"]["prompt_tokens"] == len(prompt)
