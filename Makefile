# One entry point for every task. Every target depends on `setup`, so each of them works as the
# first command on a fresh clone.

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed

# CPU build of torch unless an NVIDIA driver answers; override for GPUs, e.g.
#   make setup TORCH_SPEC="torch==2.5.1" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu124"
HAS_CUDA       := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC     ?= $(if $(HAS_CUDA),torch,torch==2.13.0)
TORCH_PIP_ARGS ?=
SETUP_ID       := $(TORCH_SPEC) $(TORCH_PIP_ARGS)

export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export PYTHONDONTWRITEBYTECODE = 1

MODEL  ?= digits-dmd2
LAYERS ?= all
POOL   ?= mean
N      ?=
BATCH  ?= 64
DTYPE  ?= auto
DEVICE ?= auto
SEED   ?= 0
LAKE   ?= lake

HOST   ?= 127.0.0.1
PORT   ?= 5006

.PHONY: help setup test layers estimate ingest ingest-images ingest-real-digits embed compare diversity fidelity atlas sql download serve demo bench bench-dashboard bench-generate screenshot gpu-check digits-model digits-report features digits-features-model clean mutate

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Re-installs only when pyproject.toml changed or another torch was asked for.
setup:  ## create or update .venv (idempotent)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ] && [ "$$(cat $(STAMP))" = "$(SETUP_ID)" ]; then \
		echo "setup: .venv is up to date"; \
	else \
		set -e; \
		test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV); \
		echo "setup: installing $(TORCH_SPEC), then the project and its dev extra (a few minutes the first time)"; \
		$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); \
		$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"; \
		echo "setup: compiling the layout kernels into $(NUMBA_CACHE_DIR) (once, ~2 min; later layouts start in seconds)"; \
		$(PY) -m store warm-cache; \
		echo "$(SETUP_ID)" > $(STAMP); \
	fi

test: setup  ## run the whole test suite (the README's test command)
	$(PY) -m pytest $(PYTEST_ARGS)

layers: setup  ## list hookable layers: make layers MODEL=imagenet
	$(PY) -m ingest layers --model $(MODEL)

estimate: setup  ## storage and memory estimate: make estimate MODEL=imagenet LAYERS=dec.* POOL=mean N=1000 BATCH=64
	$(PY) -m ingest estimate --model $(MODEL) --layers '$(LAYERS)' --pool $(POOL) --n $(or $(N),1000) --batch $(BATCH) --dtype $(DTYPE)

# N or PER_CLASS (or CLASSES / PROMPTS) choose the plan; N=1000 random labels by default.
ingest: setup  ## generate into the lake: make ingest MODEL=digits-dmd2 N=1000 LAYERS=all POOL=mean SEED=0 BATCH=64
	$(PY) -m ingest run --model $(MODEL) --lake $(LAKE) --layers '$(LAYERS)' --pool $(POOL) --seed $(SEED) \
		--batch $(BATCH) --device $(DEVICE) --dtype $(DTYPE) \
		$(if $(N),--n $(N)) $(if $(PER_CLASS),--per-class $(PER_CLASS)) $(if $(CLASSES),--classes $(CLASSES)) \
		$(if $(SAMPLE_SEEDS),--sample-seeds $(SAMPLE_SEEDS)) \
		$(if $(PROMPTS),--prompts $(PROMPTS)) $(if $(PER_PROMPT),--per-prompt $(PER_PROMPT)) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(RUN),--run-id $(RUN)) \
		$(if $(BASE),--base $(BASE)) $(if $(VAE),--vae $(VAE)) \
		$(if $(or $(N),$(PER_CLASS),$(CLASSES),$(PROMPTS)),,--n 1000)

# Real images as a run (no activations): class from sub-folder names, or LABELS=file.csv with a header
# file,class_id[,class_name] or file,prompt[,tags]; SIZE=64 centre-crops and resizes to 64x64.
ingest-images: setup  ## real images as a run: make ingest-images FOLDER=photos RUN=real-photos [LABELS=labels.csv] [SIZE=64]
	$(PY) -m ingest images $(if $(FOLDER),--folder '$(FOLDER)') $(if $(RUN),--run-id '$(RUN)') --lake $(LAKE) \
		$(if $(LABELS),--labels '$(LABELS)') $(if $(SIZE),--size $(SIZE))

ingest-real-digits: setup  ## scikit-learn's 1,797 real digits as the run real-digits (RUN= for another id)
	$(PY) -m ingest real-digits --lake $(LAKE) $(if $(RUN),--run-id '$(RUN)')

download: setup  ## fetch a preset's files into the hub cache ahead of a run: make download MODEL=sdxl-1step
	$(PY) -m ingest download $(MODEL)

# RUN (default: latest run), LAYERS (default: every captured layer), STEP (default: last), POOL.
embed: setup  ## neighbour graphs + aligned UMAP layouts: make embed RUN=... LAYERS=... STEP=...
	$(PY) -m store embed --lake $(LAKE) --pool $(POOL) $(if $(RUN),--run $(RUN)) \
		$(if $(filter-out all,$(LAYERS)),--layers '$(LAYERS)') $(if $(STEP),--step $(STEP))

serve: setup  ## the dashboard on a lake: make serve LAKE=lake HOST=127.0.0.1 PORT=5006 [ALLOW_HOST="box.lan 10.0.0.2"]
	$(PY) -m dashboards serve --lake $(LAKE) --host $(HOST) --port $(PORT) $(foreach h,$(ALLOW_HOST),--allow-host $(h))

# Student and teacher on the same plan (same classes and seeds), embedded, then served.
DEMO_PER_CLASS ?= 200
DEMO_LAYERS    ?= enc.8x8_block0,enc.4x4_block0,enc.2x2_block0,dec.2x2_block1,dec.4x4_block1,dec.8x8_block1
demo: setup  ## one command from a fresh clone: the embedded digits models and the real digits, features, embed, compare, fidelity, serve
	$(PY) -m ingest run --model digits-dmd2,digits-edm --run-id demo-digits-dmd2,demo-digits-edm --lake $(LAKE) \
		--layers '$(DEMO_LAYERS)' --per-class $(DEMO_PER_CLASS) --seed $(SEED)
	$(PY) -m ingest real-digits --lake $(LAKE)
	for run in demo-digits-dmd2 demo-digits-edm real-digits; do \
		$(PY) -m ingest features --lake $(LAKE) --run $$run --extractor digits --device $(DEVICE) || exit 1; done
	$(PY) -m store embed --lake $(LAKE) --run demo-digits-dmd2,demo-digits-edm,real-digits
	$(PY) -m store embed --lake $(LAKE) --run demo-digits-edm --step 0
	$(PY) -m store embed --lake $(LAKE) --run demo-digits-edm --layers dec.8x8_block1 --step all
	$(PY) -m store compare --lake $(LAKE) --runs demo-digits-dmd2,demo-digits-edm --steps 0,0
	$(PY) -m store compare --lake $(LAKE) --runs demo-digits-dmd2,demo-digits-edm
	$(PY) -m store diversity --lake $(LAKE) --run demo-digits-dmd2,demo-digits-edm
	$(PY) -m store fidelity --lake $(LAKE) --run demo-digits-dmd2,demo-digits-edm --reference real-digits \
		--layer features.digits
	$(PY) -m dashboards serve --lake $(LAKE) --host $(HOST) --port $(PORT) $(foreach h,$(ALLOW_HOST),--allow-host $(h))

compare: setup  ## paired runs, per layer: make compare RUNS=demo-digits-dmd2,demo-digits-edm STEPS=0,0
	$(PY) -m store compare --lake $(LAKE) --runs $(RUNS) $(if $(STEPS),--steps $(STEPS))

diversity: setup  ## per-class diversity: make diversity RUN=a[,b] [LAYER=dec.4x4_block1] (default: every layer)
	$(PY) -m store diversity --lake $(LAKE) --run $(RUN) $(if $(LAYER),--layer $(LAYER))

fidelity: setup  ## runs against a reference, per class: make fidelity RUN=a[,b] REFERENCE=r LAYER=l [K=5] [STEP=]
	$(PY) -m store fidelity --lake $(LAKE) --run $(RUN) --reference $(REFERENCE) --layer $(LAYER) --pool $(POOL) \
		$(if $(K),--k $(K)) $(if $(STEP),--step $(STEP))

# EXTRACTOR: digits (default), clip, dinov2, a model folder or a hub repo id; BATCH only when given.
features: setup  ## reference features of a run as its layer features.<name>: make features RUN=... EXTRACTOR=digits
	$(PY) -m ingest features --lake $(LAKE) --run $(RUN) --extractor $(or $(EXTRACTOR),digits) --device $(DEVICE) \
		$(if $(filter-out file default,$(origin BATCH)),--batch $(BATCH)) $(if $(NAME),--name $(NAME))

atlas: setup  ## export a layout for Apple's Embedding Atlas: make atlas RUN=... LAYER=... OUT=atlas.parquet
	$(PY) -m store atlas --lake $(LAKE) --run $(RUN) --layer $(LAYER) --out $(or $(OUT),atlas.parquet) \
		$(if $(STEP),--step $(STEP))

sql: setup  ## DuckDB over the lake: make sql (shell) or make sql Q="SELECT ..."
	$(PY) -m store sql --lake $(LAKE) $(if $(Q),"$(Q)")

BENCH_SIZES ?= 100000,1000000
BENCH_DIMS  ?= 768,1280

bench: setup  ## benchmarks (ingest, then embed/neighbours at BENCH_SIZES x BENCH_DIMS against faiss and hnswlib); figures go in docs/BENCHMARKS.md
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	$(PY) -m ingest.bench
	$(PY) -m ingest.features_bench --cases digits
	$(PY) -m store.bench --sizes $(BENCH_SIZES) --dims $(BENCH_DIMS)
	$(PY) -m dashboards.bench --sizes $(DASH_BENCH_SIZES)

DASH_BENCH_SIZES ?= 1000000,10000000

bench-generate: setup  ## time "Generate and place" in the browser on a lake with a model run (make demo's)
	$(PY) -m dashboards.bench --generate-lake $(LAKE)
bench-dashboard: setup  ## the dashboard in Chromium on synthetic lakes: make bench-dashboard DASH_BENCH_SIZES=1000000
	$(PY) -m dashboards.bench --sizes $(DASH_BENCH_SIZES)

screenshot: setup  ## refresh docs/explorer.png and docs/compare.png (the README's screenshots) from the browser tests
	$(PY) -m pytest tests/test_explorer.py tests/test_comparison_view.py -k "click_shows or compare_tab" -q
	cp .cache/screenshots/explorer.png docs/explorer.png
	cp .cache/screenshots/compare.png docs/compare.png

gpu-check: setup  ## GPU throughput of the real-size generators and feature encoders (CLIP-L/14, DINOv2), random weights
	$(PY) -m ingest.gpu_check --device cuda
	$(PY) -m ingest.features_bench --cases clip,dinov2 --device cuda

digits-model: setup  ## retrain the embedded digits models from a seed on CPU (~35 min): make digits-model SEED=0
	$(PY) -m ingest.train_digits --seed $(SEED)

digits-features-model: setup  ## retrain the digits feature network (the `digits` extractor) from a seed on CPU (seconds)
	$(PY) -m ingest.train_digits_features --seed $(SEED)

digits-report: setup  ## quality figures of the shipped digits models (agreement, diversity, time)
	$(PY) -m ingest.digits_report --n 1000

# Not part of `make test`: mutmut copies the project into mutants/ and runs, per mutant, the fast tests that
# reach the mutated function (configured in pyproject.toml's [tool.mutmut]); MUTATE_JOBS at a time. Each mutant's
# process is forked from one that already ran the tests: numba's GNU OpenMP layer refuses to run after a fork.
MUTATE_JOBS ?= 2
mutate: setup  ## mutation score per module of store's metric/neighbour/layout modules and dashboards/render.py (docs/QUALITY.md)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,mutate]"
	rm -rf mutants
	NUMBA_THREADING_LAYER=workqueue $(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS)
	$(PY) tests/mutation_score.py

clean:  ## remove caches (keeps .venv)
	rm -rf .cache .pytest_cache
