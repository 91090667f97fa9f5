#!/bin/sh
# Entry point of the serving image: `serve` (SageMaker's argument, also the default) starts the
# FastAPI app with uvicorn on $DETOPS_HOST:$DETOPS_PORT (0.0.0.0:8080). The model folder is
# $DETOPS_MODEL_DIR, else Azure ML's $AZUREML_MODEL_DIR, else SageMaker's /opt/ml/model.
set -eu
if [ "${1:-serve}" = "serve" ]; then
  DETOPS_MODEL_DIR="${DETOPS_MODEL_DIR:-${AZUREML_MODEL_DIR:-/opt/ml/model}}"
  export DETOPS_MODEL_DIR
  exec python -m deployment.serving --host "${DETOPS_HOST:-0.0.0.0}" --port "${DETOPS_PORT:-8080}"
fi
exec "$@"
