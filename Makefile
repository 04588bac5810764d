# kit — every target creates .venv on first use and reuses it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kit-installed
# Python caches bytecode (__pycache__) beside what it imports, compiling each module on first use.
# Some machines (this CI's among them) set PYTHONDONTWRITEBYTECODE=1, and then every process
# compiles torch again: the suite took 461 s instead of ~200. The venv and the checkout are ours.
unexport PYTHONDONTWRITEBYTECODE
DATA   ?=
BUDGET ?=
LAUNCHER ?=
COMPETITION ?=
RECIPE_ARGS := $(if $(DATA),--data $(DATA)) $(if $(BUDGET),--budget $(BUDGET)) $(if $(LAUNCHER),--launcher $(LAUNCHER)) \
               $(if $(COMPETITION),--competition $(COMPETITION))

.PHONY: setup test test-fast synth-engines bench-suite lint rehearse-full bench bench-accuracy recipe-simple recipe-medium recipe-strong recipe-boss clean-venv

$(STAMP): pyproject.toml
	@echo "kit: creating $(VENV) (first run only; under a minute with uv, a few with pip)" >&2
	$(PYTHON) scripts/install_venv.py $(VENV)
	@touch $(STAMP)

setup: $(STAMP)

# The suite in 2 processes (pytest-xdist): one per core here; PYTEST_WORKERS=0 runs it in one.
# Tests marked slow run first and are handed out two at a time, so no core idles at the end.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --maxschedchunk 2
test: $(STAMP)
	$(PYTEST)

# Everything but the tests marked slow (those that spawn processes or train for seconds).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# ruff (pycodestyle, pyflakes, import order, bugbear, pyupgrade) and mypy, configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check kit scripts tests
	$(BIN)/mypy kit

# The speech synthesizers the tts preset of the tuning suite renders with (Debian/Ubuntu packages).
synth-engines:
	$(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get update -qq && apt-get install -y -qq espeak-ng flite'

# The accuracy bench on each competition of the tuning suite (hard, tts, many): boss at its quick
# budget and the course sample for the same wall time, one table (about an hour on 2 cores).
bench-suite: $(STAMP)
	@command -v espeak-ng >/dev/null && command -v flite >/dev/null || $(MAKE) synth-engines
	$(BIN)/kit bench --accuracy --suite

bench: $(STAMP)
	$(BIN)/kit bench

# The boss recipe on the hard synthetic preset vs the course sample for the same wall time,
# test set scored with the answer key (about 20 minutes on 2 cores).
bench-accuracy: $(STAMP)
	$(BIN)/kit bench --accuracy

recipe-simple recipe-medium recipe-strong recipe-boss: recipe-%: $(STAMP)
	$(BIN)/kit recipe run recipes/$*.toml $(RECIPE_ARGS)

clean-venv:
	rm -rf $(VENV)

# The whole job at its real shapes, briefly, on this machine: the boss recipe's full budget on the
# full-rehearsal preset (generated into data/ once, ~10 minutes on 2 cores), every stage timed and
# its peak memory checked against a Kaggle GPU session; then the budget's projected cost.
rehearse-full: $(STAMP)
	$(BIN)/kit recipe run recipes/boss.toml --budget full --rehearse
