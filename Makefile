# tandem — the two commands a new user runs: `make demo` and `make test`.
# Both work from a fresh clone: they create .venv, install the pinned stack,
# install redis-server if missing, fetch the Kafka jars and start the services.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install system-deps services services-down demo test test-unit lint clean

help:
	@echo "make demo      run tandem end to end on a small synthetic dataset"
	@echo "make test      install what is missing, start services, run the whole suite"
	@echo "make services  start Redis, Kafka and MLflow (tandem services up)"
	@echo "make lint      ruff"

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (tandem needs Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Redis comes from Debian's packages; Java 17+ and Maven run the Kafka broker.
system-deps:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing redis-server (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "error: redis-server missing; run: sudo apt-get install redis-server"; exit 1; fi; }
	@command -v java >/dev/null || { echo "error: java (17+) not found; Kafka needs it"; exit 1; }
	@command -v mvn >/dev/null || test -f .tandem/kafka/libs/.complete || { echo "error: mvn not found; it fetches the Kafka jars"; exit 1; }

services: install system-deps
	$(BIN)/tandem services up

services-down:
	$(BIN)/tandem services down

demo: services
	$(BIN)/tandem demo

# the suite starts and stops services of its own (tests/conftest.py: .tandem/test, other ports)
test: install system-deps
	$(BIN)/python -m pytest tests --durations=25

test-unit: install
	$(BIN)/python -m pytest tests/unit -q

lint: install
	$(BIN)/ruff check .

clean: services-down
	rm -rf .tandem
