#!/usr/bin/env bash
# The simple pipeline: data creation -> preprocessing -> training -> testing, one script
# each, run in order; the first failing step stops the chain. See README.md beside this file.
#
#   examples/simple_pipeline/pipeline.sh                 # or: make simple-pipeline
#   WORK_DIR=/tmp/sp PYTHON=.venv/bin/python MIN_ROC_AUC=0.8 examples/simple_pipeline/pipeline.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python}"
WORK_DIR="$(realpath -m "${WORK_DIR:-$HERE/work}")"
MIN_ROC_AUC="${MIN_ROC_AUC:-0.6}"
export WORK_DIR
# The scripts import the project's package `model` from the checkout.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

run() {
  local script="$1"; shift
  local started=$SECONDS
  echo "==> $script (work folder: $WORK_DIR)"
  "$PYTHON" "$HERE/$script" --work-dir "$WORK_DIR" "$@"
  echo "<== $script: $((SECONDS - started)) s"
}

run data_creation.py
run model_preprocessing.py
run model_preparation.py
run model_testing.py --min-roc-auc "$MIN_ROC_AUC"
echo "simple pipeline passed: outputs under $WORK_DIR"
