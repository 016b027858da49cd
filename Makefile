# Commands a newcomer needs. `make` alone lists them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# The tests run against real PostgreSQL and Redis (the local ones unless overridden).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/dexsite
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.DEFAULT_GOAL := help
.PHONY: help install install-dev install-js install-browser install-nginx run run-prod test screenshots lint format bench-engine bench-orders bench-instructions bench-market-data bench-depth bench-bodies bench-ws bench-risk bench-triggers bench-matcher bench-serving chaos soak clean

help: ## this list
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python ## install runtime dependencies into .venv
	$(BIN)/pip install -q -r requirements.txt

install-dev: $(BIN)/python ## install runtime + test/tool dependencies into .venv
	$(BIN)/pip install -q -r requirements-dev.txt

# The dashboard's browser libraries (lightweight-charts, ethers), pinned in
# package-lock.json and served from node_modules as static files.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# The vault and test tokens (contracts/*.sol), compiled by the pinned solc; build output.
contracts/build/Vault.json: node_modules/.package-lock.json contracts/build.mjs $(wildcard contracts/*.sol)
	node contracts/build.mjs

install-js: node_modules/.package-lock.json contracts/build/Vault.json ## install the dashboard's browser libraries and anvil (npm ci), compile the contracts

install-browser: ## install Debian's Chromium for the browser tests, if missing
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

# The production router (Procfile `router`, deploy/nginx.conf): Debian's nginx, run by
# the Procfile in the foreground (the system's own nginx service is not used).
install-nginx: ## install Debian's nginx for the production router and its tests, if missing
	@command -v nginx >/dev/null 2>&1 || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y nginx; }

run: install install-js ## set up and run the exchange at http://127.0.0.1:$(PORT)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py collectstatic --noinput -v0
	# The local chain (anvil, its state kept in .chain/) and its vault (Procfile.dev).
	mkdir -p .chain
	# The demo's random-walk index, on PostgreSQL too (where INDEX_FEEDS defaults to none).
	CHAIN_RPC_URL=$${CHAIN_RPC_URL-http://127.0.0.1:8545} \
	CHAIN_WITHDRAWAL_KEY_FILE=$${CHAIN_WITHDRAWAL_KEY_FILE-$(CURDIR)/.chain/withdrawal.key} \
	INDEX_FEEDS=$${INDEX_FEEDS-trading.feeds.RandomWalkFeed} WEB_PORT=$(PORT) PYTHONUNBUFFERED=1 \
		$(BIN)/honcho start -f Procfile.dev

test: install-dev install-js install-browser install-nginx ## set up and run lint, migration check, JS units and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	node --test static/js/tests/
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/python -m pytest -q
	# The embedded set-up (make run): the order path's hand-written SQL on SQLite. Two
	# tests compare sums exactly, which SQLite's floating-point decimals cannot.
	env -u REDIS_URL DATABASE_URL=sqlite:///$(CURDIR)/.sqlite-test.db $(BIN)/python -m pytest -q \
		trading/tests accounts -k "not browser and not concurren and not thread" \
		--deselect trading/tests/test_orders_api.py::test_price_time_priority \
		--deselect trading/tests/test_risk_engine.py::test_liquidation_when_the_index_moves_against_a_20x_long

screenshots: install-dev install-js install-browser ## refresh docs/screenshots/ (browser tests, PostgreSQL + Redis)
	SCREENSHOTS=1 DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/python -m pytest -q trading/tests/browser

lint: install-dev ## ruff lint + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install-dev ## apply ruff formatting and fixes
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench-engine: install-dev ## matching engine vs public engines (docs/benchmarks.md)
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/engine.py

bench-orders: install-dev ## persisted orders/s through service and HTTP (PostgreSQL)
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/orders.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/http_floor.py

bench-instructions: install-dev ## CPU instructions per persisted order (callgrind; noise-free A/B)
	@command -v valgrind >/dev/null 2>&1 || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y valgrind; }
	$(BIN)/python bench/instructions.py

bench-market-data: install-dev ## market-data reads (ticker, charts) against trade history
	$(BIN)/python bench/market_data.py

bench-depth: install-dev ## depth of a 10,000-level book: old read vs new, and 16 depth readers over HTTP
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/depth.py

bench-bodies: install-dev ## oversize request bodies against the web role: what it reads, what it holds
	$(BIN)/python bench/bodies.py

run-prod: install install-js install-nginx ## the production roles of Procfile against DATABASE_URL and REDIS_URL (README: Production)
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || { echo "set DATABASE_URL and REDIS_URL"; exit 1; }
	$(BIN)/python manage.py check --deploy
	$(BIN)/python manage.py runclock --check
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py seed_demo
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(BIN)/honcho start -f Procfile

bench-ws: install-dev ## WebSocket fan-out vs a bare websockets server, idle capacity
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/ws_fanout.py

bench-ws-storm: install-dev ## a reconnect storm: 1,000 sockets opening and subscribing at once, vs a bare websockets server
	$(BIN)/python bench/ws_storm.py

bench-risk: install-dev ## funding over 1,000 positions, liquidation sweeps over 1,000 accounts
	$(BIN)/python bench/risk.py

bench-triggers: install-dev ## stop/take-profit: price crossing to order placed, clock running (PostgreSQL)
	$(BIN)/python bench/triggers.py

bench-matcher: install-dev ## the matcher role vs the embedded path: one book, HTTP, two web processes, restart (PostgreSQL + Redis)
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/matcher.py

bench-serving: install-dev install-nginx ## the order path's HTTP under uvicorn, granian, nginx in front (PostgreSQL + Redis)
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/serving.py

clean: ## remove the local database and collected static files
	rm -rf db.sqlite3 staticfiles

chaos: install-dev ## trust suite, long: flows, 100k differential, fuzzing, two web processes, 20 kill -9 and a PostgreSQL crash
	$(BIN)/pip install -q -r requirements-bench.txt
	TRUST_FLOWS=1000 TRUST_DIFF_COMMANDS=100000 TRUST_FUZZ_EXAMPLES=200 \
		DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/python -m pytest -q -s trust/tests/test_flows.py trust/tests/test_differential.py trust/tests/test_fuzz.py
	REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} $(BIN)/python trust/chaos.py --json bench/results/chaos.json

soak: install-dev ## trust suite: 10 minutes at 70% of peak (open model): latency, errors, memory
	$(BIN)/pip install -q -r requirements-bench.txt
	REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} $(BIN)/python trust/soak.py --json bench/results/soak.json
