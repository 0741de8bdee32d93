"""Forge1Tokenizer: a Hugging Face `tokenizers` definition with the 12 Forge-1 special tokens.

Ours (`train`, the bundled default) is byte-level BPE with the special tokens at ids 0-11. A
foreign one (a Hub Llama's tokenizer.json: byte-level BPE like SmolLM2, or SentencePiece-style
like TinyLlama) is adopted on load (`adopt_json`): its vocabulary, merges, normalizer and own
special tokens are kept; the Forge-1 special tokens it lacks are appended after its ids
(`added_specials` names them; the model's embedding must grow to match, `model.resize`).
Whatever the style, special tokens are atomic. `encode()` treats its input as plain text, so a
literal "<|user|>" typed by a user stays ordinary bytes; only `encode(..., allow_special=True)`
(used on already-trusted template text) maps those strings to special ids. A lone surrogate
(what Python makes of undecodable input bytes, e.g. in argv) cannot be UTF-8: `encode` reads
it as U+FFFD (`replace_surrogates`), as undecodable stdin is read. The saved
`tokenizer.json` also loads in `transformers.PreTrainedTokenizerFast`; `export_json()` is the
variant written for outside tools (think tags not special, see `special_tokens.VISIBLE_TOKENS`),
and loading that variant back restores all 12 as special. A leaf module: it knows
the special-token strings and nothing else of the package (no template, no data); the training
command and its corpus live in `aethermind.data.tokenizer_train`.
Usage: `tok = Forge1Tokenizer(); ids = tok.encode("hi"); tok.decode(ids) == "hi"`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from aethermind.runtime.files import atomic_text
from aethermind.text.special_tokens import SPECIAL_TOKENS, VISIBLE_TOKENS

DEFAULT_TOKENIZER = Path(__file__).parents[1] / "assets" / "tokenizer"
MIN_VOCAB = len(SPECIAL_TOKENS) + 256 + 32  # specials + byte alphabet + a few merges
_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, so it can be encoded as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


class Forge1Tokenizer:
    def __init__(self, path: str | Path | None = None) -> None:
        """Load `path` (a directory holding tokenizer.json, or the file); None = bundled default."""
        path = Path(path) if path is not None else DEFAULT_TOKENIZER
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer at {path}: expected a directory with "
                                    "tokenizer.json (make one with `aethermind tokenizer train`)")
        try:
            self._init_from_json(file.read_bytes().decode("utf-8"))
        except ValueError as err:  # also UnicodeDecodeError: a binary file
            raise ValueError(f"{file}: not a usable tokenizer.json ({_first_line(err)}); "
                             "retrain it or point to another tokenizer") from None

    def _init_from_json(self, blob: str) -> None:
        try:
            self._tok = Tokenizer.from_str(blob)  # parses special-token strings
        except Exception as err:  # the Rust parser raises its own exception type
            raise ValueError(f"invalid tokenizer JSON: {_first_line(err)}") from None
        plain = [t.content for t in self._tok.get_added_tokens_decoder().values()
                 if t.content in SPECIAL_TOKENS and not t.special]
        if plain:  # an exported tokenizer.json (export_json): back to the canonical form
            blob = _with_special(blob, set(SPECIAL_TOKENS))
        blob, self.added_specials = adopt_json(blob)
        self._tok = Tokenizer.from_str(blob)
        self._json = blob
        self._plain = Tokenizer.from_str(blob)
        self._plain.encode_special_tokens = True  # never produce special ids from text
        self.special_ids = {s: self._tok.token_to_id(s) for s in SPECIAL_TOKENS}
        assert None not in self.special_ids.values(), "adopt_json adds every special token"
        self.bos_id, self.eos_id, self.pad_id = (self.special_ids[s] for s in SPECIAL_TOKENS[:3])

    @classmethod
    def from_json(cls, blob: str) -> Forge1Tokenizer:
        self = cls.__new__(cls)
        self._init_from_json(blob)
        return self

    # --- training -------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2
              ) -> Forge1Tokenizer:
        """Train byte-level BPE on `texts`; the vocab includes the 12 specials and 256 bytes."""
        if vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size={vocab_size}: must be at least {MIN_VOCAB} "
                             "(12 special tokens + 256 bytes + merges)")
        tok = Tokenizer(models.BPE())
        # Digits split one by one (as in LLaMA): arithmetic is then learnable digit by digit
        # instead of over an arbitrary set of merged number chunks.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(_strip_specials(texts), trainer=trainer)
        return cls.from_json(tok.to_str())

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json (+ transformers' small config files) atomically into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "tokenizer.json": self._json,
            "tokenizer_config.json": json.dumps({
                "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[1], "pad_token": SPECIAL_TOKENS[2],
                "model_max_length": 1_000_000, "clean_up_tokenization_spaces": False,
            }, indent=2),
        }
        for name, content in files.items():
            atomic_text(content, directory / name)
        return directory

    # --- encode / decode ------------------------------------------------------------------------
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        tok = self._tok if allow_special else self._plain
        return tok.encode(replace_surrogates(text), add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], allow_special: bool = False) -> list[list[int]]:
        tok = self._tok if allow_special else self._plain
        texts = [replace_surrogates(t) for t in texts]
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def get_vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def get_vocab_size_padded(self, multiple: int = 64) -> int:
        """Vocab rounded up to `multiple`: aligned embedding shapes run faster on GPUs."""
        return -(-self.get_vocab_size() // multiple) * multiple

    def to_json(self) -> str:
        """The full `tokenizers` definition (vocab, merges, pre-tokenizer): what exporters copy."""
        return self._json

    def export_json(self) -> str:
        """tokenizer.json for outside tools: `VISIBLE_TOKENS` are ordinary added tokens there,
        so their decoders keep the think tags in the text (still one id each)."""
        return _with_special(self._json, set(SPECIAL_TOKENS) - set(VISIBLE_TOKENS))

    def fingerprint(self) -> str:
        """Short hash of the tokenizer's full definition, to detect stale shards and checkpoints."""
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()[:16]


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _with_special(blob: str, special: set[str]) -> str:
    """`blob` with exactly `special` of the 12 flagged special, in `tokenizers`' own
    serialisation (canonical: a round trip through this function restores the bytes, so the
    fingerprint of an exported and re-imported tokenizer is the original one)."""
    spec = json.loads(blob)
    for token in spec["added_tokens"]:
        if token["content"] in SPECIAL_TOKENS:
            token["special"] = token["content"] in special
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False)).to_str()


def adopt_json(blob: str) -> tuple[str, tuple[str, ...]]:
    """(`blob` made a Forge-1 tokenizer, the special tokens that had to be added).

    A definition that already has the 12 (ours, or an adopted one saved back) is returned
    unchanged, byte for byte, so its fingerprint stays. A foreign one gets, in canonical
    serialisation (adopting it again is then the identity):
    - the missing Forge-1 special tokens appended after its last id, in `SPECIAL_TOKENS` order;
    - no post-processor: ours never adds tokens on its own (`encode` passes
      add_special_tokens=False, and the chat template writes <|bos|>), and an HF export must
      not prepend the foreign <s> either;
    - a Metaspace pre-tokenizer's prepend_scheme "first" made "always": "first" adds the word
      prefix only at offset 0 of the whole string, so in an HF export the text after each
      template token would get other ids than our piecewise `chat_format.encode` gives it.
    """
    spec = json.loads(blob)
    present = {t["content"] for t in spec.get("added_tokens") or ()}
    missing = tuple(s for s in SPECIAL_TOKENS if s not in present)
    metaspace = _metaspace_first(spec.get("pre_tokenizer"))
    if not missing and not metaspace:
        return blob, ()
    for node in metaspace:
        node["prepend_scheme"] = "always"
    spec["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    before = tok.get_vocab_size(with_added_tokens=True)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in missing])
    # A string its base vocabulary already holds keeps that id: only new ids count as added.
    return tok.to_str(), tuple(s for s in missing if tok.token_to_id(s) >= before)


def _metaspace_first(node: object) -> list[dict]:
    """The Metaspace pre-tokenizers with prepend_scheme "first" in `node` (nested Sequences)."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
        return [node]
    return [m for child in node.get("pretokenizers") or () for m in _metaspace_first(child)]


def _strip_specials(texts: Iterable[str]) -> Iterator[str]:
    """Template markup is not language: keep it out of the merges."""
    for text in texts:
        for special in SPECIAL_TOKENS:
            text = text.replace(special, "\n")
        yield text
