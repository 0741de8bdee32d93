"""`aethermind eval --suite tiny|standard|full`: benchmarks through lm-evaluation-harness.

The trained model is written as a Hugging Face folder by the project's exporter (`to_hf`, the
one place that calls it), loaded with `transformers` and handed to lm-eval's `HFLM` in memory.
Multiple-choice benchmarks are scored by log-likelihood: the standard ones on plain text, as
their published numbers are, the tiny one through the chat template without thinking (lm-eval
refuses thinking for log-likelihood). Generative benchmarks go through the exported chat
template with `enable_thinking` from `--think`; lm-eval keeps what follows the last
`<|assistant|>` id (`think_end_token`, which must be an integer id for a special token): for
a well-formed completion the answer `thinking.OutputRouter` returns (a test checks it). A
malformed one can differ: without `<|assistant|>` lm-eval keeps all the text, with two it keeps
the text after the last. Generation stops at `chat_format.STOP_TOKENS`.
Standard datasets are checked in the Hugging Face cache first: offline and missing is one
line naming them and exit 2. Writes `<output>/bench_card.{json,md}` and `results.json`.
Needs the optional extra: `pip install -e ".[eval]"`.
Usage: `aethermind eval --model outputs/demo/final_model --suite tiny`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from aethermind.artifacts.exported import ExportMeta
from aethermind.evaluation.suites import Suite
from aethermind.export.hf import write_hf_dir
from aethermind.runtime.files import atomic_text
from aethermind.text import chat_format as cf

THINK = ("on", "off")
CPU_BATCH = 32  # sequences per forward on a CPU; a GPU lets lm-eval find the largest ("auto")
FIDELITY_PER_TASK = 2  # held-out questions per synthetic family in the fidelity figure


class EvalError(ValueError):
    """A one-line reason `aethermind eval` cannot run (shown without a traceback)."""


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- datasets: present, or one line saying how to get them -----------------------------------
def go_offline() -> None:
    """Make `datasets` and the Hub client read only their caches (no retries for minutes).
    The variables are read at import; a library imported earlier gets its flag set too."""
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    for module, flag in (("datasets.config", "HF_DATASETS_OFFLINE"),
                         ("datasets.config", "HF_HUB_OFFLINE"),
                         ("huggingface_hub.constants", "HF_HUB_OFFLINE")):
        if module in sys.modules:
            setattr(sys.modules[module], flag, True)


def missing_datasets(suite: Suite) -> list[str]:
    """`path[:config]` of every dataset the suite needs that the offline cache cannot load."""
    import datasets

    missing: list[str] = []
    for bench in suite.benchmarks:
        for path, name in bench.datasets:
            try:
                datasets.load_dataset_builder(path, name)
            except Exception:  # not cached: ConnectionError, FileNotFoundError, ... by version
                label = path if name is None else f"{path}:{name}"
                if path == "cais/mmlu":
                    label = f"{path} ({len(bench.datasets)} subjects)"
                if label not in missing:
                    missing.append(label)
                if path == "cais/mmlu":
                    break
    return missing


def download(suite: Suite) -> None:
    import datasets

    for bench in suite.benchmarks:
        for path, name in bench.datasets:
            _progress(f"  {path}{'' if name is None else ':' + name}")
            datasets.load_dataset(path, name)


# --- the model as lm-eval sees it -------------------------------------------------------------
def to_hf(model: Any, tok: Any, directory: Path) -> tuple[Any, Any]:
    """(transformers model on the model's device, tokenizer) from the project's HF export."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_hf_dir(model, tok, ExportMeta.of(model, tok), directory)
    # The export leaves the think tags visible to decoders (for users to split the thinking);
    # lm-eval decodes answers with skip_special_tokens, and a stray think tag inside an answer
    # must vanish there as it does in our parser: here all 12 tokens stay special.
    atomic_text(tok.to_json(), directory / "tokenizer.json")
    device = next(model.parameters()).device
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).to(device)
    return hf.eval(), AutoTokenizer.from_pretrained(directory)


def gen_kwargs(tok: Any, max_gen_toks: int) -> dict[str, Any]:
    """Greedy, stopped per sequence at the chat format's stop tokens (by id, so a finished row
    of a batch stops, and as strings for lm-eval's own check)."""
    return {"until": list(cf.STOP_TOKENS), "eos_token_id": cf.stop_ids(tok),
            "max_gen_toks": max_gen_toks, "do_sample": False}


def run_suite(model: Any, tok: Any, suite: Suite, *, think: bool, batch_size: int | str,
              limit: int | None = None) -> dict[str, Any]:
    """lm-eval's merged output ("results", "samples", "n-samples") for every benchmark."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(suite.include_path) if suite.include_path else None)
    max_gen = min(suite.max_gen_toks, model.config.max_seq_len // 2)
    merged: dict[str, Any] = {"results": {}, "samples": {}, "n-samples": {}}
    with tempfile.TemporaryDirectory(prefix="aethermind-eval-") as tmp:
        hf, hf_tok = to_hf(model, tok, Path(tmp))
        common = {"pretrained": hf, "tokenizer": hf_tok, "batch_size": batch_size,
                  "max_length": model.config.max_seq_len}
        mc = [b.task for b in suite.benchmarks if not b.generative]
        gen = [b.task for b in suite.benchmarks if b.generative]
        runs = []
        if mc:  # plain text for standard (comparable numbers), chat without thinking for tiny
            runs.append((HFLM(**common, enable_thinking=False if suite.chat_mc else None),
                         mc, suite.chat_mc))
        if gen:
            runs.append((HFLM(**common, enable_thinking=think,
                              think_end_token=tok.special_ids[cf.ASSISTANT]), gen, True))
        for lm, tasks, chat in runs:
            _progress(f"  lm-eval: {', '.join(tasks)}")
            out = simple_evaluate(lm, tasks=tasks, num_fewshot=0, task_manager=tm, limit=limit,
                                  apply_chat_template=chat, gen_kwargs=gen_kwargs(tok, max_gen),
                                  log_samples=True, bootstrap_iters=1000)
            for key in merged:
                merged[key].update(out.get(key, {}))
    merged["n-samples"] = {k: v.get("effective") for k, v in merged["n-samples"].items()}
    return merged
