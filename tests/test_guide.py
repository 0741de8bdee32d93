"""The guide's own snippets and commands, run verbatim (docs/guide.md is the seed guide)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text import chat_format as cf
from aethermind.text.tokenizer import Forge1Tokenizer

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide.md"
SMALL_NANO = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=1024)


def _manual_testing_snippet() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("### Manual Testing"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_guide_manual_testing_snippet_runs_verbatim_on_cpu(tmp_path):
    """Section 5's snippet, with only device="cuda" -> "cpu" as the issue allows on a CPU box.

    The wiring (guide import paths, Forge1Config.nano(), load_state_dict, the pipeline, the
    result's fields) is what is under test, so a prelude shrinks the nano preset to one small
    layer before the verbatim text runs: the same code path in seconds instead of minutes.
    """
    snippet = _manual_testing_snippet()
    assert 'device="cuda"' in snippet and "Forge1Config.nano()" in snippet
    snippet = snippet.replace('device="cuda"', 'device="cpu"')
    prelude = f"from aethermind.model.config import PRESETS\nPRESETS['nano'] = {SMALL_NANO!r}\n"
    # The snippet loads outputs/final_model/forge1_nano_final.pt relative to the repo root; run
    # it in a scratch root holding the guide's packages so the real repo stays clean.
    for name in ("aethermind", "model", "inference"):
        (tmp_path / name).symlink_to(REPO / name)
    cfg = Forge1Config(**SMALL_NANO, vocab_size=Forge1Tokenizer().get_vocab_size_padded())
    final = tmp_path / "outputs" / "final_model"
    final.mkdir(parents=True)
    torch.save(Forge1Model(cfg).state_dict(), final / "forge1_nano_final.pt")
    done = subprocess.run([sys.executable, "-c", prelude + snippet], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Thinking:" in done.stdout and "Answer:" in done.stdout


def test_guide_model_and_tokenizer_paths_are_reexports():
    from model.architecture import Forge1Config as GuideConfig
    from model.architecture import Forge1Model as GuideModel
    from model.tokenizer import Forge1Tokenizer as GuideTokenizer

    assert (GuideConfig, GuideModel, GuideTokenizer) == (Forge1Config, Forge1Model,
                                                         Forge1Tokenizer)


def test_guide_gives_lm_eval_the_assistant_id_as_think_end_token():
    """The id the guide tells lm-eval users is the one `aethermind eval` passes."""
    text = GUIDE.read_text(encoding="utf-8")
    assert f"think_end_token={Forge1Tokenizer().special_ids[cf.ASSISTANT]}" in text
