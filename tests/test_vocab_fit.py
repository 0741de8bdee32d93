"""The demo vocabulary: the bundled tokenizer cut down to the tokens a corpus uses."""

from __future__ import annotations

from aethermind.data import synth
from aethermind.data.vocab_fit import fit_vocabulary, id_to_token
from aethermind.text.chat_format import render
from aethermind.text.tokenizer import Forge1Tokenizer


def test_fitted_vocabulary_splits_the_corpus_exactly_as_the_base(tmp_path):
    base = Forge1Tokenizer()
    texts = [render(c) for c in synth.to_conversations(synth.make_split("train", 600))]
    small = fit_vocabulary(base, texts[:400])
    assert small.get_vocab_size() < base.get_vocab_size() // 4
    assert small.special_ids == base.special_ids  # the template's ids never move
    small_names, base_names = id_to_token(small), id_to_token(base)
    for text in texts[:400]:
        got = [small_names[i] for i in small.encode(text, allow_special=True)]
        assert got == [base_names[i] for i in base.encode(text, allow_special=True)]
    # Text outside the corpus still round-trips (all byte tokens are kept).
    for text in ("Write a haiku about programming.", "naïve café ☕ 🚀", texts[-1]):
        assert small.decode(small.encode(text)) == text
    reloaded = Forge1Tokenizer(small.save(tmp_path / "tok"))
    assert reloaded.fingerprint() == small.fingerprint()
