"""The offline corpus the bundled default tokenizer is trained on.

Everything here ships with Python itself or with this package, so the default tokenizer can be
rebuilt anywhere without a network:
    aethermind tokenizer train --builtin-corpus --vocab-size 16384 \
        --output aethermind/assets/tokenizer
It mixes English prose (Python's help topics and the stdlib's docstrings: explanations,
definitions, examples) with the built-in reasoning conversations, so both prose and the numbers
and step-by-step traces of the synthetic set compress well. Text from a different Python
version gives a slightly different tokenizer; the bundled one was built with CPython 3.11.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

from aethermind.data.synth import corpus_texts


def _help_topics() -> Iterator[str]:
    for name in sorted(topics):
        yield topics[name]


def _stdlib_docstrings() -> Iterator[str]:
    """Docstrings of the standard library (tests and site-packages excluded), in sorted order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).parts
        if rel[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in rel:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    yield doc


def _synthetic_conversations(n: int = 20000) -> Iterator[str]:
    yield from corpus_texts(n)


def builtin_corpus() -> Iterator[str]:
    yield from _help_topics()
    yield from _stdlib_docstrings()
    yield from _synthetic_conversations()
