.PHONY: run test lint format infra

STAGE ?= dev
PREFIX ?= billing-$(STAGE)

run:  ## set up and run the app locally (embedded PostgreSQL, chalice local, seed data)
	scripts/dev

test:  ## set up and run the whole test suite
	scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

infra:  ## chalice package + patched Terraform + infra/ modules in build/$(STAGE)
	scripts/bootstrap && .venv/bin/python -m devtools.package --stage $(STAGE) --prefix $(PREFIX)
