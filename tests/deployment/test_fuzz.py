"""Fuzzing the scoring API: schemathesis from the app's OpenAPI spec, and hypothesis on raw bodies.

Malformed requests must get a 4xx, never a 5xx. Bounded: a few dozen examples per operation.
"""

from __future__ import annotations

import json
import string

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from deployment.serving.app import create_app
from deployment.serving.settings import load_settings

API_KEY = "test-key-0123456789abcdef"


@schemathesis.serializer("image/jpeg", "image/png", "application/x-image")
def _raw_image(ctx, value):
    """Send generated image bodies as raw bytes (strings UTF-8 encoded)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


# The spec comes from the app itself (building the app loads no model).
_spec = create_app(load_settings(api_keys=API_KEY, model_dir="unused-for-the-spec")).openapi()
schema = schemathesis.openapi.from_dict(_spec)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=15, deterministic=True
)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openapi_operations_never_5xx(case, live_server):
    for headers in ({"X-API-Key": API_KEY}, {}):
        response = case.call(base_url=live_server.url, headers=headers, timeout=30)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])


_ctypes = st.sampled_from(
    [
        "image/jpeg",
        "image/png",
        "application/x-image",
        "application/json",
        "text/plain",
        "",
        "image/jpeg; charset=x",
        "application/json; charset=utf-8",
        "multipart/form-data; boundary=x",
    ]
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(string.printable, max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["instances", "input_data", "b64", "uri", "data", "columns", "score_threshold", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def http(live_server):
    with httpx.Client(base_url=live_server.url, timeout=30, headers={"X-API-Key": API_KEY}) as c:
        yield c


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    body=st.binary(max_size=2048) | st.builds(lambda v: json.dumps(v).encode(), _json_values),
    ctype=_ctypes,
    path=st.sampled_from(["/invocations", "/score"]),
)
def test_random_bodies_never_5xx(http, body, ctype, path):
    r = http.post(path, content=body, headers={"Content-Type": ctype})
    assert 400 <= r.status_code < 500 or r.status_code == 200, (path, ctype, body[:80], r.status_code, r.text[:200])
