# syntax=docker/dockerfile:1
# detops serving image: the FastAPI scoring app (deployment/serving) on port 8080, for AKS / Azure ML
# online deployments and SageMaker endpoints (GET /ping, POST /invocations). CPU inference.
#   docker build -f docker/serving.Dockerfile -t <acr-or-ecr>/detops-serving:<version> .
# The model folder comes from the platform: $AZUREML_MODEL_DIR (Azure ML), /opt/ml/model (SageMaker),
# or DETOPS_MODEL_DIR. API keys come from the environment (a secret store), never from the image.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TENSORFLOW_VERSION=2.20.0

LABEL org.opencontainers.image.title="detops-serving" \
      org.opencontainers.image.description="TensorFlow object detection scoring service (FastAPI)" \
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

COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY training training
COPY deployment deployment
COPY detops detops
RUN pip install --no-cache-dir -c requirements/constraints.txt \
      "tensorflow==${TENSORFLOW_VERSION}" ".[serve,azure,aws]" \
 && python -c "import deployment.serving.app"

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
