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
# pytest-xdist: one worker per core (CI has 2); each test module runs whole on one worker, and the
# e2e tests sharing the session's DAG runs go together (tests/conftest.py groups them).
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile
# Beam's Flink job server (make flink): one of the Flink versions the installed Beam publishes.
FLINK_VERSION ?= 1.20
FLINK_JAR_DIR ?= $(HOME)/.m2/repository/org/apache/beam

.PHONY: setup run schedule serve lint test test-fast flink clean help

help:
	@echo "make setup   create .venv with the pinned TFX 1.21 stack (upgrades glibc on Debian 12 if needed)"
	@echo "make run     run the whole pipeline on the flowers demo into $(WORK_DIR)/ (ARGS='--set k=v')"
	@echo "make schedule retrain unattended: tlpipe schedule (ARGS='--every 6h' or ARGS=\"--cron '0 3 * * *'\")"
	@echo "make serve   serve the pushed models over TF Serving's gRPC (8500) and REST (8501) APIs"
	@echo "make test    ruff, then the test suite, including the end-to-end DAG tests (-m e2e)"
	@echo "make test-fast  ruff, then every test but the end-to-end DAG tests (no DAG runs)"
	@echo "make flink   fetch Beam's Flink job server jar (FLINK_VERSION=$(FLINK_VERSION)) with Maven; starts nothing"

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
	$(PY) -m pytest -q $(PYTEST_PARALLEL) $(ARGS)

test-fast: lint
	$(PY) -m pytest -q -m "not e2e" $(PYTEST_PARALLEL) $(ARGS)

flink: setup
	@beam=$$($(PY) -c 'import apache_beam; print(apache_beam.__version__)'); \
	artifact=org.apache.beam:beam-runners-flink-$(FLINK_VERSION)-job-server:$$beam; \
	mvn -q -B dependency:get -Dartifact=$$artifact -Dtransitive=false \
	  || { echo "make flink: $$artifact is not served by the Maven repository here" >&2; exit 1; }; \
	echo "$(FLINK_JAR_DIR)/beam-runners-flink-$(FLINK_VERSION)-job-server/$$beam/beam-runners-flink-$(FLINK_VERSION)-job-server-$$beam.jar"

clean:
	rm -rf $(WORK_DIR) .pytest_cache
