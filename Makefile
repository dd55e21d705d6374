# Task runner: `make help`. Every target runs what CI runs, so a green `make check test` locally means a green CI.
PY ?= python

.PHONY: help install lint format typecheck lint-js unit test bench emulator emulator-stop check

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

install:  ## install the runtime and test dependencies
	pip install -r requirements-dev.txt

lint:  ## ruff (lint and format check), mypy, the JS linter
	ruff check gptload tests bench infra main.py
	ruff format --check gptload tests bench infra main.py
	$(PY) -m mypy
	bash .ci/lint-js.sh

format:  ## apply ruff's formatter and import sorting (and the JS formatter)
	ruff check --fix --select I gptload tests bench infra main.py
	ruff format gptload tests bench infra main.py
	bash .ci/lint-js.sh --write

typecheck:  ## mypy only
	$(PY) -m mypy

lint-js:  ## the console's JS linter and formatter check only
	bash .ci/lint-js.sh

unit:  ## the unit layer (pure code and in-process fakes; under 10 s)
	$(PY) -m pytest tests/unit -q

test:  ## the whole suite, exactly as the README says (start the emulator first to include Firestore)
	$(PY) -m pytest

bench:  ## the benchmark (bench/README.md); writes bench/results/latest.md
	$(PY) bench/run.py

emulator:  ## start the local Firestore emulator; then: export FIRESTORE_EMULATOR_HOST=127.0.0.1:8085
	bash .ci/firestore-emulator.sh start

emulator-stop:  ## stop it
	bash .ci/firestore-emulator.sh stop

check: lint unit  ## lint, then the unit layer
