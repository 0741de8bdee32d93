"""Import costs and the module graph: the CLI, data workers and the tokenizer stay torch-free."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import aethermind

PACKAGE = Path(aethermind.__file__).parent
REPO = PACKAGE.parent


def _loaded_after(code: str) -> dict[str, list[str]]:
    """Run `code` in a fresh interpreter; which top-level packages it loaded, by name."""
    probe = (f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    return {"torch": [m for m in modules if m == "torch" or m.startswith("torch.")],
            "aethermind": [m for m in modules if m.split(".")[0] == "aethermind"]}


def _aethermind_imports(module: str) -> set[str]:
    """The aethermind modules `module`'s source imports (at any depth of its code)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "aethermind"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aethermind"):
            found.add(node.module)
    return found


def test_help_and_data_workers_do_not_import_torch():
    loaded = _loaded_after("import contextlib, io\nimport aethermind\n"
                           "from aethermind import cli\nfrom aethermind.data import cli as dcli\n"
                           "import aethermind.data.pack, aethermind.data.tokenizer_train\n"
                           "with contextlib.redirect_stdout(io.StringIO()):\n"
                           "    assert cli.main(['--help']) == 0 and dcli.main(['--help']) == 0")
    assert loaded["torch"] == []


def test_console_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "aethermind.cli", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    from aethermind.cli import COMMANDS

    assert all(f"  {name}" in done.stdout for name in COMMANDS)


def test_core_types_load_lazily_from_the_package():
    from aethermind import Forge1Config, Forge1Model, Forge1Tokenizer
    from aethermind.model.config import Forge1Config as Config
    from aethermind.model.transformer import Forge1Model as Model
    from aethermind.text.tokenizer import Forge1Tokenizer as Tokenizer

    assert (Forge1Config, Forge1Model, Forge1Tokenizer) == (Config, Model, Tokenizer)
    assert set(aethermind.__all__) <= set(dir(aethermind))
    try:
        aethermind.NoSuchThing  # noqa: B018
    except AttributeError as err:
        assert "NoSuchThing" in str(err)
    else:
        raise AssertionError("unknown attribute did not raise")


def test_tokenizer_is_a_leaf():
    """It imports only modules that import nothing of the package (no template, no data)."""
    direct = _aethermind_imports("aethermind.text.tokenizer")
    assert "aethermind.text.chat_format" not in direct
    for module in direct:
        assert _aethermind_imports(module) == set(), f"{module} is not a leaf"
    loaded = _loaded_after("import aethermind.text.tokenizer")
    modules = {"aethermind.text.tokenizer"} | direct
    packages = {m.rsplit(".", 1)[0] for m in modules} | {"aethermind"}  # their empty __init__s
    assert set(loaded["aethermind"]) == modules | packages
    assert loaded["torch"] == []


def test_every_cli_command_module_exists_and_has_main():
    """The map in cli.py points at real modules (a moved module must move its entry too)."""
    from aethermind.cli import COMMANDS

    for name, (module, _) in COMMANDS.items():
        path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), name


def _package_graph() -> dict[str, set[str]]:
    """Every aethermind module -> the aethermind modules it imports (a package import counts as
    its `__init__`; `from pkg import mod` counts as `pkg.mod` where that module exists)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names}
                found |= (subs & modules.keys()) or {node.module}
        graph[name] = found - {name}
    return graph


def test_package_import_graph_has_no_cycle():
    """No module reaches itself through imports, at top level or inside functions: a circle
    means two concepts were not really separated (export <-> its formats was one)."""
    graph = _package_graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):]
                                                                     + [nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_stage_subpackages_hold_every_module():
    """The folder names are the pipeline: only the entry points sit at the package's top."""
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "cli.py", "demo.py"}
    stages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert stages == {"runtime", "text", "model", "data", "training", "artifacts", "inference",
                      "evaluation", "export", "serve", "rl"}


def test_sampling_is_a_leaf():
    """Sampling options are built at every edge (flags, requests) and read by the engine: the
    module imports nothing of the package, so any of them can import it."""
    assert _aethermind_imports("aethermind.inference.sampling") == set()


def test_evaluation_needs_nothing_of_the_training_package():
    """`aethermind evaluate` shares the validation-loss loop with training through
    `evaluation.loss`; nothing it imports, at any depth, is a training module."""
    graph = _package_graph()
    seen, todo = set(), ["aethermind.evaluation.evaluate"]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    assert "aethermind.evaluation.loss" in seen
    assert sorted(m for m in seen if m.startswith("aethermind.training")) == []


def test_demo_imports_only_the_train_entry_from_the_training_loop():
    """The demo runs `train()` as `aethermind train` does; loss helpers come from
    `evaluation.loss`, not from the loop's module."""
    tree = ast.parse((PACKAGE / "demo.py").read_text(encoding="utf-8"))
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "aethermind.training.train" for a in node.names}
    assert names == {"train"}


# Imports that stay inside functions, each for its reason: optional extras (eval: lm_eval and
# transformers; IPython, there only inside a notebook kernel; serve: fastapi,
# starlette, uvicorn, the pydantic request models (api, completions) and guard, which raises
# their errors; tensorboard; jinja2, which transformers brings), modules that take seconds to
# load for one rare path (datasets/pyarrow for a hub download, torch.distributed under FSDP),
# and torch in the file helpers that the torch-free packing workers import; peft (LoRA runs
# only; it loads transformers, ~4 s); torch's inductor, to look for a C++ compiler only when
# training asks for torch.compile on a CPU (~0.9 s to load).
LAZY_IMPORTS = {"lm_eval", "lm_eval.models.huggingface", "lm_eval.tasks", "transformers",
                "IPython", "IPython.display",
                "fastapi", "fastapi.responses", "starlette.exceptions", "uvicorn",
                "aethermind.serve.api", "aethermind.serve.completions",
                "aethermind.serve.guard", "torch.utils.tensorboard", "jinja2.exceptions",
                "jinja2.sandbox", "datasets", "pyarrow.parquet", "torch.distributed.fsdp",
                "torch.distributed.checkpoint", "torch.distributed.checkpoint.state_dict",
                ("aethermind.runtime.files", "torch"), "peft", "peft.tuners.lora",
                ("aethermind.runtime.dist", "torch._inductor.cpp_builder")}


def test_imports_sit_at_the_top_of_modules():
    """The CLI already loads each command lazily, so an import inside a function is either one
    of the reasons above or an import that drifted: name it here on purpose or move it up."""
    inside = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom):
                        inside.add((module, sub.module))
                    elif isinstance(sub, ast.Import):
                        inside |= {(module, a.name) for a in sub.names}
    drifted = {(m, name) for m, name in inside
               if name not in LAZY_IMPORTS and (m, name) not in LAZY_IMPORTS}
    assert not drifted, sorted(drifted)
