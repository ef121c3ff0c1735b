# cxr-dask: `make run` and `make test` are the whole set-up (they call `make setup`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# command-or-file:package; a path is checked with test -e (fonts for synth's burned-in text)
DEBIAN_TOOLS := dcmdump:dcmtk dciodvfy:dicom3tools tesseract:tesseract-ocr \
	/usr/share/tesseract-ocr/5/tessdata/eng.traineddata:tesseract-ocr-eng \
	/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf:fonts-dejavu-core \
	/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf:fonts-liberation2
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup debian-tools run test bench lint clean image

setup: $(STAMP) debian-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# Installs the Debian packages whose commands the tests use, only when missing.
debian-tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  tool=$${pair%%:*}; \
	  { test -e "$$tool" || command -v "$$tool" >/dev/null 2>&1; } || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: setup
	$(BIN)/cxr-dask demo --workdir out

test: setup lint
	$(BIN)/python -m pytest --durations=15

# The peers (dicognito, deid, dicom-anonymizer) only for the benchmark: `make test` stays lean.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check cxr_dask tests bench
	$(BIN)/ruff format --check cxr_dask tests bench
	$(BIN)/mypy

# The container image for Kubernetes (cluster/Dockerfile); needs docker (or a docker-compatible CLI).
IMAGE ?= cxr-dask:latest
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image needs docker on PATH"; exit 1; }
	docker build -f cluster/Dockerfile -t $(IMAGE) .

clean:
	rm -rf out .pytest_cache
