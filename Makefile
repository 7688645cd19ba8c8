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
# Python writes each module's bytecode once (__pycache__, ignored by git) and every later process loads it: some
# images set PYTHONDONTWRITEBYTECODE, and then each of the suite's ~400 processes compiled lrscan's modules again
# (~0.45 s of CPU a trainer) and each xdist worker rewrote every test module's asserts again
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint data venv bench clean test-oldest constraints docs figures

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the exact versions lrscan develops against (constraints.txt: torch 2.13.0's CPU wheel, wandb 0.31.0, ...);
	# pyproject.toml holds only the ranges users install from
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,docs]"
	touch $@

data: $(DATA)
$(DATA): | venv
	$(BIN)/python -m pipeline.train.data fetch $(DATA) --shared $(SHARED)/data

# the suite on several xdist workers: many tests wait on subprocesses (the wandb service, logger processes,
# sweeps), so more workers than cores pays (README: "Tests" has the figures). loadgroup hands tests out one
# by one, except those marked xdist_group (tests sharing one costly module fixture), kept on one worker.
TEST_WORKERS ?= 4
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist=loadgroup
test: venv data
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# The oldest supported releases (constraints-oldest.txt, pyproject's lower ends) in a second environment:
# the W&B-facing tests against the oldest wandb, the training tests against the oldest torch.
OLDEST ?= .venv-oldest
# torch's oldest supported release is the pinned one (2.13.0), so the training tests here are the ones that
# talk to W&B: the logger, the run writer and the trainer's loop (runs, resume, kills) on the oldest wandb
OLDEST_TESTS ?= tests/pipeline/train/test_tracking.py tests/pipeline/train/test_runwriter.py \
	tests/pipeline/train/test_loop.py tests/pipeline/pack/test_logger.py tests/pipeline/test_runlog.py \
	tests/pipeline/runlog/test_wire.py tests/pipeline/runlog/test_items.py tests/pipeline/runlog/test_parallel.py \
	tests/analysis/sources tests/pipeline/sweep/test_command.py tests/pipeline/sweep/test_agent.py \
	tests/pipeline/sweep/test_agent_sbatch.py::test_a_preempted_agent_job_requeues_and_its_run_resumes_in_the_next_job
test-oldest: data $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_PARALLEL) $(OLDEST_TESTS)
$(OLDEST)/.installed: pyproject.toml constraints.txt constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	# the oldest torch and wandb, everything else as constraints.txt pins it
	grep -vE '^(torch|wandb)==' constraints.txt | cat - constraints-oldest.txt > $(OLDEST)/constraints.txt
	$(OLDEST)/bin/python -m pip install --quiet -c $(OLDEST)/constraints.txt -e ".[test]"
	touch $@

# after upgrading a dependency in .venv: pin what it now holds
constraints: venv
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^lrscan' \
	  | sed 's/+cpu$$//'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

lint: venv
	$(BIN)/ruff check .

# the documentation site (mkdocs.yml): strict, so a broken link, a page left out of the nav or an API reference
# that does not resolve fails the build; the site lands in site/ (open site/index.html)
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# the figures the docs show, remade from real runs: the full study (its range test and the search's candidates) and
# the same study with --no-prove (its decay grid's figures), each report's figures copied into docs/figures/
FIGURES_RUN ?= runs/study-full
figures: venv data
	$(BIN)/python -m lrscan.pipeline.study --size=full --out=$(FIGURES_RUN)
	cp $(FIGURES_RUN)/report/range/range_loss_vs_lre.png $(FIGURES_RUN)/report/prove_range_candidates.png docs/figures/
	$(BIN)/python -m lrscan.pipeline.study --size=full --no-prove --out=$(FIGURES_RUN)-no-prove
	cp $(FIGURES_RUN)-no-prove/report/decay/decay_block_means.png $(FIGURES_RUN)-no-prove/report/decay/decay_heatmap.png \
	   docs/figures/

demo: venv data
	$(BIN)/python -m pipeline.study --out=$(OUT)

bench: venv data
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_first_step.py
	$(BIN)/python benchmarks/bench_read.py
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_generic.py
	$(BIN)/python benchmarks/bench_pack.py
	# torch-lr-finder: the baseline of bench_adam_pack.py only, never a runtime dependency (torch stays pinned)
	$(BIN)/python -m pip install --quiet torch-lr-finder==0.2.2 torch==2.13.0
	$(BIN)/python benchmarks/bench_adam_pack.py
	$(BIN)/python benchmarks/bench_adam_pack.py --sweep
	$(BIN)/python benchmarks/bench_logger_paths.py
	$(BIN)/python benchmarks/bench_prove.py
	$(BIN)/python benchmarks/bench_default_range.py
	$(BIN)/python benchmarks/bench_regret.py --model both --size small
	$(BIN)/python benchmarks/bench_regret.py --model mlp --size demo

clean:
	rm -rf wandb checkpoints runs reports
