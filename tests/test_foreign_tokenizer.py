"""A Hub Llama with its own tokenizer (issue 20): adopted, loaded, trained, chatted with,
packed, exported to HF (generate matches the engine) and to GGUF or refused.

The Hub models are stand-ins built offline (`_foreign_helpers`): one byte-level BPE with a
tied head, one SentencePiece-style BPE with an untied head.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from _foreign_helpers import STYLES, TIED, hub_folder, hub_tokenizer_json
from _infer_helpers import CONVERSATIONS, fit_conversations
from tokenizers import Tokenizer

from aethermind.artifacts.exported import ExportError, ExportMeta
from aethermind.artifacts.layout import write_final
from aethermind.artifacts.loading import LoadError, load_model
from aethermind.data.pack import build_shards, read_index
from aethermind.export.cli import export_model
from aethermind.export.gguf import gguf_pre_tokenizer, write_gguf
from aethermind.export.hf import write_hf_dir
from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.inference.thinking import parse_completion
from aethermind.text import chat_format as cf
from aethermind.text.special_tokens import SPECIAL_TOKENS
from aethermind.text.tokenizer import DEFAULT_TOKENIZER, Forge1Tokenizer, adopt_json

transformers = pytest.importorskip("transformers")
TEXTS = ["Hello world! 2+2 = 4.", "こんにちは 😀 世界", "  two  spaces\nand a newline",
         "a literal <|user|> and <|endoftext|> stay text"]


@pytest.fixture(scope="module", params=STYLES)
def hub(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, hub_folder(tmp_path_factory.mktemp(request.param), request.param)


@functools.lru_cache(maxsize=2)
def _trained(folder: Path) -> dict[str, torch.Tensor]:
    model, tok = load_model(folder)
    loss = fit_conversations(model, tok, 60)
    assert loss < 0.5, f"foreign model failed to fit (loss {loss:.3f})"
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained(folder: Path):
    model, tok = load_model(folder)
    model.load_state_dict(_trained(folder))
    return model.eval(), tok


def test_our_tokenizer_is_not_rewritten():
    text = (DEFAULT_TOKENIZER / "tokenizer.json").read_text(encoding="utf-8")
    tok = Forge1Tokenizer()
    assert adopt_json(text) == (text, ())
    assert tok.added_specials == () and tok.to_json() == text
    assert [tok.special_ids[s] for s in SPECIAL_TOKENS] == list(range(12))


@pytest.mark.parametrize("style", STYLES)
def test_a_hub_tokenizer_keeps_its_ids_and_gets_ours_appended(style, tmp_path):
    hub = Tokenizer.from_str(hub_tokenizer_json(style))
    hub.encode_special_tokens = True  # plain text: its own special strings stay text too
    n = hub.get_vocab_size()
    tok = Forge1Tokenizer.from_json(hub_tokenizer_json(style))
    assert tok.added_specials == SPECIAL_TOKENS
    assert [tok.special_ids[s] for s in SPECIAL_TOKENS] == list(range(n, n + 12))
    for text in TEXTS:
        assert tok.encode(text) == hub.encode(text, add_special_tokens=False).ids, text
        assert tok.decode(tok.encode(text)) == text
    saved = Forge1Tokenizer(tok.save(tmp_path / "tok"))  # adopting again changes nothing
    assert saved.added_specials == () and saved.fingerprint() == tok.fingerprint()


def test_metaspace_first_is_made_always_so_hf_matches_our_piecewise_encoding():
    spec = json.loads(hub_tokenizer_json("bytelevel"))
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                             "split": True}
    blob, _ = adopt_json(json.dumps(spec))
    assert json.loads(blob)["pre_tokenizer"]["prepend_scheme"] == "always"


def test_a_hub_llama_loads_with_new_rows_at_the_mean(hub):
    style, folder = hub
    model, tok = load_model(folder)
    again, _ = load_model(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    n = hf.config.vocab_size
    assert model.config.vocab_size == tok.get_vocab_size_padded() == -(-(n + 12) // 64) * 64
    assert model.config.tie_embeddings is TIED[style]
    assert torch.equal(model.tok_emb.weight, again.tok_emb.weight)  # deterministic
    ids = torch.randint(0, n, (2, 40))
    with torch.no_grad():
        ours = model(ids)
        assert (ours[..., :n] - hf(ids).logits).abs().max() < 1e-4
    for w in (model.tok_emb.weight, model.lm_head.weight):
        old, new = w[:n], w[n:]
        assert (new - old.mean(0)).abs().max() < 0.1 * old.std()  # mean plus a little noise
        assert not torch.equal(new[0], new[1])


def test_a_tokenizer_larger_than_the_model_is_refused(hub, tmp_path):
    style, _ = hub
    small = hub_folder(tmp_path / "small", style, vocab_size=64)
    with pytest.raises(LoadError, match="tokenizer has .* tokens but the model only 64"):
        load_model(small)
    cfg = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**cfg, "vocab_size": 1000}))
    with pytest.raises(LoadError, match="do not fit the config"):
        load_model(small)


def test_only_a_sentencepiece_model_file_asks_for_tokenizer_json(hub, tmp_path):
    _, folder = hub
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    (bare / "tokenizer.model").write_bytes(b"\0")
    with pytest.raises(LoadError, match="no tokenizer.json: write one"):
        load_model(bare)


def test_packing_and_training_use_the_adopted_tokenizer(hub, tmp_path):
    _, folder = hub
    _, tok = load_model(folder)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in
                            [*TEXTS, *(cf.render(c) for c in CONVERSATIONS)]))
    shards = build_shards(data, Forge1Tokenizer(folder), tmp_path / "shards",
                          context_length=64, layout="padded")
    index = read_index(shards)
    assert index["tokenizer_fingerprint"] == tok.fingerprint()
    assert (index["bos_id"], index["pad_id"]) == (tok.bos_id, tok.pad_id)
    model, _ = trained(folder)  # fits the conversations (asserted in _trained)
    assert model.config.vocab_size == tok.get_vocab_size_padded()


def test_chat_reply_and_the_saved_final_model_reload(hub, tmp_path):
    _, folder = hub
    model, tok = trained(folder)
    conv = CONVERSATIONS[0]
    prompt = cf.encode_prompt(cf.Conversation(), conv.turns[0].user, tok)
    out = Engine(model).generate(prompt, SamplingParams(max_new_tokens=60),
                                 stop_ids=cf.stop_ids(tok))
    thinking, answer, used = parse_completion(out.tokens, tok)
    assert answer == conv.turns[0].assistant and thinking.strip() == conv.turns[0].thinking
    write_final(model.state_dict(), model.config, tok, tmp_path / "final", "custom")
    again, tok2 = load_model(tmp_path / "final")
    assert tok2.fingerprint() == tok.fingerprint() and tok2.added_specials == ()
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


def test_hf_export_generates_what_the_engine_generates(hub, tmp_path):
    style, folder = hub
    model, tok = trained(folder)
    out = write_hf_dir(model, tok, ExportMeta.of(model, tok), tmp_path / "hf")
    added = {t["content"]: t["special"] for t in
             json.loads((out / "tokenizer.json").read_text())["added_tokens"]}
    assert {"<|endoftext|>", "<s>"} & set(added) and added["<|think|>"] is False
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == TIED[style]
    for conv in CONVERSATIONS[:3]:
        history = cf.Conversation(turns=conv.turns[:-1])
        msgs = [{"role": "user", "content": conv.turns[-1].user}]
        ids = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True,
                                         return_tensors="pt")["input_ids"]
        assert ids[0].tolist() == cf.encode_prompt(history, conv.turns[-1].user, tok)
        assert hf_tok(cf.render(conv), add_special_tokens=False)["input_ids"] \
            == cf.encode(conv, tok)[0]
        got = hf.generate(ids, max_new_tokens=40, do_sample=False)[0, ids.shape[1]:].tolist()
        ref = Engine(model).generate(ids[0].tolist(), SamplingParams(max_new_tokens=40),
                                     stop_ids=cf.stop_ids(tok))
        assert got[: len(ref.tokens)] == ref.tokens and len(ref.tokens) > 3
    back, tok2 = load_model(out)  # an export of an adopted model re-imports as it is
    assert tok2.fingerprint() == tok.fingerprint()
    assert torch.equal(back.tok_emb.weight, model.tok_emb.weight)


def test_gguf_is_written_for_byte_level_and_refused_for_sentencepiece(hub, tmp_path):
    gguf = pytest.importorskip("gguf")
    style, folder = hub
    model, tok = load_model(folder)
    if style == "sentencepiece":
        with pytest.raises(ExportError, match="--format hf instead") as err:
            export_model(folder, formats=("gguf",), output=tmp_path / "out")
        assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
        return
    assert gguf_pre_tokenizer(tok) == "gpt-2"
    path = write_gguf(model, tok, ExportMeta.of(model, tok), tmp_path / "m.gguf", "f32")
    reader = gguf.GGUFReader(str(path))
    pre = reader.fields["tokenizer.ggml.pre"]
    assert bytes(pre.parts[pre.data[0]]).decode() == "gpt-2"
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) != TIED[style]


@pytest.mark.interop
def test_llama_cpp_tokenizes_a_byte_level_hub_gguf_like_the_adopted_tokenizer(tmp_path):
    """In `make test-interop` (llama-cpp-python comes with the interop extra)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    folder = hub_folder(tmp_path / "hub", "bytelevel")
    model, tok = load_model(folder)
    path = write_gguf(model, tok, ExportMeta.of(model, tok), tmp_path / "m.gguf", "f32")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        for text in TEXTS[:3]:
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text)
    finally:
        llm.close()


@pytest.mark.parametrize("edit, message", [
    ({"attention_bias": True}, "attention_bias"), ({"mlp_bias": True}, "mlp_bias"),
    ({"head_dim": 32}, "head_dim"), ({"model_type": "qwen2"}, "only Llama"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, "rope_scaling"),
])
def test_llama_variants_forge1_cannot_run_are_refused_in_one_line(hub, tmp_path, edit, message):
    _, folder = hub
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(LoadError, match=message) as err:
        load_model(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("lora", [None, 4], ids=["full", "lora"])
def test_train_init_from_a_hub_folder_keeps_its_tokenizer(hub, tmp_path, lora):
    """`init_from` + `tokenizer:` pointing at a Hub folder (what configs/hub_finetune.yaml and
    hub_lora.yaml do): the run packs with the adopted tokenizer, trains, and its final model
    reloads with that tokenizer and the same shape."""
    from types import SimpleNamespace

    from _train_helpers import make_cfg, write_chats

    from aethermind.training import train
    from aethermind.training.config import LoraSettings

    _, folder = hub
    source, tok = load_model(folder)
    assets = SimpleNamespace(tok=str(folder), cache=str(tmp_path / "cache"),
                             train=str(write_chats(tmp_path / "train.jsonl", 48, seed=0)))
    cfg = make_cfg(assets, tmp_path / "run", variant=None, init_from=str(folder), max_steps=4,
                   **({"lora": LoraSettings(r=lora, alpha=2 * lora)} if lora else {}))
    result = train.train(cfg)
    assert result["status"] == "completed", result
    final, final_tok = load_model(tmp_path / "run" / "final_model")
    assert final_tok.fingerprint() == tok.fingerprint()
    assert final.config.to_dict() == source.config.to_dict()
    changed = [k for k, v in final.state_dict().items()
               if not torch.equal(v, source.state_dict()[k])]
    assert changed  # it trained (LoRA: merged into the weights)
