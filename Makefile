PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install chromium demo test lint bench bench-quick bench-scale gpu-check quality chaos clean

install: $(STAMP) chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so pip takes the wheel on disk (CPU) or the CUDA build, never an unpinned one
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The console's tests drive Debian's Chromium through Playwright (whose own browser download needs
# more of the internet than PyPI and Debian); installed once, as root, and left alone after that.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: /usr/bin/chromium is missing and this is not root: the console's browser tests will be skipped"; \
	  fi; \
	}

demo: install
	$(BIN)/python -m mtfleet.demo

# Two pytest workers, a test file each at a time (module fixtures stay in one process): most
# tests wait on Ray clusters, jobs and leases more than they compute, so two run in about 0.6 of
# the time of one on 2 cores. Every test cluster takes ports of its own ("local", a fresh
# PostgreSQL schema), so they do not meet. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(BIN)/python bench/run.py

bench-quick: install
	$(BIN)/python bench/run.py --quick

gpu-check: install
	$(BIN)/python bench/gpu_check.py

bench-scale: install
	$(BIN)/python bench/scale.py

.PHONY: bench-families
bench-families: install
	$(BIN)/python bench/families.py

# three target languages: one job against three jobs (bench/results/multi_target.json)
.PHONY: bench-multi-target
bench-multi-target: install
	$(BIN)/python bench/multi_target.py

quality: install
	$(BIN)/python bench/quality.py

# faults injected per kind (full disk, store restarts and locks, hangs, OOM...): results/reliability.json
chaos: install
	$(BIN)/python bench/chaos.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .mtfleet build dist
