# tlpipe: `make setup`, then `make run`; `make test` is what CI runs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
WORK_DIR ?= tlpipe-work
SHARED := $(abspath ../shared)
# The team's offline copies (flower photos, Keras cache with ImageNet weights), when present.
FLOWERS_MIRROR := $(if $(wildcard $(SHARED)/datasets/tf_flowers),$(SHARED)/datasets/tf_flowers,)
SHARED_KERAS_HOME := $(if $(wildcard $(SHARED)/keras_home/models),$(SHARED)/keras_home,)
RUN_ENV := $(if $(FLOWERS_MIRROR),TLPIPE_FLOWERS_MIRROR=$(FLOWERS_MIRROR)) \
           $(if $(SHARED_KERAS_HOME),KERAS_HOME=$${KERAS_HOME:-$(SHARED_KERAS_HOME)})
ARGS ?=

.PHONY: setup run schedule serve lint test test-fast clean help

help:
	@echo "make setup   create .venv with the pinned TFX 1.21 stack (upgrades glibc on Debian 12 if needed)"
	@echo "make run     run the whole pipeline on the flowers demo into $(WORK_DIR)/ (ARGS='--set k=v')"
	@echo "make schedule retrain unattended: tlpipe schedule (ARGS='--every 6h' or ARGS=\"--cron '0 3 * * *'\")"
	@echo "make serve   serve the pushed models over TF Serving's gRPC (8500) and REST (8501) APIs"
	@echo "make test    ruff, then the test suite, including the end-to-end DAG tests (-m e2e)"
	@echo "make test-fast  ruff, then every test but the end-to-end DAG tests (no DAG runs)"

setup:
	@bash scripts/setup.sh

run: setup
	$(RUN_ENV) $(VENV)/bin/tlpipe run --work-dir $(WORK_DIR) $(ARGS)

schedule: setup
	$(RUN_ENV) $(VENV)/bin/tlpipe schedule --work-dir $(WORK_DIR) $(ARGS)

serve: setup
	$(VENV)/bin/tlpipe serve --model_name flowers --model_base_path $(abspath $(WORK_DIR))/serving/flowers $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# Tests read nothing from ../shared (no RUN_ENV): a fresh clone and CI run the same suite.
test: lint
	$(PY) -m pytest -q $(ARGS)

test-fast: lint
	$(PY) -m pytest -q -m "not e2e" $(ARGS)

clean:
	rm -rf $(WORK_DIR) .pytest_cache
