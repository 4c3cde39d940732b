# Two commands for a new user: `make demo` and `make test`. Both run `make setup` first when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.PHONY: setup test demo bench clean

setup: $(STAMP)

# torch first (the CPU build; a looser requirement would pull a multi-GB CUDA build), then the
# package and its dev extras under constraints.txt so nothing replaces that torch.
$(STAMP): pyproject.toml setup.py constraints.txt requirements-assets.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements-assets.txt
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/cpt demo

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info cpt/_C*.so
