"""`--format hf` loads in transformers and behaves like Forge-1; `import-hf` brings it back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from _export_helpers import trained_model

from aethermind.artifacts.loading import load_model
from aethermind.export.cli import export_model
from aethermind.export.hf import main as import_main
from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.inference.thinking import parse_completion
from aethermind.text import chat_format as cf
from aethermind.text.chat_template import HF_CHAT_TEMPLATE, conversation_messages
from aethermind.text.thinking_split import split_thinking

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_dir(request, tmp_path_factory) -> Path:
    run = request.getfixturevalue("export_run_dir" if request.param else "export_untied_dir")
    (path,) = export_model(run, formats=("hf",), output=tmp_path_factory.mktemp("hf") / "exports")
    return path


def _ours(hf_dir: Path):
    return trained_model(tied=json.loads((hf_dir / "config.json").read_text())
                         ["tie_word_embeddings"])


def test_directory_has_the_files_loaders_look_for(hf_dir):
    names = {p.name for p in hf_dir.iterdir()}
    assert names == {"config.json", "model.safetensors", "generation_config.json",
                     "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "chat_template.jinja"}
    tok_cfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["chat_template"] == (hf_dir / "chat_template.jinja").read_text() \
        == HF_CHAT_TEMPLATE
    # the think tags are ordinary added tokens: decoded text keeps them
    assert "<|think|>" not in tok_cfg["additional_special_tokens"]
    added = {t["content"]: t["special"] for t in
             json.loads((hf_dir / "tokenizer.json").read_text())["added_tokens"]}
    assert [s for s, special in added.items() if not special] == ["<|think|>", "<|/think|>"]
    gen = json.loads((hf_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [8, 1, 5]  # <|/assistant|>, <|eos|>, <|user|>
    meta = json.loads((hf_dir / "config.json").read_text())["forge1"]
    assert meta["variant"] == "custom" and meta["tokenizer_fingerprint"]


def test_every_file_is_readable_like_a_normal_file(hf_dir):
    """Not 0600, the mode safetensors gives its files (issue 23): 0666 less the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    assert {p.name: p.stat().st_mode & 0o777 for p in hf_dir.iterdir()} \
        == {p.name: 0o666 & ~mask for p in hf_dir.iterdir()}


def test_generation_config_samples_with_our_defaults(hf_dir):
    """transformers' `generate` samples as `aethermind chat` does (was greedy, issue 23) and
    stops on our stop tokens."""
    gen = transformers.GenerationConfig.from_pretrained(hf_dir)
    ours = SamplingParams()
    assert gen.do_sample is True
    assert (gen.temperature, gen.top_p, gen.top_k) == (ours.temperature, ours.top_p, 0)
    assert gen.eos_token_id == [8, 1, 5]


def test_transformers_logits_match_forge1(hf_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.dtype == torch.float32
    ours, tok = _ours(hf_dir)
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == ours.config.tie_embeddings
    ids = torch.randint(0, tok.get_vocab_size(), (2, 100))
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids)).abs().max().item()
    assert diff <= 1e-4


CONVS = [
    cf.Conversation(turns=[cf.Turn("What is 2+2?", "The answer is 4.", "2 plus 2 makes 4.")]),
    cf.Conversation(turns=[cf.Turn("Say hello in Japanese", "こんにちは 😀 世界")],
                    system="Be brief."),
    cf.Conversation(turns=[cf.Turn("What is 2+2?", "4", "Add them."),
                           cf.Turn("Sort 3, 1, 2", "1, 2, 3"),
                           cf.Turn("Capital of France?", "Paris.", "Europe.")]),
]


@pytest.mark.parametrize("conv", CONVS)
def test_apply_chat_template_equals_forge1_rendering(hf_dir, conv):
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    _, tok = _ours(hf_dir)
    with_system = conv.system != cf.DEFAULT_SYSTEM_PROMPT
    msgs = conversation_messages(conv)[0 if with_system else 1:]
    text = hf_tok.apply_chat_template(msgs, tokenize=False)
    assert text == cf.render(conv)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == cf.encode(conv, tok)[0]
    history = cf.Conversation(turns=conv.turns[:-1], system=conv.system)
    for think in (None, True, False):
        kwargs = {} if think is None else {"enable_thinking": think}
        prompt = hf_tok.apply_chat_template(msgs[:-1], tokenize=False,
                                            add_generation_prompt=True, **kwargs)
        assert prompt == cf.render_prompt(history, conv.turns[-1].user, think=think)
        ids = hf_tok(prompt, add_special_tokens=False)["input_ids"]
        assert ids == cf.encode_prompt(history, conv.turns[-1].user, tok, think=think)


def test_greedy_generate_matches_the_engine(hf_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ours, tok = _ours(hf_dir)
    stops = [tok.special_ids[cf.END_ASSISTANT], tok.eos_id]
    for conv in CONVS[:2]:
        msgs = [{"role": "user", "content": conv.turns[0].user}]
        ids = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True,
                                         return_tensors="pt")["input_ids"]
        out = hf.generate(ids, max_new_tokens=40, do_sample=False)[0, ids.shape[1]:].tolist()
        ref = Engine(ours).generate(ids[0].tolist(), SamplingParams(max_new_tokens=40),
                                    stop_ids=stops)
        assert out[: len(ref.tokens)] == ref.tokens and len(ref.tokens) > 5
        if ref.finish_reason == "stop":  # HF keeps the stop token, the engine drops it
            assert out[len(ref.tokens):] == [ref.stop_token]


def test_transformers_decode_keeps_the_thinking_and_split_thinking_separates_it(hf_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ours, tok = _ours(hf_dir)
    conv = CONVS[0]  # the model was fit to think on this one
    ids = hf_tok.apply_chat_template([{"role": "user", "content": conv.turns[0].user}],
                                     add_generation_prompt=True, return_dict=True,
                                     return_tensors="pt")["input_ids"]
    out = hf.generate(ids, max_new_tokens=40, do_sample=False)[0, ids.shape[1]:].tolist()
    text = hf_tok.decode(out, skip_special_tokens=True)
    assert text.startswith("<|think|>") and "<|/think|>" in text and "<|assistant|>" not in text
    assert split_thinking(text) == parse_completion(out, tok)[:2] \
        == (conv.turns[0].thinking, conv.turns[0].assistant)
    # the tags still tokenize as one id each, never as BPE pieces
    assert hf_tok("<|think|>x<|/think|>", add_special_tokens=False)["input_ids"] \
        == tok.encode("<|think|>x<|/think|>", allow_special=True)


@pytest.mark.parametrize("think_end, keeps", [
    (7, "answer"),  # the <|assistant|> id, as docs/guide.md says (and `aethermind eval` passes)
    (10, "answer"),  # the <|/think|> id works as well for a well-formed reply
    ("<|/think|>", "answer"),  # a string is searched in decoded text: the think tags are there
    ("<|assistant|>", "all"),  # ... the special tokens never are
    (None, "all"),
])
def test_lm_eval_think_end_token_id_strips_the_thinking(hf_dir, think_end, keeps):
    """lm-eval's HFLM (0.4.13) cuts a generation after the last `think_end_token`: as an
    integer id; a string is matched in text decoded without special tokens."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    turn = CONVS[0].turns[0]  # the model was fit to think on this one
    prompt = hf_tok.apply_chat_template([{"role": "user", "content": turn.user}],
                                        tokenize=False, add_generation_prompt=True)
    lm = HFLM(pretrained=hf, tokenizer=hf_tok, batch_size=1, max_length=128,
              think_end_token=think_end)
    request = Instance("generate_until", {}, (prompt, {"until": ["<|/assistant|>"],
                                                       "max_gen_toks": 40, "do_sample": False}), 0)
    (out,) = lm.generate_until([request])
    if keeps == "answer":
        assert out == turn.assistant
    else:
        assert split_thinking(out) == (turn.thinking, turn.assistant)


def test_import_hf_round_trip_restores_the_checkpoint(hf_dir, tmp_path):
    assert import_main(["--model", str(hf_dir), "--output", str(tmp_path / "a")]) == 0
    model, tok = load_model(tmp_path / "a", device="cpu")
    ours, our_tok = _ours(hf_dir)
    assert tok.fingerprint() == our_tok.fingerprint() and model.config == ours.config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ours.state_dict().items())
    # A directory written by transformers itself (save_pretrained) imports the same way.
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    hf.save_pretrained(tmp_path / "resaved")
    transformers.AutoTokenizer.from_pretrained(hf_dir).save_pretrained(tmp_path / "resaved")
    # ... and the positional spelling from before --model still works.
    assert import_main([str(tmp_path / "resaved"), "--output", str(tmp_path / "b")]) == 0
    again, _ = load_model(tmp_path / "b", device="cpu")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())


def test_import_hf_refuses_what_it_cannot_convert(hf_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    wrong = {}
    for name, edit in (("ffn", {"intermediate_size": 96}), ("layers", {"num_hidden_layers": 3}),
                       ("vocab", {"vocab_size": 448})):
        wrong[name] = shutil.copytree(hf_dir, tmp_path / name)
        cfg = json.loads((hf_dir / "config.json").read_text())
        (wrong[name] / "config.json").write_text(json.dumps({**cfg, **edit}))
    for target, message in ((tmp_path / "missing", "no config.json"), (bad, "only Llama"),
                            (wrong["ffn"], "weights do not fit the config"),
                            (wrong["layers"], "weights lack tensor"),
                            (wrong["vocab"], "must belong together")):
        with pytest.raises(SystemExit) as exc:
            import_main(["--model", str(target), "--output", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "final_model").exists()
