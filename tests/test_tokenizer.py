"""Forge1Tokenizer: special tokens, exact round trips, save/load, transformers compatibility."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

from aethermind.cli import main as aethermind
from aethermind.text.chat_format import SPECIAL_TOKENS
from aethermind.text.tokenizer import MIN_VOCAB, Forge1Tokenizer

ADVERSARIAL = [
    "", " ", "\n", "\r\n", "\t\t", "\x00\x01\x1f\x7f", "héllo wörld", "日本語のテキスト",
    "中文字符和标点。", "emoji 🤖🔥👩‍👩‍👧‍👦 and flags 🇫🇷", "<|user|>", "<|bos|><|eos|>",
    "<|<|think|>|>", "<|/assistant|> trailing", "text with <|no_think|> inside",
    "ZWJ\u200d and \u2060 joiners", "\ufeffBOM", "   leading and trailing   ",
    "a" * 500, "mixed 123 + 456 = 579 ✓", "\U0001f600" * 5, "Ω≈ç√∫˜µ≤≥÷",
]


def _random_text(rng: random.Random, n: int) -> str:
    """Code points from every plane except surrogates."""
    chars = []
    for _ in range(n):
        cp = rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0, 0x20),
                         rng.randrange(0xA0, 0xD800), rng.randrange(0xE000, 0x10FFFF)])
        chars.append(chr(cp))
    return "".join(chars)


@pytest.fixture(params=["tiny", "default"])
def tok(request, tiny_tokenizer, default_tokenizer) -> Forge1Tokenizer:
    return tiny_tokenizer if request.param == "tiny" else default_tokenizer


def test_special_tokens_have_fixed_atomic_ids(tok):
    for idx, special in enumerate(SPECIAL_TOKENS):
        assert tok.special_ids[special] == idx
        assert tok.encode(special, allow_special=True) == [idx]
        assert tok.decode([idx]) == special
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_round_trip_and_no_special_ids_from_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))


def test_random_unicode_round_trips(tok):
    rng = random.Random(1234)
    texts = [_random_text(rng, rng.randrange(0, 80)) for _ in range(200)]
    for text, ids in zip(texts, tok.encode_batch(texts), strict=True):
        assert tok.decode(ids) == text
        assert min(ids, default=99) >= len(SPECIAL_TOKENS)


def test_allow_special_maps_template_strings(tiny_tokenizer):
    ids = tiny_tokenizer.encode("<|user|>hi<|/user|>", allow_special=True)
    assert ids[0] == tiny_tokenizer.special_ids["<|user|>"]
    assert ids[-1] == tiny_tokenizer.special_ids["<|/user|>"]


def test_padded_vocab_is_multiple_of_64(tok):
    padded = tok.get_vocab_size_padded()
    assert padded % 64 == 0 and 0 <= padded - tok.get_vocab_size() < 64


def test_default_tokenizer_is_bundled_and_small():
    from aethermind.text.tokenizer import DEFAULT_TOKENIZER

    tok = Forge1Tokenizer()
    assert tok.get_vocab_size() >= 8000
    assert (DEFAULT_TOKENIZER / "tokenizer.json").stat().st_size < 1_500_000


def test_save_load_round_trip_keeps_fingerprint(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save(tmp_path / "tok")
    again = Forge1Tokenizer(tmp_path / "tok")
    assert again.fingerprint() == tiny_tokenizer.fingerprint()
    assert again.encode("Paris is the capital") == tiny_tokenizer.encode("Paris is the capital")
    assert not list(tmp_path.glob("tok/.*.tmp*"))


def test_exported_json_shows_think_tags_and_loads_back_as_the_original(tok):
    """Outside tools keep the think tags in decoded text; loaded back by us, the tokenizer is
    the original one (same fingerprint, plain text still never yields a special id)."""
    exported = Tokenizer.from_str(tok.export_json())
    ids = tok.encode("<|think|>\nhm\n<|/think|>\n<|assistant|>ok<|/assistant|>",
                     allow_special=True)
    assert exported.decode(ids, skip_special_tokens=True) == "<|think|>\nhm\n<|/think|>\nok"
    assert tok.decode(ids, skip_special=True) == "\nhm\n\nok"  # ours: unchanged
    again = Forge1Tokenizer.from_json(tok.export_json())
    assert again.to_json() == tok.to_json() and again.fingerprint() == tok.fingerprint()
    assert again.encode("<|think|>") == tok.encode("<|think|>") != [tok.special_ids["<|think|>"]]


def test_reference_tokenizers_library_decodes_our_ids(tmp_path, default_tokenizer):
    default_tokenizer.save(tmp_path)
    ref = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in ADVERSARIAL:
        ids = default_tokenizer.encode(text)
        assert ref.decode(ids, skip_special_tokens=False) == text
        if "<|" not in text:
            assert ref.encode(text, add_special_tokens=False).ids == ids


def test_transformers_fast_tokenizer_loads_saved_dir(tmp_path, default_tokenizer):
    transformers = pytest.importorskip("transformers")
    default_tokenizer.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    text = "What is 15 * 23? Let me think: 15 * 23 = 345."
    assert hf.encode(text, add_special_tokens=False) == default_tokenizer.encode(text)
    assert hf.convert_tokens_to_ids("<|think|>") == default_tokenizer.special_ids["<|think|>"]
    assert hf.eos_token == "<|eos|>" and hf.pad_token == "<|pad|>"


def test_train_rejects_too_small_vocab():
    with pytest.raises(ValueError, match=f"at least {MIN_VOCAB}"):
        Forge1Tokenizer.train(["abc"], vocab_size=100)


def test_missing_tokenizer_dir_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="aethermind tokenizer train"):
        Forge1Tokenizer(tmp_path / "nope")


def test_cli_trains_from_jsonl(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": f"sample number {i} with some words"}) for i in range(200)]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "tok"
    rc = aethermind(["tokenizer", "train", "--input", str(data), "--vocab-size", "320",
                     "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert Forge1Tokenizer(out).get_vocab_size() <= 320


def test_cli_missing_input_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        aethermind(["tokenizer", "train", "--input", str(tmp_path / "missing.jsonl"),
                    "--vocab-size", "320", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "missing.jsonl: file not found" in err
    assert "Traceback" not in err


def test_digits_are_single_tokens(default_tokenizer):
    ids = default_tokenizer.encode("1610")
    assert [default_tokenizer.decode([i]) for i in ids] == ["1", "6", "1", "0"]


@pytest.mark.slow
def test_bundled_tokenizer_is_reproducible(tmp_path):
    """The README's command rebuilds the bundled default byte for byte (same CPython minor)."""
    cmd = [sys.executable, "-m", "aethermind.cli", "tokenizer", "train", "--builtin-corpus",
           "--vocab-size", "16384", "--output", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert Forge1Tokenizer(tmp_path).fingerprint() == Forge1Tokenizer().fingerprint()
