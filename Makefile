# The two commands the README names: `make demo` and `make test`.
.PHONY: setup demo test lint unit bench
PY := .venv/bin/python

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/spendmeter demo

lint: setup
	.venv/bin/ruff check proxy operator tests scripts bench
	.venv/bin/ruff format --check proxy operator tests scripts bench
	.venv/bin/mypy

test: lint
	bash scripts/test.sh

bench: setup
	$(PY) bench/run.py
