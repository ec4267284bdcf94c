.PHONY: run test hardening lint format infra

STAGE ?= dev
PREFIX ?= billing-$(STAGE)

run:  ## set up and run the app locally (embedded PostgreSQL, chalice local, seed data)
	scripts/dev

test:  ## set up and run the whole test suite
	scripts/test

hardening:  ## the hardening suite at full size (fuzzing, breakout, tokens, bad input, faults, 60 s load)
	scripts/hardening

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

infra:  ## chalice package + patched Terraform + infra/ modules in build/$(STAGE)
	scripts/bootstrap && .venv/bin/python -m devtools.package --stage $(STAGE) --prefix $(PREFIX)
