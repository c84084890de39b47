# Two commands for a newcomer: `make lab` and `make test`. Both build .venv when it is missing
# or pyproject.toml changed, and are quick when it is up to date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmlab-installed
ARGS ?=
PEER_ARGS ?=

.PHONY: lab test test-browser book check-setup torture lint format bench demo claims clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks $(ARGS)

test: $(STAMP) lint
	MMLAB_QUICK=1 $(BIN)/python -m pytest $(ARGS)

# Every notebook in a real JupyterLab in headless Chromium, as a student uses it (4.5
# minutes here): Debian's chromium is installed when missing (needs root and apt; or set
# MMLAB_CHROMIUM to a Chromium binary). Screenshots go to build/browser.
test-browser: $(STAMP)
	@test -n "$$MMLAB_CHROMIUM" || command -v chromium >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	MMLAB_QUICK=1 $(BIN)/python -m pytest tests/browser $(ARGS)

# The course as a website in build/book/_build/html: the labs run in a fresh copy (full size,
# or QUICK=1 as CI does; EXECUTED=build/notebooks reuses what `make claims` ran), shown with
# their solutions, beside the claims table and the instructor guide.
book: $(STAMP)
	$(BIN)/python -m mmlab.course.book $(if $(QUICK),--quick) \
		$(if $(EXECUTED),--executed $(EXECUTED)) $(ARGS)

# Is this machine ready for every notebook? Plain words per notebook, and what to do where
# not (exit code 1 then). Installs and builds nothing; about a second.
check-setup:
	@test -x $(BIN)/mmlab || { echo "no $(VENV) yet: run make lab first (it builds $(VENV))"; exit 1; }
	$(BIN)/mmlab doctor --setup $(ARGS)

# The torture suite at full size (make test runs its quick version): under 15 minutes.
torture: $(STAMP)
	MMLAB_TORTURE=full $(BIN)/python -m pytest tests/torture $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(STAMP)
	$(BIN)/mmlab demo $(ARGS)

# The store's benchmark, then the peers' (issue 14's table: RecordStore beside numpy.memmap,
# Arrow IPC, SQLite and LMDB on QM9, ratios and targets first; PEER_ARGS="--limit 20000" for
# a quick look), then the instruments'.
bench: $(STAMP)
	$(BIN)/python bench/bench_store.py $(ARGS)
	$(BIN)/python bench/bench_peers.py $(PEER_ARGS)
	$(BIN)/python bench/bench_instruments.py

# Run every notebook at full size and rewrite notebooks/README.md's claims table from what
# they recorded (each one's run time is printed above the table); the executed copies go to
# build/notebooks.
claims: $(STAMP)
	$(BIN)/python -m mmlab.course.claims notebooks --keep build/notebooks $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
