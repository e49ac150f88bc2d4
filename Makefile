# Two commands do everything on a fresh machine with only python3: `make demo` and `make test`.
# Each creates .venv and installs the project (once; re-runs are no-ops while pyproject.toml is unchanged).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= all,test
# Quiet pip, minus the harmless notes some mirrors print for every package they do not carry.
PIP_FILTER := grep -v -e '^WARNING: Location' -e 'is ignored: it is neither' || true

.PHONY: help install demo test check lint format typecheck pytest bench images images-bases test-images clean

help:
	@echo "make demo   - set up .venv and run the demo (plan -> curate -> train -> evaluate on this machine)"
	@echo "make test   - set up .venv, lint, type-check and run the whole test suite"
	@echo "make bench  - run the benchmarks in benchmarks/ (results go to docs/benchmarks.md by hand)"
	@echo "make images - build the container images (Docker when an engine answers, else podman)"
	@echo "make images-bases - make registry-free Debian/CPU-PyTorch bases with mmdebstrap (root, podman)"
	@echo "make test-images  - build the images on those bases and run them (tests/images; needs podman)"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.10+"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; install your distribution's python3-venv package"; exit 2; }
	@echo "installing tokensmith[$(EXTRAS)] into $(VENV) (first run takes a few minutes)"
	@$(BIN)/python -m pip install -q --upgrade "pip>=24" 2>&1 | $(PIP_FILTER)
	@$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]" 2>&1 | $(PIP_FILTER)
	@$(BIN)/python -c "import tokensmith.planner, tokensmith.operator, tokensmith.trainer, tokensmith.evaluator"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tokensmith.operator.local.demo --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy planner/tokensmith operator/tokensmith trainer/tokensmith evaluator/tokensmith

check: lint typecheck

# The image tests build and run containers: `make test-images` runs them, `make test` never needs an engine.
pytest: $(STAMP)
	$(BIN)/python -m pytest -m "not images"

test: check pytest

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b; done

# Tags are what the Helm chart pulls by default: ghcr.io/tokensmith/<image>:<version> (IMAGE_REGISTRY and
# IMAGE_TAG override them). BASES=local builds on images/bases/build-local.sh's bases instead of upstream's.
images:
	$(PYTHON) images/build.py images $(if $(filter local,$(BASES)),--local-bases)

images-bases:
	images/bases/build-local.sh

test-images: $(STAMP)
	$(BIN)/python -m pytest -m images tests/images

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
