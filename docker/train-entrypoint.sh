#!/bin/sh
# Entry point of the training image.
# - SageMaker starts the container with the single argument `train`: run the SageMaker adapter
#   (channels and hyperparameters -> detops train/evaluate/export of the run, see
#   training/backends/sagemaker_container.py).
# - Anything else (Azure ML's command line, `detops ...`, a shell) runs as given.
set -eu
if [ "${1:-}" = "train" ] && [ "$#" -eq 1 ]; then
  exec python -m training.backends.sagemaker_container
fi
exec "$@"
