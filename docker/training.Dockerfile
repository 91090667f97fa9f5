# syntax=docker/dockerfile:1
# detops training image: the same `detops` CLI as on a laptop, for Azure ML command jobs and
# SageMaker training jobs. CPU and GPU variants from one file:
#   docker build -f docker/training.Dockerfile --build-arg VARIANT=gpu -t <acr-or-ecr>/detops-training:<version>-gpu .
#   docker build -f docker/training.Dockerfile --build-arg VARIANT=cpu -t <acr-or-ecr>/detops-training:<version>-cpu .
# TensorFlow 2.20 ships its CUDA libraries as pip wheels (`tensorflow[and-cuda]`), so both variants
# start from the same slim Python base; the NVIDIA driver comes from the host (GPU VMs / instances).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG VARIANT=cpu
ARG TENSORFLOW_VERSION=2.20.0
ARG MODELS_VERSION=2.20.0

LABEL org.opencontainers.image.title="detops-training" \
      org.opencontainers.image.description="TensorFlow object detection training (TF Model Garden), detops CLI" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    DETOPS_HOME=/tmp/detops

WORKDIR /opt/detops

# Dependencies first (cached layer): the project's resolved pins, then the variant's TensorFlow.
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY training training
COPY deployment deployment
COPY detops detops
RUN case "${VARIANT}" in \
      cpu) TF_SPEC="tensorflow==${TENSORFLOW_VERSION}" ;; \
      gpu) TF_SPEC="tensorflow[and-cuda]==${TENSORFLOW_VERSION}" ;; \
      *) echo "VARIANT must be cpu or gpu, got ${VARIANT}" >&2; exit 2 ;; \
    esac \
 && pip install --no-cache-dir -c requirements/constraints.txt \
      "${TF_SPEC}" "tf-models-official==${MODELS_VERSION}" ".[azure,aws]" \
 && python -c "import tensorflow as tf, official.vision; print('tensorflow', tf.__version__)" \
 && detops --help > /dev/null

COPY docker/train-entrypoint.sh /usr/local/bin/detops-train-entrypoint
RUN chmod 0755 /usr/local/bin/detops-train-entrypoint

# SageMaker runs `docker run <image> train`; Azure ML runs its command line (`detops train ...`).
# /opt/ml is mounted by SageMaker as root, so this image keeps the default user.
ENTRYPOINT ["/usr/local/bin/detops-train-entrypoint"]
CMD ["detops", "--help"]
