# Two commands for a new user: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cardioinr-installed
# Two cores oversubscribe easily: pin threads for every run started from here.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2

.PHONY: install demo test test-fast bench bench-priors bench-builtin bench-finetune bench-applicability bench-groups bench-multiview bench-strain2d bench-slice2d priors bench-peers bench-scale bench-faults clean

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

# The inner loop: everything but the tests marked slow (end-to-end runs, kills, fuzzing, golden).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/fit_bench.py --out bench_out/fit

bench-priors: install
	$(PY) benchmarks/priors.py --out bench_out/priors

# The built-in priors shipped in src/cardioinr/priors/weights (about 25 minutes on 2 cores; resumable).
# Retraining changes their checksums: the model cards beside the weights are rewritten (--cards).
priors: install
	$(PY) benchmarks/builtin_priors.py

# The whole `cardioinr fit` command with the built-in priors: speed against SimpleITK B-spline,
# accuracy against 800-step scratch fits on held-out phantoms and Sunnybrook, and the fit without
# --seg against the labelled one (about an hour): docs/priors/builtin.md.
bench-builtin: install
	$(PY) benchmarks/builtin_bench.py --out bench_out/builtin

# Fine-tuning the built-in priors (Sunnybrook leave one out, failing hearts with an akinetic
# segment), consensus and population (about 35 minutes each on one core): docs/priors/finetune.md.
bench-finetune: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/finetune.py --out bench_out/finetune
	OMP_NUM_THREADS=1 $(PY) benchmarks/finetune.py --out bench_out/finetune --kind population

# The applicability flag on held-out, real and out-of-distribution cases (about 25 minutes):
# docs/priors/applicability.md.
bench-applicability: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/applicability.py --out bench_out/applicability

# Phantom groups (hypertrophic, dilated, infarct, abnormal RV, normal), ED/ES pairs and cines, the
# default fit; 2D and 3D with 10 mm slices (about 25 minutes on one core): docs/groups.md.
bench-groups: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/groups.py --out bench_out/groups --dim 2
	OMP_NUM_THREADS=1 $(PY) benchmarks/groups.py --out bench_out/groups --dim 3 --slice-mm 10

bench-multiview: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/multiview.py --out bench_out/multiview --seeds 2

bench-strain2d: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/strain2d.py --out bench_out/strain2d --seeds 3

# Single slices of 3D phantom hearts (through-plane motion, the wall gaining in-plane area) fitted as 2D cines.
bench-slice2d: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/slice2d.py --out bench_out/slice2d

bench-scale: install
	$(PY) benchmarks/scale.py --out bench_out/scale

# 200 small subjects with 20 injected faults, a driver SIGKILL and --resume (about 10 minutes).
bench-faults: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/faults.py --out bench_out/faults

# The peers (ANTs, VoxelMorph) pin older numpy/scipy, so they get a venv of their own.
BENCH_VENV ?= .venv-bench
bench-peers:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q torch==2.13.0
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[bench]'
	$(BENCH_VENV)/bin/python benchmarks/peers.py --out bench_out/peers $(if $(PRIOR),--prior $(PRIOR))

clean:
	rm -rf $(VENV) $(BENCH_VENV) demo_out bench_out .pytest_cache
