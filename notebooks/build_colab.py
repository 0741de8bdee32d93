"""Write notebooks/forge1_colab.ipynb: the guide on a free Colab T4, top to bottom.

The notebook is generated, never edited by hand: `COMMANDS` holds every guide command it runs
(as templates over the notebook's own variables), `PARAMETERS` the T4 defaults of its
papermill-style parameters cell, `SMOKE` what smoke mode changes (the CI run: tiny preset,
built-in data, CPU, four steps). tests/test_notebook.py checks that the committed notebook is
this file's output, that every command rendered with the T4 and the smoke settings appears
verbatim in docs/guide.md or README.md, and that the T4 settings fit the memory planner.
Usage: `python notebooks/build_colab.py` (rewrite) or `--check` (exit 1 if the file is stale).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().with_name("forge1_colab.ipynb")

# name, T4 default, comment: the parameters cell, in this order.
PARAMETERS: list[tuple[str, object, str]] = [
    ("SMOKE", False, "True: tiny preset, built-in offline data, CPU, 4 steps (the CI run)"),
    ("REPO_URL", "https://github.com/Mr-Dark-debug/AetherMind.git", "the repository to clone"),
    ("COMMIT", "", "SHA or tag to pin; '' = the one a first run recorded on Drive, else main"),
    ("USE_DRIVE", True, "checkpoints on Google Drive: rerun all after a disconnect to resume"),
    ("DATA_SIZE", 10000, "samples per dataset (1000 for a quick first run)"),
    ("CONFIG", "configs/colab_config.yaml", "the training YAML (T4: mini, fp16, batch 4 x 1024)"),
    ("VARIANT", "mini", "tiny | nano | mini"),
    ("EXTRA_SETS", [], "training overrides, e.g. ['max_steps=500', 'batch_size=2']"),
    ("GGUF_DTYPE", "q8_0", "f32 | f16 | q8_0"),
    ("CHAT_PROMPTS", ["What is 15 * 23?", "What is the capital of France?"],
     "answered in the chat cell"),
    ("DOWNLOAD", True, "offer the HF folder (zipped) and the GGUF for download"),
]

# What smoke mode changes; four steps of batch 4 x 128 keep the CI run near a minute.
SMOKE: dict[str, object] = {
    "CONFIG": "configs/cpu_config.yaml", "VARIANT": "tiny", "DATA_SIZE": 1000,
    "USE_DRIVE": False, "DOWNLOAD": False,
    "EXTRA_SETS": ["max_steps=4", "batch_size=4", "context_length=128", "eval_every=2",
                   "checkpoint_every=2", "eval_batches=1"],
    "EVAL_ARGS": " --n-test 0 --max-new-tokens 24 --val-max-docs 20",
}

# Every guide command the notebook runs. Fields are notebook variables: SETS is the `--set`
# overrides (EXTRA_SETS plus precision=bf16 on Ampere or newer), OUT the config's output_dir.
COMMANDS: dict[str, str] = {
    "clone": "git clone {REPO_URL}",
    "setup": "python scripts/colab_setup.py",
    "download": "python data/download_datasets.py {DATA_SIZE}",
    "preprocess": "python data/preprocess.py --max-samples {DATA_SIZE}",
    "synth": "aethermind data synth --out data --n-train {DATA_SIZE}",
    "plan": "aethermind plan --config {CONFIG} --variant {VARIANT}{SETS} --gpu-gb {GPU_GB:g}",
    "train": "python scripts/train.py --config {CONFIG} --variant {VARIANT} --resume{SETS}",
    "evaluate": "python scripts/evaluate.py --model {OUT}/final_model --variant {VARIANT}"
                "{EVAL_ARGS}",
    "bench_card": "aethermind eval --model {OUT}/final_model --suite tiny",
    "export_hf": "aethermind export --model {OUT}/final_model --format hf",
    "export_gguf": "aethermind export --model {OUT}/final_model --format gguf --dtype {GGUF_DTYPE}",
}

T4_GIB = 15.0  # a T4's 15,360 MiB: what the plan cell assumes when there is no GPU to ask


def settings(smoke: bool) -> dict[str, object]:
    """The notebook's variables after its settings cell, on a T4 (or in smoke mode, on a CPU)."""
    values: dict[str, object] = {name: value for name, value, _ in PARAMETERS}
    values.update({"EVAL_ARGS": "", "GPU_GB": T4_GIB, "OUT": "outputs"})
    if smoke:
        values.update(SMOKE, SMOKE=True, OUT="outputs/tiny_cpu")
    values["SETS"] = "".join(f" --set {s}" for s in values["EXTRA_SETS"])  # type: ignore[attr-defined]
    return values


def command(name: str, values: dict[str, object]) -> str:
    return COMMANDS[name].format(**values)


def _f(name: str) -> str:
    """A command as the f-string a cell evaluates: the same template, the cell's variables."""
    text = COMMANDS[name]
    return ('f"' if "{" in text else '"') + text + '"'


def _literal(value: object) -> str:
    """`repr`, with a dict one item a line and a long list one element a line (ruff's 100)."""
    if isinstance(value, dict):
        return "{\n" + "".join(f"    {k!r}: {_literal(v)},\n" for k, v in value.items()) + "}"
    if isinstance(value, list) and len(repr(value)) > 60:
        return "[\n" + "".join(f"        {v!r},\n" for v in value) + "    ]"
    return repr(value)


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip("\n")}


def _code(text: str, *tags: str) -> dict:
    meta = {"tags": list(tags)} if tags else {}
    return {"cell_type": "code", "execution_count": None, "metadata": meta, "outputs": [],
            "source": text.strip("\n").format(**{k: _f(k) for k in COMMANDS},
                                                smoke=_literal(SMOKE), t4=repr(T4_GIB))}


def _parameters_cell() -> str:
    rows = [f"# {c}\n{n} = {v!r}" for n, v, c in PARAMETERS]
    return "# Parameters (papermill style: this cell is tagged `parameters`).\n\n" + \
        "\n".join(rows)


INTRO = """
# Forge-1 on a free Colab T4: the whole guide, top to bottom

Runtime > Change runtime type > **T4 GPU**, then Runtime > **Run all**. This notebook clones
AetherMind, keeps checkpoints on Google Drive, downloads and preprocesses the datasets, asks the
memory planner whether the settings fit this GPU, trains Forge-1 with a live loss curve,
evaluates it on the guide's prompts, chats with it, and exports a Hugging Face folder and a GGUF.

After a disconnect, reconnect and **Run all** again: the same commit is checked out and training
continues from the newest checkpoint on Drive with the losses an uninterrupted run would have had
(`--resume`). Every command is one of `docs/guide.md` ("Google Colab Guide"); this file is
generated by `notebooks/build_colab.py`, so edit that instead. `SMOKE = True` runs the same cells
on a CPU in about a minute (tiny preset, built-in data, 4 steps): that is what CI executes.
"""

SETTINGS = """
import os
import shlex
import sys
from pathlib import Path

IN_COLAB = "google.colab" in sys.modules
EVAL_ARGS = ""  # extra evaluate options; smoke mode keeps it short
SMOKE_VALUES = {smoke}
if SMOKE:  # the CI run: everything local and offline
    globals().update(SMOKE_VALUES)
"""

GPU = """
# GPU check: name, memory, and the precision training uses (fp16 + loss scaling on a T4).
import torch

if SMOKE:
    GPU_GB, PRECISION = {t4}, "fp32"
    print("smoke mode: CPU, fp32 (the plan below is for a T4's 15 GB)")
elif not torch.cuda.is_available():
    raise RuntimeError("no GPU: Runtime > Change runtime type > T4 GPU (or set SMOKE = True)")
else:
    from aethermind.runtime.dist import gpu_precision

    props = torch.cuda.get_device_properties(0)
    GPU_GB = round(props.total_memory / 2**30, 1)
    PRECISION = gpu_precision((props.major, props.minor))
    print(f"{{props.name}}: {{GPU_GB}} GiB, compute capability {{props.major}}.{{props.minor}}, "
          f"training in {{PRECISION}}")
TRAIN_SETS = EXTRA_SETS + (["precision=bf16"] if PRECISION == "bf16" else [])
SETS = "".join(f" --set {{s}}" for s in TRAIN_SETS)
"""

INSTALL = """
# Install, pinned to one commit (recorded on Drive, so a rerun trains the same code), and keep
# checkpoints on Drive: scripts/colab_setup.py links outputs/checkpoints into MyDrive/AetherMind.
if SMOKE:
    print("smoke mode: the package is already installed; working in", os.getcwd())
else:
    from subprocess import check_output, run

    repo = Path(REPO_URL).stem
    if not Path(repo).is_dir():
        run(shlex.split({clone}), check=True)
    os.chdir(repo)
    sys.path[:0] = [os.getcwd(), "scripts"]
    import colab_setup

    from aethermind.training.notebook import run_command

    drive_ok = USE_DRIVE and colab_setup.mount_drive()
    record = colab_setup.DRIVE_CHECKPOINTS.parent / "commit.txt"
    if not COMMIT and drive_ok and record.is_file():
        COMMIT = record.read_text().strip()
    if COMMIT:
        run_command(f"git checkout --quiet {{shlex.quote(COMMIT)}}")
    sha = check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    if drive_ok:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(sha + "\\n")
    print("commit", sha)
    run_command({setup})
"""

DATA = """
from aethermind.training.config import load_config
from aethermind.training.notebook import run_command, train_live

if SMOKE:  # the built-in reasoning set: offline, seconds
    run_command({synth})
else:
    run_command({download})
    run_command({preprocess})
"""

PLAN = """
# The memory planner's verdict for these settings on this GPU, before any time is spent.
from aethermind.training import plan

run_command({plan})
CFG = load_config(CONFIG, TRAIN_SETS, VARIANT)
OUT = CFG.output_dir
need = plan.estimate(plan.model_config(CFG, VARIANT), CFG).total(CFG.gradient_checkpointing)
if need > GPU_GB * 2**30:
    raise RuntimeError(f"{{need / 2**30:.2f}} GB does not fit {{GPU_GB}} GB: lower batch_size "
                       "(EXTRA_SETS) or pick a smaller VARIANT, then rerun from here")
"""

TRAIN = """
# Train with a live loss curve. Interrupt the cell to stop: a checkpoint is saved first, and
# rerunning continues from it (--resume; the first run says there is nothing to resume yet).
TRAIN = {train}
train_live(TRAIN, f"{{OUT}}/metrics.jsonl")
"""

EVALUATE = """
run_command({evaluate})
# The bench card (lm-evaluation-harness on held-out questions, offline; guide section 5 has the
# standard suite for a real run): each score against random, and think-format fidelity.
run_command({bench_card})
"""

CHAT = """
# Chat: call chat("...") in any new cell; history is kept (chat_reset() clears it). For the
# full interactive chat with its /commands: !python scripts/chat.py --model {{OUT}}/final_model
from aethermind.artifacts.loading import load_model
from aethermind.inference.thinking import run_thinking_pipeline
from aethermind.text.chat_format import Turn

model, tokenizer = load_model(f"{{OUT}}/final_model", device="cpu" if SMOKE else "auto")
history: list[Turn] = []


def chat(message: str, max_new_tokens: int = 24 if SMOKE else 256) -> None:
    r = run_thinking_pipeline(model, tokenizer, message, max_new_tokens, temperature=0.7,
                              device=next(model.parameters()).device, history=history)
    history.append(Turn(message, r.answer, r.thinking if r.used_thinking else None))
    print(f"You: {{message}}")
    if r.used_thinking:
        print(f"  (thinking) {{r.thinking}}")
    print(f"Forge-1: {{r.answer}}\\n")


def chat_reset() -> None:
    history.clear()


for prompt in CHAT_PROMPTS:
    chat(prompt)
"""

EXPORT = """
# Export a Hugging Face folder and a GGUF, then offer them for download (and copy to Drive).
import re
import shutil

EXPORT_HF = {export_hf}
EXPORT_GGUF = {export_gguf}
written = []
for cmd in (EXPORT_HF, EXPORT_GGUF):
    written += [Path(p) for p in re.findall(r"^wrote (.+) \\(", run_command(cmd), flags=re.M)]
files = [Path(shutil.make_archive(str(p), "zip", p)) if p.is_dir() else p for p in written]
assert files and all(f.is_file() for f in files), written
if USE_DRIVE and colab_setup.DRIVE.is_dir():
    keep = colab_setup.DRIVE_CHECKPOINTS.parent / "exports"
    keep.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, keep / f.name)
    print("copied to", keep)
if DOWNLOAD and IN_COLAB:
    from google.colab import files as colab_files

    for f in files:
        colab_files.download(str(f))
for f in files:
    print(f"{{f}}  {{f.stat().st_size / 1e6:.1f}} MB")
"""


def build() -> dict:
    cells = [
        _md(INTRO),
        _code(_parameters_cell(), "parameters"),
        _code(SETTINGS),
        _md("## 1. GPU"),
        _code(GPU),
        _md("## 2. Install and Google Drive"),
        _code(INSTALL),
        _md("## 3. Data (`DATA_SIZE` per dataset) and the memory plan"),
        _code(DATA),
        _code(PLAN),
        _md("## 4. Train"),
        _code(TRAIN),
        _md("## 5. Evaluate (the guide's test prompts, validation loss, reasoning accuracy) and "
            "the bench card"),
        _code(EVALUATE),
        _md("## 6. Chat"),
        _code(CHAT),
        _md("## 7. Export (Hugging Face + GGUF) and download"),
        _code(EXPORT),
    ]
    return {
        "cells": cells,
        "metadata": {
            "accelerator": "GPU",
            "colab": {"gpuType": "T4", "provenance": []},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render() -> str:
    nb = build()
    for i, cell in enumerate(nb["cells"]):  # nbformat 4.5 wants ids; stable ones keep diffs small
        cell["id"] = f"cell-{i:02d}"
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        stale = not NOTEBOOK.is_file() or NOTEBOOK.read_text(encoding="utf-8") != text
        if stale:
            print(f"{NOTEBOOK} is stale: run python notebooks/build_colab.py", file=sys.stderr)
        return int(stale)
    NOTEBOOK.write_text(text, encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
