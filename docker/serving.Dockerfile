# syntax=docker/dockerfile:1
# detops serving image: the FastAPI scoring app (deployment/serving) on port 8080, for Azure ML online
# deployments (managed or Kubernetes) and SageMaker endpoints (GET /ping, POST /invocations). CPU inference
# on tensorflow-cpu; none of the training packages (requirements/serving.txt).
#   docker build -f docker/serving.Dockerfile -t <acr-or-ecr>/detops-serving:<version> .
# The model folder comes from the platform: $AZUREML_MODEL_DIR (Azure ML), /opt/ml/model (SageMaker),
# or DETOPS_MODEL_DIR. API keys come from the environment (a secret store), never from the image.
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

FROM ${PYTHON_IMAGE} AS serving
ARG TENSORFLOW_VERSION=2.20.0

LABEL org.opencontainers.image.title="detops-serving" \
      org.opencontainers.image.description="TensorFlow ${TENSORFLOW_VERSION} (CPU) object detection scoring service (FastAPI)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    DETOPS_HOST=0.0.0.0 \
    DETOPS_PORT=8080 \
    DETOPS_HOME=/tmp/detops

WORKDIR /opt/detops
COPY requirements/serving.txt requirements/serving.txt
COPY docker/install.sh /usr/local/bin/detops-install
# The pinned set in a layer of its own, then the wheel: a source change rebuilds only the second.
RUN sh /usr/local/bin/detops-install serving
COPY --from=builder /wheels /wheels
RUN sh /usr/local/bin/detops-install serving /wheels/detops-*.whl && rm -rf /wheels

COPY docker/serve-entrypoint.sh /usr/local/bin/detops-serve-entrypoint
RUN chmod 0755 /usr/local/bin/detops-serve-entrypoint \
 && groupadd --system --gid 10001 detops \
 && useradd --system --uid 10001 --gid detops --home-dir /nonexistent --shell /usr/sbin/nologin detops

USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

# SageMaker starts the container as `docker run <image> serve`.
ENTRYPOINT ["/usr/local/bin/detops-serve-entrypoint"]
CMD ["serve"]
