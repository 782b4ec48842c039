# Sidegate: `make run` (demo app + Sidegate in front of it) and `make test` (the whole suite).
# Every target sets up what it needs first, on a fresh Debian machine with Python 3.11.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install pure run test lint typecheck unit bench bench-observe system-deps image image-deps image-base clean

# The hot path is compiled with mypyc, in place, whenever a source changed (see setup.py);
# `make pure` removes the compiled modules to run the interpreted reference implementation.
SOURCES := setup.py $(shell find src -name '*.py' -o -name '*.c')

install: $(VENV)/.installed $(VENV)/.compiled

$(VENV)/.installed: pyproject.toml
	@bash scripts/bootstrap-venv.sh "$(PYTHON)" "$(VENV)"
	@touch $@

$(VENV)/.compiled: $(VENV)/.installed $(SOURCES)
	@echo "compiling the hot path with mypyc (about a minute)"
	@$(BIN)/python setup.py -q build_ext --inplace > $(VENV)/compile.log 2>&1 || \
		{ tail -30 $(VENV)/compile.log; echo "mypyc build failed: full log in $(VENV)/compile.log" >&2; exit 1; }
	@find src -name '*.so' -exec touch {} +  # the copies keep the build's time; the stale check reads it
	@touch $@

pure:
	find src -name '*.so' -delete
	rm -f $(VENV)/.compiled

# Debian packages the tests start on loopback (nginx and wrk: the benchmark's smoke test; Redis:
# rate limits shared across pods; Chromium: the admin dashboard in a real, headless browser; buildah
# and debootstrap: the container image, built and run in tests/e2e/test_image.py; curl: a real
# client of the egress proxy; iproute2: the network namespaces of the egress SSRF test; iptables: the
# nat rules of transparent mode, applied in a network namespace by its test).
system-deps:
	@bash scripts/install-system-deps.sh nginx-light wrk redis-server chromium buildah debootstrap curl iproute2 iptables

# The container image (Containerfile): `make image` builds $(IMAGE) with buildah, from BASE (default the
# official python:3.11-slim-bookworm). Without a registry: `make image-base` builds a Debian bookworm base
# with debootstrap, then `make image BASE=$(TEST_BASE)`. The host's CA bundle is lent to the build as a
# secret (pip behind a TLS-inspecting proxy); CONTAINER_BUILD="docker build" uses docker instead.
VERSION   := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml)
IMAGE     ?= localhost/sidegate:$(VERSION)
BASE      ?= docker.io/library/python:3.11-slim-bookworm
TEST_BASE ?= localhost/sidegate-base:bookworm
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
CONTAINER_BUILD ?= buildah bud --isolation chroot --layers
REVISION  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
comma     := ,

image: $(if $(filter buildah%,$(CONTAINER_BUILD)),image-deps)
	$(CONTAINER_BUILD) -f Containerfile -t $(IMAGE) --build-arg BASE=$(BASE) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		$(if $(CA_BUNDLE),--secret id=ca-bundle$(comma)src=$(CA_BUNDLE)) .

image-deps:
	@bash scripts/install-system-deps.sh buildah

image-base:
	@bash scripts/install-system-deps.sh buildah debootstrap
	@bash scripts/debootstrap-base.sh $(TEST_BASE)

run: install
	@bash scripts/run-demo.sh

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy --strict bench/*.py examples/demo_app.py

test: install system-deps lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q tests/unit

bench: install
	@bash scripts/install-system-deps.sh nginx-light wrk
	$(BIN)/python bench/run.py $(BENCH_ARGS)
bench-cache: ; @$(MAKE) --no-print-directory bench BENCH_ARGS="--cache $(BENCH_ARGS)"
bench-auth: ; @bash scripts/install-system-deps.sh redis-server && $(MAKE) --no-print-directory bench BENCH_ARGS="--auth $(BENCH_ARGS)"
bench-observe: ; @$(MAKE) --no-print-directory bench BENCH_ARGS="--observe --only direct,nginx,sidegate $(BENCH_ARGS)"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/results build
	find src -name '*.so' -delete
