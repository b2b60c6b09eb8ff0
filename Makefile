# One command each: `make demo` (set up + the main job), `make test` (set up + the test-suite).
PY := $(if $(VIRTUAL_ENV),python,.venv/bin/python)

.PHONY: setup demo test lint
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m xtask_safety demo --output_dir runs/demo

test:
	@bash scripts/setup.sh --test
	$(PY) -m pytest

lint:
	$(PY) -m ruff check src tests benchmarks
