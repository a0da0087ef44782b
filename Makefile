# Entry points: `make repro` runs the pipeline, `make test` runs the tests (`make test-slow` the
# slow ones), `make bench` measures speed.
# Each creates .venv first if needed; repro and bench install requirements.txt, test installs
# requirements-dev.txt (requirements.txt plus the test tools). One stamp per requirements file, so
# each file is re-installed only when it changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements.txt
DEV_STAMP := $(VENV)/.installed-requirements-dev.txt

.PHONY: repro test test-slow bench ablations setup clean-venv

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# requirements-dev.txt includes requirements.txt: the run-time stamp first keeps both stamps current.
$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# One pytest worker per core (at most 4: each holds its own torch) with one torch thread each; a test
# module stays on one worker, so its module-scoped fixtures (a trained model, a DVC repository) are
# built once. Modules go out in collection order, which tests/conftest.py sets: the longest first.
TEST_WORKERS ?= auto
test: $(DEV_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" \
		-n $(TEST_WORKERS) --maxprocesses 4 --dist loadscope --no-loadscope-reorder tests

# The guarantees that take minutes to prove: kills mid-stage, `dvc queue start -j 2`, AST learning the demo.
test-slow: $(DEV_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m slow tests

# Writes reports/bench.md and reports/bench.json (GPU section only on a CUDA machine).
# SECTIONS=gpu (comma-separated, of featurize,training,gpu,predict) runs only those and keeps the others.
SECTIONS ?= featurize,training,gpu,predict
bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run --out reports --sections $(SECTIONS)

# Queued DVC experiments: the training recipe's elements for both models -> reports/recipe_ablations.md/png,
# AST variants -> reports/ablations.md/png (ABLATIONS=recipe or ast runs one set). JOBS experiments at
# once; WEIGHTS=path/to/deit_tiny.pth adds the ImageNet position-embedding variants.
ABLATIONS ?= recipe,ast
JOBS ?= 1
ablations: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.ablations --out reports --sets $(ABLATIONS) \
		--jobs $(JOBS) $(if $(WEIGHTS),--weights $(WEIGHTS))

clean-venv:
	rm -rf $(VENV)
