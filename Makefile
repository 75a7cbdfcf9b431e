# DRUIDS compendium. `make all` and `make test` each do their own setup in .venv.
PYTHON ?= python3
# torch on a busy 2-core machine: OpenMP busy-waiting slows small ops 50-100x
export OMP_WAIT_POLICY ?= PASSIVE
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# kernels started by papermill/nbval must find the venv's python first
export PATH := $(abspath $(BIN)):$(PATH)
PROFILE ?= default
NBVAL_DIR := build/nbval
CHAPTERS := $(basename $(notdir $(wildcard notebooks/[0-9][0-9]_*.py)))

.PHONY: setup all test paper bench clean $(CHAPTERS)

setup: $(STAMP)

# Re-install whenever pyproject.toml changes. torch is pinned to the CPU wheel.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "DRUIDS needs Python >= 3.11; set PYTHON=python3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

all: setup
	$(BIN)/druids run --profile $(PROFILE)

$(CHAPTERS): setup
	$(BIN)/druids run $@ --profile $(PROFILE)

# Unit, physics and statistics tests, then every chapter through nbval in the smoke profile.
test: setup
	rm -rf $(NBVAL_DIR) && mkdir -p $(NBVAL_DIR)
	for f in notebooks/[0-9][0-9]_*.py; do \
	  $(BIN)/jupytext --quiet --to ipynb --set-kernel python3 -o $(NBVAL_DIR)/$$(basename $${f%.py}).ipynb $$f || exit 1; done
	$(BIN)/python -m pytest tests $(NBVAL_DIR) --nbval-lax -p no:cacheprovider

paper: setup
	cd paper && (command -v latexmk >/dev/null && latexmk -pdf -interaction=nonstopmode main.tex || echo "latexmk not found: figures are in paper/figures, values in paper/values")

# Benchmarks (not tests): JSON beside each script; copy the numbers into bench/RESULTS.md.
bench: setup
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf build paper/figures/*.png paper/figures/*.pdf paper/values/*.tex .cache
