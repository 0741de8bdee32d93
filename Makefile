# Thin aliases. `make demo` and `make test` create and reuse the virtual environment in .venv.
# TORCH_SPEC picks the torch build: the default is the CPU wheel this project is tested with;
# GPU users run e.g. `make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu121"`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
BASE_STAMP := $(VENV)/.installed-base

# The model `make demo` trains, which `make chat` and `make serve` load (`aethermind demo`'s
# default --output, plus final_model/; the demo prints DEMO_MODEL=... when --output differs).
DEMO_MODEL ?= outputs/demo/final_model

.PHONY: install demo chat serve test test-slow test-notebook test-interop gpu-check lint format clean

# The demo needs the package, and the `serve` extra (FastAPI + uvicorn, seconds to install) so
# that the `make serve` it ends by suggesting runs as it is; tests and the HF checks add the
# `dev` extra. Two stamps, so a first `make demo` does not spend its minutes on test tools.
$(BASE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[serve]"
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(BASE_STAMP)
	$(BIN)/aethermind demo

# Talk to the demo's model: in the terminal, or in the browser (web chat at / and the
# OpenAI-compatible API at /v1 on http://127.0.0.1:8000; Ctrl-C stops it).
chat: $(BASE_STAMP)
	@test -d "$(DEMO_MODEL)" || { echo "no model in $(DEMO_MODEL): run make demo first" >&2; exit 1; }
	$(BIN)/aethermind chat --model "$(DEMO_MODEL)" --device cpu --show-thinking

serve: $(BASE_STAMP)
	@test -d "$(DEMO_MODEL)" || { echo "no model in $(DEMO_MODEL): run make demo first" >&2; exit 1; }
	$(BIN)/aethermind serve --model "$(DEMO_MODEL)" --device cpu

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The Colab notebook executed top to bottom in smoke mode in a real kernel (about a minute on
# two cores; kept out of `make test`, which stays fast).
test-notebook: $(STAMP)
	$(BIN)/python -m pytest -m notebook

# Checks against external tools (llama.cpp through llama-cpp-python, the web chat in Debian's
# headless chromium, lm-eval's local-completions and the node `openai` client against the
# server, the Ollama Modelfile's template in Go's text/template): the `interop` extra, and
# chromium and Debian's golang installed with apt when missing (root); node and npm must be
# installed (the test installs the pinned npm package into .pytest_cache).
test-interop: $(STAMP)
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	@command -v go >/dev/null || (apt-get update -qq && apt-get install -y -qq golang)
	$(BIN)/python -m pip install --quiet -e ".[dev,interop]"
	$(BIN)/python -m pytest -m interop

# Every GPU figure in one run (< 6 min on one GPU); needs a CUDA torch (TORCH_SPEC above).
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py --json outputs/gpu_check.json

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
