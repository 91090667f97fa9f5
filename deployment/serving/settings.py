"""Settings of the scoring service, from the environment only (pydantic-settings).

Every field reads ``DETOPS_<FIELD>`` (e.g. ``DETOPS_MODEL_DIR``); the API keys read
``DETOPS_API_KEYS`` (comma-separated) or ``DETOPS_API_KEY``. Keys are required and have no default:
the service refuses to start without one. Put them in the environment from a secret store (Key Vault,
Secrets Manager, a Kubernetes secret), never in a file in the repository.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_KEY_LENGTH = 16


def _split(value):
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class ServingSettings(BaseSettings):
    """Configuration of one scoring service instance (one model version)."""

    model_config = SettingsConfigDict(env_prefix="DETOPS_", extra="ignore", populate_by_name=True)

    auth: Literal["key", "platform"] = Field(
        "key",
        description="'key': the app checks DETOPS_API_KEYS on every route but the probes. 'platform': the "
        "platform in front authenticates (Azure ML online endpoint key/token, SageMaker IAM-signed "
        "InvokeEndpoint) and the container port is reachable only through it; the app checks no key.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("DETOPS_API_KEYS", "DETOPS_API_KEY", "api_keys"),
        description="Accepted API keys (header X-API-Key or Authorization: Bearer). Required with auth=key.",
    )
    model_dir: str = Field(
        default_factory=lambda: os.path.join(os.environ.get("DETOPS_SM_ROOT", "/opt/ml"), "model"),
        validation_alias=AliasChoices("DETOPS_MODEL_DIR", "AZUREML_MODEL_DIR", "model_dir"),
        description="SavedModel folder, a run's export/ folder, or a folder with one of them nested inside "
        "(Azure ML's $AZUREML_MODEL_DIR). Default: SageMaker's /opt/ml/model.",
    )
    model_name: str = Field("model", description="Registered model name the service reports (and the workflows pass as --name).")
    model_version: str = Field("unknown", description="Model version the service reports.")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Largest request body; larger gets 413.")
    max_images: int = Field(16, gt=0, description="Most images in one request; more gets 422.")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest image (width x height); larger gets 413.")
    max_decoded_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description=(
            "Most bytes the images of one request decode to together (width x height x 3: the model decodes "
            "to RGB), checked on the image headers before any decode; more gets 413. The default takes 16 "
            "full-HD frames (99.5 MB) and refuses one 6000x6000 image (108 MB)."
        ),
    )
    max_concurrent_requests: int = Field(
        32, gt=0, description=(
            "Scoring requests (/score, /invocations) handled at once; one more gets 503 with Retry-After "
            "before its body is read. Probes and /metrics are not counted."
        ),
    )
    max_queued_images: int = Field(
        64, gt=0, description=(
            "Images waiting for the model (the micro-batcher's queue); a request whose images do not all "
            "fit gets 503 with Retry-After and none of them is queued."
        ),
    )
    retry_after_seconds: int = Field(1, ge=0, description="Retry-After of a 503 answered under overload.")
    runtime: Literal["savedmodel", "tflite-float", "tflite-int8"] = Field(
        "savedmodel",
        description="Model runtime: the SavedModel, or the export's TFLite float/int8 model (XNNPACK); "
        "TFLite only when export/parity.json says that variant passed.",
    )
    max_batch_size: int = Field(8, gt=0, description="Most images in one model call (micro-batching).")
    batch_size_tuning: bool = Field(
        True,
        description="At startup, time batches of 1, 2, 4... up to DETOPS_MAX_BATCH_SIZE on a synthetic "
        "640x480 image and batch at most the size that scores the most images/s (a bigger size must gain "
        "5%); on CPU a bigger SavedModel batch is often slower per image. false: batch up to "
        "DETOPS_MAX_BATCH_SIZE.",
    )
    model_workers: int | None = Field(
        None, gt=0, le=16, description=(
            "Model calls (batches) in flight at once (SavedModel) or interpreters scoring side by side "
            "(TFLite); unset: one per two cores (SavedModel), one per core (TFLite)."
        ),
    )
    intra_op_threads: int | None = Field(
        None, gt=0, le=256, description="Threads inside one model call (TF intra-op / XNNPACK); unset: from the cores."
    )
    inter_op_threads: int | None = Field(
        None, gt=0, le=256, description="TensorFlow ops run side by side (SavedModel runtime); unset: 2."
    )
    batch_wait_ms: float = Field(0.0, ge=0, description="Extra wait for more requests before a batch runs.")
    score_threshold: float = Field(0.0, ge=0, le=1, description="Default minimum score of returned detections.")
    input_uri_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Storage URI prefixes inputs may be read from (comma-separated); empty disables URI input.",
    )
    max_uri_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest image read from a storage URI.")
    capture_uri: str | None = Field(None, description="Datastore folder for request/response capture (JSONL).")
    capture_sample_rate: float = Field(0.0, ge=0, le=1, description="Fraction of requests captured.")
    capture_flush_records: int = Field(100, gt=0, description="Captured records buffered before a capture file is written.")
    capture_flush_seconds: float = Field(5.0, gt=0, description="Longest wait before buffered captures are written.")
    capture_max_buffer_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description=(
            "Most bytes of captured images held in memory (waiting or failed to write); beyond it new "
            "records are dropped and counted in detops_capture_records_total{event=\"dropped\"}."
        ),
    )
    invocations_require_key: bool = Field(
        True, description="Require the API key on /invocations (set false behind SageMaker's IAM-signed endpoint)."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v):
        return _split(v)

    @field_validator("input_uri_prefixes", mode="before")
    @classmethod
    def _split_prefixes(cls, v):
        return _split(v)

    @model_validator(mode="after")
    def _keys_unless_platform_auth(self) -> ServingSettings:
        if self.auth == "key" and not self.api_keys:
            raise ValueError("at least one API key is required (DETOPS_API_KEY or DETOPS_API_KEYS), "
                             "or DETOPS_AUTH=platform behind a platform that authenticates")
        return self

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServingSettings:
        if self.max_queued_images < self.max_images:
            raise ValueError(f"max_queued_images ({self.max_queued_images}) must be at least max_images "
                             f"({self.max_images}): a request's images are queued all together or not at all")
        return self

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, v: list[SecretStr]) -> list[SecretStr]:
        for key in v:
            if len(key.get_secret_value()) < MIN_KEY_LENGTH:
                raise ValueError(f"API keys must have at least {MIN_KEY_LENGTH} characters")
        return v


class ServerSettings(BaseSettings):
    """Where ``python -m deployment.serving`` listens (no secrets; read before the model loads)."""

    model_config = SettingsConfigDict(env_prefix="DETOPS_", extra="ignore", env_ignore_empty=True)

    host: str = Field("127.0.0.1", description="Address the scoring service binds.")
    port: int = Field(8080, gt=0, lt=65536, description="Port the scoring service listens on.")
    log_level: str = Field("info", description="uvicorn log level (critical, error, warning, info, debug, trace).")
    max_connections: int = Field(
        512, gt=0, description=(
            "Open connections and requests uvicorn serves at once (its limit_concurrency); beyond it every "
            "request, probes included, gets a plain 503. A backstop above DETOPS_MAX_CONCURRENT_REQUESTS."
        ),
    )


def api_key_configured(env: Mapping[str, str]) -> bool:
    """True when ``env`` (a service's environment) holds ``DETOPS_API_KEY`` or ``DETOPS_API_KEYS``."""
    return bool(env.get("DETOPS_API_KEY") or env.get("DETOPS_API_KEYS"))


def load_settings(**overrides) -> ServingSettings:
    """Settings from the environment plus ``overrides``; :class:`training.errors.ConfigError` if invalid."""
    from pydantic import ValidationError

    from training.errors import ConfigError

    try:
        return ServingSettings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"serving settings invalid ({problems}); see docs/serving.md") from None
