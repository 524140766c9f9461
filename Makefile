# On a fresh clone `make run` and `make test` are all a person needs: both create the virtual
# environment first when it is missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The project's Dagster instance (gpu pool limit, run monitoring, telemetry off), unless the
# caller has one.
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
# DVC lives in its own environment: dvc 3 and dagster 1.13 need incompatible antlr4 runtimes.
DVC_VENV ?= .venv-dvc
DVC_VERSION ?= 3.67.1
# Cloud remotes need DVC's plugins: `make dvc-env DVC_EXTRAS=s3` (or gs, azure, or s3,gs).
DVC_EXTRAS ?=
DVC_STAMP := $(DVC_VENV)/.installed-$(DVC_VERSION)$(if $(DVC_EXTRAS),-$(DVC_EXTRAS))
# Stage commands (`synthfactory run ...`) must find the project's environment on PATH.
DVC := PATH="$(abspath $(BIN)):$$PATH" $(DVC_VENV)/bin/dvc

.PHONY: run test test-e2e ci bench bench-gpu dev lint clean browser-deps dvc-env dvc-sync repro \
	status exp-run exp-show push pull checkout docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Keep a torch that is already there (a GPU user's CUDA build); otherwise take the CPU wheel.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DVC_STAMP):
	test -x $(DVC_VENV)/bin/python || $(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DVC_VENV)/bin/python -m pip install --quiet "dvc$(if $(DVC_EXTRAS),[$(DVC_EXTRAS)])==$(DVC_VERSION)"
	touch $(DVC_STAMP)

dvc-env: $(DVC_STAMP)  ## install DVC into .venv-dvc (`.venv-dvc/bin/dvc`)

run: $(STAMP)  ## materialize the graph on params.yaml
	$(BIN)/synthfactory run

# Two workers (pytest-xdist), one test file per worker at a time so a file's module fixtures (a
# whole graph run) are built once: most tests run one torch thread or a subprocess.
TEST_WORKERS ?= 2
test: $(STAMP) $(DVC_STAMP) browser-deps  ## the fast, offline suite (CI runs this)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Debian's chromium + chromedriver for tests/platform/test_browser.py (no browser download).
# Installed when missing and we are root with apt-get. An install that fails (no network, no
# apt) never stops `make test`, the offline suite: the browser test is then skipped with a
# reason; under CI=true the test requires the browser and fails instead.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; then :; \
		else echo "browser-deps: apt-get could not install chromium/chromium-driver: the browser test will be skipped$$( [ "$$CI" = true ] && echo ' (CI=true: it will fail)')"; fi; \
	else echo "browser-deps: chromium/chromedriver missing and not root: the browser test will be skipped (as root: make browser-deps)"; fi

# CI: the fast suite, then the e2e suite (accuracy targets on the default params, DVC's md5
# equality through dvc repro, a failing DDP rank failing its group).
ci: test test-e2e  ## what .ci/run runs

test-e2e: $(STAMP) $(DVC_STAMP)  ## the long end-to-end runs on the default params
	$(BIN)/python -m pytest -q -m e2e

bench: $(STAMP)  ## benchmarks, each prints JSON (distillation_table runs its own graph, hours on a CPU)
	$(BIN)/python benchmarks/import_time.py
	$(BIN)/python benchmarks/load_time.py
	$(BIN)/python benchmarks/generation_throughput.py
	$(BIN)/python benchmarks/generation_memory.py
	$(BIN)/python benchmarks/distillation.py
	$(BIN)/python benchmarks/distillation_table.py
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/text2image_throughput.py --size tiny --height 32 --width 32 --steps 10
	$(BIN)/python benchmarks/adapter_throughput.py --size tiny --resolution 32 --batch 4 --threads 1

# The embedded default's stages on the GPU (DDPM training, sampling in fp32/fp16 with judge
# agreement, a classifier, dm at ipc 1/10/50); then SD 1.5's architecture (random weights) at
# 512x512 through the synthetic_shards asset against a bare loop (fp16, 25 steps, batch 16)
# and its LoRA fine-tune (bf16, batch 4).
bench-gpu: $(STAMP)  ## GPU benchmarks, JSON (needs CUDA)
	$(BIN)/python benchmarks/gpu_smoke.py --device cuda
	$(BIN)/python benchmarks/text2image_throughput.py --size sd15 --device cuda --dtype float16 \
		--height 512 --width 512 --steps 25 --batch 16 --images 128 --shard-size 64
	$(BIN)/python benchmarks/adapter_throughput.py --size sd15 --device cuda --dtype bfloat16 \
		--resolution 512 --batch 4 --steps 50

dev: $(STAMP)  ## the Dagster UI on 127.0.0.1:3000 with the same definitions
	$(BIN)/dagster dev -m synthfactory.definitions -h 127.0.0.1 -p 3000

dvc-sync: $(STAMP)  ## regenerate dvc.yaml from the Dagster definitions
	$(BIN)/synthfactory dvc-sync

repro: $(STAMP) $(DVC_STAMP)  ## `dvc repro`: rebuild what changed, record it in dvc.lock
	$(BIN)/synthfactory dvc-sync --check
	$(DVC) repro

status: $(DVC_STAMP)  ## `dvc status`: which stages are out of date
	$(DVC) status

exp-run: $(STAMP) $(DVC_STAMP)  ## an experiment: make exp-run S="filtered_set.threshold=0.5 ..."
	$(DVC) exp run $(foreach s,$(S),-S $(s))

exp-show: $(DVC_STAMP)  ## experiments side by side: params and the arm accuracies
	$(DVC) exp show --no-pager --drop '.*(\.per_class|per_class_accuracy|confusion|accuracies|digest|sha256|seconds)|lineage|src/|data/'

push: $(DVC_STAMP)  ## upload the data of dvc.lock to the default remote
	$(DVC) push

pull: $(DVC_STAMP)  ## download the data of dvc.lock and check it out into the work tree
	$(DVC) pull

checkout: $(DVC_STAMP)  ## make data/ and reports/ match dvc.lock (after a git checkout)
	$(DVC) checkout

# The manual (docs/, MkDocs Material) into site/. --strict: a broken link, a missing anchor or a
# page left out of the nav fails; docs/hooks.py generates the configuration reference first.
docs: $(STAMP)  ## the manual, built into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf data reports
