# Two commands for a new user: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cardioinr-installed
# Two cores oversubscribe easily: pin threads for every run started from here.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch 2.13.0; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/cardioinr demo --out demo_out

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/fit_bench.py --out bench_out

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
