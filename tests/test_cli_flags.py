"""One flag vocabulary: every command's options have help and follow the same names.

Walks `cli.COMMANDS` -> module -> `build_parser()` (and its sub-command parsers), so a new
command or flag is checked without editing this file. The vocabulary lives here, in one place:
a spelling in SYNONYMS is refused in favour of the name it maps to.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import aethermind
from aethermind import cli

REPO = Path(__file__).resolve().parents[1]
LONG_OPTION = re.compile(r"--[a-z0-9]+(-[a-z0-9]+)*")  # lowercase words joined by hyphens
SYNONYMS = {  # refused spelling -> the one name every command uses
    "--out": "--output", "--output-dir": "--output", "--out-dir": "--output",
    "--outdir": "--output", "--output-path": "--output", "--save-dir": "--output",
    "--checkpoint": "--model", "--ckpt": "--model", "--model-path": "--model",
    "--model-dir": "--model", "--weights": "--model", "--hf-dir": "--model",
    "--random-seed": "--seed", "--rng-seed": "--seed",
    "--gpu": "--device", "--cuda": "--device", "--cpu": "--device",
    "--num-tokens": "--max-new-tokens", "--max-length": "--max-new-tokens",
    "--bs": "--batch-size", "--batch": "--batch-size",
    "--seq-len": "--context-length", "--ctx": "--context-length",
    "--block-size": "--context-length",
    "--tokenizer-dir": "--tokenizer", "--tokenizer-path": "--tokenizer",
    "--cfg": "--config", "--config-file": "--config",
}


def _walk(label: str, parser: argparse.ArgumentParser
          ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield label, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(f"{label} {name}", sub)


def _every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for name, (module, _) in cli.COMMANDS.items():
        builder = getattr(importlib.import_module(module), "build_parser", None)
        assert builder is not None, f"{module} has no build_parser()"
        found += _walk(f"aethermind {name}", builder())
    return found


PARSERS = _every_parser()


@pytest.mark.parametrize("label, parser", PARSERS, ids=[label for label, _ in PARSERS])
def test_every_option_has_help_and_follows_the_vocabulary(label, parser):
    visible_dests = {a.dest for a in parser._actions if a.help is not argparse.SUPPRESS}
    for action in parser._actions:
        names = action.option_strings or [action.dest]
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert (choice.help or "").strip(), f"{label} {choice.dest}: no help"
            continue
        if action.help is argparse.SUPPRESS:
            # A hidden option is an old spelling kept working: it must feed a visible one.
            assert action.dest in visible_dests, f"{label} {names}: hidden and no alias"
            continue
        assert (action.help or "").strip(), f"{label} {names}: no help text"
        for option in action.option_strings:
            if option == "-h":
                continue
            assert LONG_OPTION.fullmatch(option), f"{label} {option}: not --lowercase-words"
            assert option not in SYNONYMS, f"{label} {option}: call it {SYNONYMS[option]}"


def test_the_walk_reaches_sub_commands_and_old_spellings_still_parse():
    labels = {label for label, _ in PARSERS}
    assert {"aethermind data synth", "aethermind data pack", "aethermind data download",
            "aethermind data preprocess", "aethermind tokenizer train"} <= labels
    from aethermind.data import cli as data_cli
    from aethermind.export import hf

    assert data_cli.synth_parser().parse_args(["--out", "x"]).output == Path("x")
    assert data_cli.pack_parser().parse_args(["--out", "x"]).output == Path("x")
    for argv in (["some/dir"], ["--model", "some/dir"]):
        assert Path(hf.build_parser().parse_args(argv).model) == Path("some/dir")


def test_version_is_the_packages_and_pyproject_reads_it_from_there(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"aethermind {aethermind.__version__}"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on 3.10
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.M)  # no second, static one
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert re.search(r'^version = \{ attr = "aethermind.__version__" \}', pyproject, re.M)


def test_console_version_runs_without_importing_torch():
    code = ("import sys\nfrom aethermind import cli\ncli.main(['--version'])\n"
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"aethermind {aethermind.__version__}"
