# The two commands of the README: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Three workers, each taking whole test files (module fixtures stay in one process): most
# tests wait on daemons and child processes, so on 2 cores the suite takes half the time.
# Then the slowest tests.
PYTEST_ARGS ?= -n 3 --dist loadfile --durations=15 --durations-min=1
DEFAULT_MINOR = $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

.PHONY: install demo test test-pythons lint bench clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "meow needs Python >= 3.11"'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || ./.ci/ensure-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@# Compiled once, as an installed package ships them: with PYTHONDONTWRITEBYTECODE set,
	@# every meow call would compile meow's modules again (~10 ms).
	$(BIN)/python -m compileall -q meowd meowcli cattino
	@touch $@

install: $(BIN)/.installed

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" ./examples/demo.sh

test: install
	@./.ci/ensure-tools
	@./.ci/ensure-slurm
	@./.ci/ensure-glibc
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	PYTHON=$(BIN)/python ./.ci/pythons --except "$(DEFAULT_MINOR)" -- $(PYTEST_ARGS)

# The daemon, CLI, unit and Cattino tests on each other supported Python (README).
test-pythons: install
	PYTHON=$(BIN)/python ./.ci/pythons --except "$(DEFAULT_MINOR)" -- $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_submit.py
	$(BIN)/python benchmarks/bench_restart.py
	$(BIN)/python benchmarks/bench_top.py
	$(BIN)/python benchmarks/drain_floor.py
	$(BIN)/python benchmarks/simulate.py --scale

clean:
	rm -rf $(VENV) .venv-3.* .glibc .meow-demo .pytest_cache .ruff_cache
