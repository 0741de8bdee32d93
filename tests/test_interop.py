"""The GGUF export run by llama.cpp itself (llama-cpp-python): `make test-interop`.

Same token ids as Forge1Tokenizer (pre-tokenizer "smollm" = our digits + GPT-2 regex), f32
logits within 1e-3 of Forge-1's, the same greedy tokens, and q8_0 close to f32.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from _export_helpers import trained_folder, trained_model
from _infer_helpers import CONVERSATIONS
from tokenizers import Tokenizer

from aethermind.artifacts.exported import ExportMeta
from aethermind.export.cli import export_model
from aethermind.export.gguf import write_gguf
from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.inference.thinking import parse_completion
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text import chat_format as cf
from aethermind.text.thinking_split import split_thinking
from aethermind.text.tokenizer import Forge1Tokenizer

pytestmark = pytest.mark.interop
REPO = Path(__file__).resolve().parents[1]

MIXED = ("Hello world! 12345 + 0.75 = 12345.75; x=3.14e-2, 1,000,000 ½ ² ٣٤ ⅷ\n"
         "café naïve Ñandú ß İstanbul 東京タワー 한국어 Привет мир 😀👍🏽 🗼\n"
         "it's we'll they're I'M  two  spaces\tand\ttabs \n\n\n  trailing   \r\n"
         "<|user|>What is 2+2?<|/user|>\n<|think|>\n2 plus 2 is 4.\n<|/think|>\n"
         "<|assistant|>The answer is 4.<|/assistant|>\n<|eos|> <|pad|>x<|no_think|>")


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    trained_folder(out)
    return {dtype: export_model(out, formats=("gguf",), output=out, gguf_dtype=dtype)[0]
            for dtype in ("f32", "q8_0")}


@pytest.fixture
def llama(monkeypatch):
    """Open a GGUF in llama.cpp (the `interop` extra; make test-interop installs it)."""
    import llama_cpp
    import llama_cpp.llama_cpp as capi

    # llama.cpp's CPU weight repacking (its "extra buffer types", AMX on Sapphire Rapids and
    # newer) segfaults on q8_0 with llama-cpp-python 0.3.36 on such a CPU: measured here with
    # llama.cpp's own llama_model_quantize output of the same nano weights as well as with ours.
    # Plain q8_0 kernels compute the same numbers, so the checks load weights without repacking.
    defaults = capi.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    monkeypatch.setattr(capi, "llama_model_default_params", without_repacking)
    opened = []

    def open_gguf(path: Path):
        f32 = llama_cpp.GGML_TYPE_F32  # llama.cpp's KV cache is f16 by default: compare in f32
        opened.append(llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True,
                                      verbose=False, n_threads=1, n_batch=128, type_k=f32,
                                      type_v=f32))
        return opened[-1]

    yield open_gguf
    for llm in opened:
        llm.close()


def _exported(tok: Forge1Tokenizer) -> Tokenizer:
    """The tokenizer.json outside tools get (think tags not special)."""
    return Tokenizer.from_str(tok.export_json())


def _as_tools_tokenize(tok: Forge1Tokenizer, text: str) -> list[int]:
    """Plain-text ids as the exported tokenizer gives them: only special tokens split up."""
    exported = _exported(tok)
    exported.encode_special_tokens = True
    return exported.encode(text, add_special_tokens=False).ids


def _chat_prompt(tok) -> list[int]:
    conv = cf.Conversation(turns=[cf.Turn("Sort 3, 1, 2", "1, 2, 3")])
    return cf.encode_prompt(conv, "What is 2+2?", tok)


def test_llama_cpp_tokenizes_like_forge1(ggufs, llama):
    llm = llama(ggufs["f32"])
    _, tok = trained_model()
    for text in (MIXED, *MIXED.split("\n"), " 1 22 333", "a\u00a0b\u3000c", "x" * 300):
        data = text.encode("utf-8")
        assert llm.tokenize(data, add_bos=False, special=True) \
            == tok.encode(text, allow_special=True), text
        # special=False: llama.cpp still matches USER_DEFINED tokens (the think tags), as
        # `tokenizers` matches non-special added tokens in the exported tokenizer.json
        assert llm.tokenize(data, add_bos=False, special=False) \
            == _as_tools_tokenize(tok, text), text
    ids = tok.encode(MIXED, allow_special=True)
    assert llm.detokenize(ids, special=True).decode("utf-8") == tok.decode(ids) == MIXED


def test_llama_cpp_tokenizes_the_guide_like_the_bundled_tokenizer(tmp_path):
    """The bundled 16k tokenizer on real text. Its merges tell pre-tokenizers apart: on this
    text llama.cpp's "qwen2" and "gpt-2" give different ids, "smollm" the same ones."""
    import llama_cpp

    tok = Forge1Tokenizer()
    cfg = Forge1Config(vocab_size=tok.get_vocab_size_padded(), dim=32, n_layers=1, n_heads=2,
                       n_kv_heads=1, ffn_dim=64, max_seq_len=64)
    model = Forge1Model(cfg)
    path = write_gguf(model, tok, ExportMeta.of(model, tok), tmp_path / "vocab.gguf", "f32")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        for name in ("docs/guide.md", "README.md"):
            text = (REPO / name).read_text(encoding="utf-8")
            assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) \
                == tok.encode(text, allow_special=True), name
        assert llm.tokenize(MIXED.encode("utf-8"), add_bos=False, special=True) \
            == tok.encode(MIXED, allow_special=True)
    finally:
        llm.close()


def test_llama_cpp_f32_logits_and_greedy_tokens_match_forge1(ggufs, llama):
    llm = llama(ggufs["f32"])
    model, tok = trained_model()
    prompt = _chat_prompt(tok)
    llm.eval(prompt)
    theirs = np.array(llm.scores[: len(prompt)])
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0].numpy()
    assert np.abs(theirs - ours).max() <= 1e-3
    stops = {tok.special_ids[cf.END_ASSISTANT], tok.eos_id}
    for conv in CONVERSATIONS:
        prompt = cf.encode_prompt(cf.Conversation(), conv.turns[0].user, tok)
        ref = Engine(model).generate(prompt, SamplingParams(max_new_tokens=40), stop_ids=stops)
        out = _greedy(llm, prompt, stops)
        assert out == ref.tokens and len(out) > 5


def _greedy(llm, prompt: list[int], stops: set[int], limit: int = 40) -> list[int]:
    llm.reset()
    out: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        if token in stops or len(out) == limit:
            break
        out.append(token)
    return out


def test_q8_0_stays_close_to_f32(ggufs, llama):
    """Measured: relative RMS logit error 1.4%, the same argmax everywhere (f32: 6e-7)."""
    model, tok = trained_model()
    prompt = _chat_prompt(tok)
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0].numpy()
    llm = llama(ggufs["q8_0"])
    llm.eval(prompt)
    q8 = np.array(llm.scores[: len(prompt)])
    assert np.linalg.norm(q8 - ours) <= 0.03 * np.linalg.norm(ours)
    assert (q8.argmax(-1) == ours.argmax(-1)).mean() >= 0.95
    stops = {tok.special_ids[cf.END_ASSISTANT], tok.eos_id}
    for conv in CONVERSATIONS:
        prompt = cf.encode_prompt(cf.Conversation(), conv.turns[0].user, tok)
        ref = Engine(model).generate(prompt, SamplingParams(max_new_tokens=40), stop_ids=stops)
        assert _greedy(llm, prompt, stops) == ref.tokens
    assert ggufs["q8_0"].stat().st_size < 0.35 * ggufs["f32"].stat().st_size



def test_llama_cpp_chat_completion_uses_the_embedded_template_and_stops(ggufs, llama):
    """create_chat_completion renders the GGUF's chat template and stops at <|/assistant|>."""
    llm = llama(ggufs["f32"])
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
        content = choice["message"]["content"]
        # the think tags stay in the text (USER_DEFINED), the other tags do not: split it
        assert content == _exported(tok).decode(ref.tokens, skip_special_tokens=True)
        thinking, answer = split_thinking(content)
        assert (thinking, answer) == parse_completion(ref.tokens, tok)[:2]
        assert bool(thinking) == (conv.turns[0].thinking is not None)
        assert choice["finish_reason"] == "stop"
        assert out["usage"]["prompt_tokens"] == len(prompt)


@pytest.fixture(scope="module")
def llama_server(ggufs):
    """`python -m llama_cpp.server` on the f32 GGUF (the `interop` extra has its [server] deps).
    f32 only: the server has no switch for the q8_0 repacking crash the `llama` fixture avoids."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(ggufs["f32"]),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "128", "--n_threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            try:
                urllib.request.urlopen(url + "/models", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "llama_cpp.server did not start in 60 s"
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_llama_cpp_server_returns_the_thinking_to_an_openai_client(llama_server):
    """What a user of llama-cpp-python's own OpenAI server gets: the thinking inside the
    content (the server has no reasoning parser for our tags), which split_thinking separates
    exactly as our engine does."""
    import openai

    client = openai.OpenAI(base_url=llama_server, api_key="none")
    model, tok = trained_model()
    conv = CONVERSATIONS[0]  # one the model was fit to think on
    prompt = cf.encode_prompt(cf.Conversation(), conv.turns[0].user, tok)
    ref = Engine(model).generate(prompt, SamplingParams(max_new_tokens=60),
                                 stop_ids=cf.stop_ids(tok))
    reply = client.chat.completions.create(
        model="forge1", messages=[{"role": "user", "content": conv.turns[0].user}],
        temperature=0.0, max_tokens=60, extra_body={"top_k": 1, "repeat_penalty": 1.0})
    content = reply.choices[0].message.content
    assert content.startswith("<|think|>") and "<|/think|>" in content
    assert split_thinking(content) == parse_completion(ref.tokens, tok)[:2] \
        == (conv.turns[0].thinking, conv.turns[0].assistant)
