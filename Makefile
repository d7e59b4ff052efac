VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup test demo bench bench-full clean

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) -m flop_fairseq.demo $(if $(DATA),--data $(DATA),) $(DEMO_FLAGS)

bench: setup
	$(PY) -m benchmarks.wikitext2 --mode quick $(BENCH_FLAGS)

bench-full: setup
	$(PY) -m benchmarks.wikitext2 --mode full $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) build *.egg-info
