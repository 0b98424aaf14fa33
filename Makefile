# ukrun: the two commands a fresh machine needs are `make demo` and `make test` (both run the set-up).
PY := .venv/bin/python

.PHONY: setup demo test test-devmapper lint unit integration bench bench-artifacts bench-runtime bench-peer bench-devmapper bench-load bench-network stubs

setup:
	./scripts/setup

demo: setup
	$(PY) -m testbed.demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

test: setup lint
	$(PY) -m pytest -q -rs tests

# Real devmapper: the host kernel has none, so these run inside a qemu TCG guest (about 4 minutes).
test-devmapper: setup
	$(PY) -m testbed.dmguest test

bench-devmapper: setup
	$(PY) -m testbed.dmguest bench

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

# Every benchmark, then docs/performance.md and docs/plots/ (~10 minutes here). BENCH_QUICK=1: small sizes
# and counts, no devmapper guest; BENCH_ONLY=artifacts-sizes,artifacts-counts,devmapper,runtime,peer,load.
# The peer step (beside urunc) runs only with UKRUN_BENCH_URUNC=/path/to/urunc; the project never builds urunc.
bench: setup
	$(PY) -m benchmarks.report

bench-load: setup
	$(PY) -m benchmarks.load

bench-network: setup
	$(PY) -m benchmarks.network

bench-artifacts: setup
	$(PY) -m benchmarks.artifacts

bench-runtime: setup
	$(PY) -m benchmarks.runtime

bench-peer: setup
	$(PY) -m benchmarks.peer

stubs: setup
	$(PY) scripts/gen-proto
