# syntax=docker/dockerfile:1
# detops training image: the same `detops` CLI as on a laptop, for Azure ML command jobs and
# SageMaker training jobs. CPU and GPU variants from one file:
#   docker build -f docker/training.Dockerfile --build-arg VARIANT=gpu -t <acr-or-ecr>/detops-training:<version>-gpu .
#   docker build -f docker/training.Dockerfile --build-arg VARIANT=cpu -t <acr-or-ecr>/detops-training:<version>-cpu .
# Stage 1 builds the detops wheel; stage 2 installs it with docker/install.sh: requirements/training.txt
# (CPU) or requirements/training-gpu.txt (GPU: TensorFlow's CUDA libraries as nvidia-*-cu12 wheels), every
# package hash-checked. The NVIDIA driver comes from the host (GPU VMs / instances).
# Base: python:3.11.14-slim-bookworm, pinned by the digest of its multi-architecture index (docs/cloud.md).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build.txt requirements/build.txt
RUN python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY training training
COPY deployment deployment
COPY detops detops
RUN python -m pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS training
ARG VARIANT=cpu
ARG TENSORFLOW_VERSION=2.20.0
ARG MODELS_VERSION=2.20.0

LABEL org.opencontainers.image.title="detops-training" \
      org.opencontainers.image.description="TensorFlow object detection training (TF Model Garden ${MODELS_VERSION}, TensorFlow ${TENSORFLOW_VERSION}), detops CLI" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    DETOPS_HOME=/tmp/detops \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/detops
COPY requirements/training.txt requirements/training-gpu.txt requirements/
COPY docker/install.sh /usr/local/bin/detops-install
# The pinned set in a layer of its own, then the wheel: a source change rebuilds only the second.
RUN case "${VARIANT}" in \
      cpu) PROFILE=training ;; \
      gpu) PROFILE=training-gpu ;; \
      *) echo "VARIANT must be cpu or gpu, got ${VARIANT}" >&2; exit 2 ;; \
    esac \
 && echo "${PROFILE}" > requirements/profile \
 && sh /usr/local/bin/detops-install "${PROFILE}"
COPY --from=builder /wheels /wheels
RUN PROFILE="$(cat requirements/profile)" \
 && sh /usr/local/bin/detops-install "${PROFILE}" /wheels/detops-*.whl \
 && rm -rf /wheels

COPY docker/train-entrypoint.sh /usr/local/bin/detops-train-entrypoint
# A non-root user. SageMaker mounts its channels and /opt/ml/{model,output,checkpoints} for the
# container's user; the folders exist (owned by it) for runs without those mounts.
RUN chmod 0755 /usr/local/bin/detops-train-entrypoint \
 && groupadd --system --gid 10001 detops \
 && useradd --system --uid 10001 --gid detops --home-dir /tmp/detops --shell /usr/sbin/nologin detops \
 && mkdir -p /opt/ml/model /opt/ml/output /opt/ml/checkpoints /opt/ml/input /tmp/detops /tmp/matplotlib \
 && chown -R 10001:10001 /opt/ml /tmp/detops /tmp/matplotlib
USER 10001:10001

# SageMaker runs `docker run <image> train`; Azure ML runs its command line (`detops run --stage ...`).
ENTRYPOINT ["/usr/local/bin/detops-train-entrypoint"]
CMD ["detops", "--help"]
