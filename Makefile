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
# DATA=STORE: run the chapters on a WeatherBench2-layout zarr store (path or gs:// URL) instead of the profile's data
DATA ?=
DATA_OPTION := $(if $(DATA),--data $(DATA))
NBVAL_DIR := build/nbval
CHAPTERS := $(basename $(notdir $(wildcard notebooks/[0-9][0-9]_*.py)))

.PHONY: setup all test paper book bench study clean distclean $(CHAPTERS)

setup: $(STAMP)

# Re-install whenever pyproject.toml changes. torch is pinned to the CPU wheel.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "DRUIDS needs Python >= 3.11; set PYTHON=python3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

all: setup
	$(BIN)/druids run --profile $(PROFILE) $(DATA_OPTION)
	@if command -v latexmk >/dev/null; then $(MAKE) paper; else echo "No LaTeX here, so no PDF: make paper says how to get it."; fi

$(CHAPTERS): setup
	$(BIN)/druids run $@ --profile $(PROFILE) $(DATA_OPTION)

# Unit, physics and statistics tests in TEST_WORKERS pytest-xdist processes (each test file in one
# of them, so its fixtures are made once), then every chapter in order through nbval in the smoke profile.
TEST_WORKERS ?= 2
test: setup
	rm -rf $(NBVAL_DIR) && mkdir -p $(NBVAL_DIR)
	for f in notebooks/[0-9][0-9]_*.py; do \
	  $(BIN)/jupytext --quiet --to ipynb --set-kernel python3 -o $(NBVAL_DIR)/$$(basename $${f%.py}).ipynb $$f || exit 1; done
	$(BIN)/python -m pytest tests -p no:cacheprovider --durations=20 -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/python -m pytest $(NBVAL_DIR) --nbval-lax -p no:cacheprovider --durations=10

# The PDF from the chapters' figures (paper/figures) and numbers (paper/values); LaTeX's
# auxiliary files go to build/paper. Needs LaTeX with latexmk; without it, says how to get it.
LATEX_HINT := LaTeX not found: install it (Debian/Ubuntu: apt-get install texlive-latex-extra texlive-fonts-recommended latexmk) and run make paper again. The figures are in paper/figures (captions in paper/figures.toml), the numbers in paper/values.
paper:
	@command -v latexmk >/dev/null || { echo "$(LATEX_HINT)"; exit 1; }
	@ls paper/values/*.tex >/dev/null 2>&1 || { echo "paper/values is empty: run the chapters first (make all)"; exit 1; }
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir=../build/paper main.tex
	cp build/paper/main.pdf paper/main.pdf
	@echo "wrote paper/main.pdf"

# The executed chapters (build/notebooks, written by druids run) as a static HTML site.
book: setup
	$(BIN)/python -m druids.book

# A study (notebooks/studies/STUDY.py: an experiment whose numbers the docs quote), run on demand, not by
# make all: make study STUDY=skill_levers [ARGS="-p steps 500"]; the executed notebook goes to build/studies.
study: setup
	@test -n "$(STUDY)" || { echo "name the study: make study STUDY=<name of notebooks/studies/*.py>"; exit 1; }
	mkdir -p build/studies
	$(BIN)/jupytext --quiet --to ipynb --set-kernel python3 -o build/studies/$(STUDY).source.ipynb notebooks/studies/$(STUDY).py
	$(BIN)/papermill --cwd notebooks/studies build/studies/$(STUDY).source.ipynb build/studies/$(STUDY).ipynb $(ARGS)

# Benchmarks (not tests): JSON beside each script; copy the numbers into bench/RESULTS.md.
bench: setup
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

# clean: generated outputs (executed chapters, book, LaTeX files, figures, values, the PDF);
# keeps the data (data/) and the cache of trained models and ensembles (.cache/).
clean:
	rm -rf build paper/main.pdf paper/figures/*.png paper/figures/*.pdf paper/values/*.tex

# distclean: also the generated data and the cache (everything a fresh clone lacks but .venv,
# which stays: re-installing is slow; remove it by hand). DRUIDS_DATA or DRUIDS_CACHE
# elsewhere are left alone.
distclean: clean
	rm -rf .cache $(filter-out data/README.md,$(wildcard data/*))
