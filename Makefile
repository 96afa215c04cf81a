# ravend build targets; CI runs `make test` through .ci/run (the README's test command).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PKGS := wireguard-go wireguard-tools iproute2 nftables iptables openssh-client openssh-server iputils-ping procps kmod
STAMP := $(VENV)/.installed

.PHONY: install deb venv lint fmt typecheck pytest test test-fast bench demo demo-down clean

install: deb $(STAMP)

# Debian packages: installed only when one is missing, so repeated runs are fast and offline.
deb:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

lint: install
	$(BIN)/ruff check ravend tests bench
	$(BIN)/ruff format --check ravend tests bench

fmt: install
	$(BIN)/ruff format ravend tests bench
	$(BIN)/ruff check --fix ravend tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: lint typecheck pytest

test-fast: install
	$(BIN)/pytest -q -m "not netns and not slow"

bench: install
	$(BIN)/python -m bench

demo: install
	$(BIN)/ravend sim demo $(if $(CI),--once,)

demo-down: install
	$(BIN)/ravend sim down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
