# genlab: `make app` opens the dashboard, `make test` runs every test. Both set up .venv first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch build, installed before everything else so that pip never pulls a multi-GB CUDA
# wheel onto a machine without a GPU. This is the one place that choice lives. On a GPU box:
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# dev: the test tools; ray: `genlab sweep --executor ray`, tested against a local Ray instance
EXTRAS     ?= dev,ray
HOST       ?= 127.0.0.1
PORT       ?= 8501
# Classroom mode (owner names, optional passwords from .streamlit/secrets.toml) is on whenever
# the app listens beyond the loopback interface; CLASSROOM=1 turns it on for 127.0.0.1 too.
CLASSROOM  ?= $(if $(filter 127.0.0.1 localhost ::1,$(HOST)),0,1)
# The browser test drives Debian's Chromium; `make test BROWSER_TESTS=0` skips it.
BROWSER_TESTS ?= 1
# Tests run in parallel (pytest-xdist), one test file per worker, each worker on one thread:
# on the project's 2-core machine the suite took 707 s against 1,230 s in one process on two
# threads (2026-12-01; small models wait on their threads more than they compute).
# TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto
CHROMIUM   ?= /usr/bin/chromium
STAMP      := $(VENV)/.installed-$(EXTRAS)

.PHONY: app test test-fast setup chromium lint clean demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

chromium:
ifeq ($(BROWSER_TESTS),1)
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null); } \
	  || { echo "Chromium is missing at $(CHROMIUM); install it or run make test BROWSER_TESTS=0"; exit 1; }
endif

app: $(STAMP)
	@echo "genlab dashboard: http://$(HOST):$(PORT)$(if $(filter 1,$(CLASSROOM)), (classroom mode))"
	GENLAB_CLASSROOM=$(CLASSROOM) $(BIN)/streamlit run dashboard/app.py \
	  --server.address $(HOST) --server.port $(PORT)

# Rebuild assets/demo/records.json: a real sweep on digits, run in a temporary genlab home.
demo: $(STAMP)
	$(BIN)/python -m genlab.demo

# The suite's own training jobs run at the suite's priority (GENLAB_WORKER_NICE=0): its test
# workers keep both cores busy, and a job at the default nice +10 would wait on them, not on a
# person; test_jobs.py checks the default itself.
test: $(STAMP) chromium
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 GENLAB_BROWSER_TESTS=$(BROWSER_TESTS) \
	  GENLAB_CHROMIUM=$(CHROMIUM) GENLAB_WORKER_NICE=0 \
	  $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 GENLAB_WORKER_NICE=0 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) \
	  --dist loadfile \
	  -m "not slow and not browser"

lint: $(STAMP)
	$(BIN)/ruff check genlab dashboard tests bench

clean:
	rm -rf $(VENV) .pytest_cache
