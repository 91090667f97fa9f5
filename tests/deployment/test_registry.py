"""Registry lookup and the MLflow adapter's storage."""

from __future__ import annotations

import pytest

from deployment.registry import REGISTRIES, get_registry
from deployment.registry.base import ApprovalStatus, AuditEntry
from deployment.registry.mlflow import MlflowRegistry
from training.errors import NotFoundError


def test_lookup_names():
    """Every registry kind resolves to an implementation of the one ModelRegistry interface."""
    import importlib

    from deployment.registry.base import ModelRegistry

    assert set(REGISTRIES) == {"mlflow", "sagemaker", "azureml"}
    for kind in REGISTRIES:
        module_name, _, cls_name = REGISTRIES.lookup(kind).partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        assert issubclass(cls, ModelRegistry) and cls is not ModelRegistry, kind
    assert type(get_registry("mlflow")) is MlflowRegistry


def test_unknown_registry_lists_known_and_suggests():
    with pytest.raises(NotFoundError, match=r"Did you mean 'mlflow'\?.*Known: azureml, mlflow, sagemaker"):
        get_registry("mlfow")


def test_default_registry_is_mlflow_on_detops_home(_isolated_home):
    reg = get_registry()
    assert isinstance(reg, MlflowRegistry)
    assert reg.tracking_uri == f"sqlite:///{(_isolated_home / 'mlflow.db').as_posix()}"


def test_default_from_environment(monkeypatch):
    monkeypatch.setenv("DETOPS_REGISTRY", "nope")
    with pytest.raises(NotFoundError, match="unknown registry 'nope'"):
        get_registry()


def test_mlflow_adapter_roundtrip(registry, model_name):
    mv = registry.create_version(model_name, "/data/run 1/export", "alice", {"test/AP": 0.25}, {"k": "v"})
    assert (mv.version, mv.status, mv.registered_by) == ("1", ApprovalStatus.PENDING, "alice")
    mv2 = registry.create_version(model_name, "/data/run 2/export", "bob", {}, {})
    assert mv2.version == "2"
    got = registry.set_status(
        model_name, "1", ApprovalStatus.APPROVED, AuditEntry("carol", "2026-11-22T12:00:00+00:00", "approve", "fine")
    )
    assert got.status == ApprovalStatus.APPROVED and got.audit[-1].comment == "fine"
    assert got.metrics == {"test/AP": 0.25} and got.tags == {"k": "v"}
    assert [v.version for v in registry.list_versions(model_name)] == ["1", "2"]
    assert {v.name for v in registry.list_versions()} >= {model_name}
    with pytest.raises(NotFoundError, match=r"version '3' not found"):
        registry.get_version(model_name, "3")
    with pytest.raises(NotFoundError, match=r"model 'no-such-model-xyz' version '1' not found"):
        registry.get_version("no-such-model-xyz", "1")


def test_many_audit_entries_keep_order(registry, model_name):
    registry.create_version(model_name, "/x", "alice", {}, {})
    for i in range(12):
        registry.set_status(model_name, "1", ApprovalStatus.PENDING, AuditEntry("a", "t", "gate", f"c{i}"))
    assert [e.comment for e in registry.get_version(model_name, "1").audit] == [f"c{i}" for i in range(12)]
