# Two commands on a fresh machine: `make demo` (the study, small) and `make test` (the suite); `make lint` is ruff.
# Both create .venv, install lrscan with pip and put names.txt in place first.
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
DATA ?= data/names.txt
OUT ?= runs/study-demo
BIN := $(VENV)/bin
export LRSCAN_DATA := $(abspath $(DATA))
export WANDB_SILENT := true

.PHONY: demo test lint data venv bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: the CPU wheel (a looser spec can pull a multi-GB CUDA build)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

data: $(DATA)
$(DATA): | venv
	$(BIN)/python -m pipeline.train.data fetch $(DATA) --shared $(SHARED)/data

test: venv data
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

demo: venv data
	$(BIN)/python -m pipeline.study --out=$(OUT)

bench: venv data
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_read.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_generic.py
	$(BIN)/python benchmarks/bench_pack.py
	# torch-lr-finder: the baseline of bench_adam_pack.py only, never a runtime dependency (torch stays pinned)
	$(BIN)/python -m pip install --quiet torch-lr-finder==0.2.2 torch==2.13.0
	$(BIN)/python benchmarks/bench_adam_pack.py
	$(BIN)/python benchmarks/bench_adam_pack.py --sweep

clean:
	rm -rf wandb checkpoints runs reports
