# saleflow developer tasks.  `make demo` and `make test` are all a newcomer needs.
#
# The virtualenv is (re)built only when pyproject.toml or the version (in
# saleflow/__init__.py, which the installed metadata copies) changes: the
# stamp file records the last install.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := saleflow tests bench

.PHONY: venv demo test lint bench clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml saleflow/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# pytest exits 5 when it collected no test at all: that is a broken suite
# here, never a pass, so say so before failing.
test: venv
	@$(BIN)/pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status
	@$(MAKE) --no-print-directory lint

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# The fuzzing suites' long run: SALEFLOW_FUZZ_EXAMPLES examples each (flows
# through the whole pipeline and ten times as many mutants through check,
# with a new random seed and the issue's full sizes; odd values through the
# API and the CLI; odd CSV files through import), on both backends.
FUZZED := tests/test_fuzz_flows.py tests/test_runtime_fuzz.py tests/test_import_hardening.py
.PHONY: fuzz
fuzz: venv
	SALEFLOW_FUZZ_EXAMPLES=$${SALEFLOW_FUZZ_EXAMPLES:-300} $(BIN)/pytest -q $(FUZZED)

bench: venv
	$(BIN)/python bench/run.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/scale.py --import
	$(BIN)/python bench/due.py

# 1, 2 and 4 `saleflow worker` processes on 100,000 due leads on PostgreSQL
# (SALEFLOW_BENCH_PG; minutes).
.PHONY: bench-workers
bench-workers: venv
	$(BIN)/python bench/workers.py

# Listings, tick and import at 100,000 and 1,000,000 leads on SQLite, and
# tick with a fixed number of due leads as the database grows (minutes).
.PHONY: bench-scale
bench-scale: venv
	$(BIN)/python bench/scale.py --import
	$(BIN)/python bench/due.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis out
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
