# On a fresh clone `make run` and `make test` are all a person needs: both create the virtual
# environment first when it is missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The project's Dagster instance (gpu pool limit, run monitoring, telemetry off), unless the
# caller has one.
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: run test test-e2e bench bench-gpu dev lint clean browser-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Keep a torch that is already there (a GPU user's CUDA build); otherwise take the CPU wheel.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## materialize the graph on params.yaml
	$(BIN)/synthfactory run

test: $(STAMP) browser-deps  ## the fast, offline suite (CI runs this)
	$(BIN)/python -m pytest -q

# Debian's chromium + chromedriver for tests/test_browser.py (no browser download). Installed
# when missing and we are root with apt-get (CI); elsewhere the browser test is skipped with a
# reason that names this target.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "browser-deps: chromium/chromedriver missing and not root: the browser test will be skipped (as root: make browser-deps)"; fi

test-e2e: $(STAMP)  ## the long end-to-end runs on the default params
	$(BIN)/python -m pytest -q -m e2e

bench: $(STAMP)  ## benchmarks, each prints JSON (the distillation ones read the store of `make run`)
	$(BIN)/python benchmarks/import_time.py
	$(BIN)/python benchmarks/load_time.py
	$(BIN)/python benchmarks/generation_throughput.py
	$(BIN)/python benchmarks/generation_memory.py
	$(BIN)/python benchmarks/distillation.py
	$(BIN)/python benchmarks/distillation_methods.py
	$(BIN)/python benchmarks/text2image_throughput.py --size tiny --height 32 --width 32 --steps 10

bench-gpu: $(STAMP)  ## SD 1.5 architecture (random weights) at 512x512, 25 steps, fp16, batch 16
	$(BIN)/python benchmarks/text2image_throughput.py --size sd15 --device cuda --dtype float16 \
		--height 512 --width 512 --steps 25 --batch 16 --images 128 --shard-size 64

dev: $(STAMP)  ## the Dagster UI on 127.0.0.1:3000 with the same definitions
	$(BIN)/dagster dev -m synthfactory.definitions -h 127.0.0.1 -p 3000

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf data reports
