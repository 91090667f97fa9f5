"""The one-of-each helpers: DETOPS_HOME, run ids, the name -> implementation catalog, JSON read/write."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from training import storage
from training.catalog import Catalog
from training.errors import ConfigError, DataError, NotFoundError
from training.home import detops_home

# ------------------------------------------------------------------------------------- DETOPS_HOME


def test_detops_home_default_is_dot_detops_in_the_user_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DETOPS_HOME", raising=False)
    assert detops_home() == tmp_path / ".detops"
    assert (tmp_path / ".detops").is_dir()


def test_empty_detops_home_counts_as_unset_not_as_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DETOPS_HOME", "")
    assert detops_home() == tmp_path / ".detops"


def test_detops_home_expands_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DETOPS_HOME", "~/state dir")
    assert detops_home() == tmp_path / "state dir"


def test_every_user_of_detops_home_resolves_it_the_same_way(tmp_path, monkeypatch):
    """The MLflow store, the pretrained cache and staging folders all sit under the one home."""
    from training import pretrained, tracking

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DETOPS_HOME", "~/h")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "h"
    assert tracking.detops_home() == home
    assert tracking.default_tracking_uri() == f"sqlite:///{(home / 'mlflow.db').as_posix()}"
    assert pretrained.default_cache_dir() == home / "pretrained"


# --------------------------------------------------------------------------------- DETOPS_DATASETS


def test_datasets_root_default_is_shared_datasets_beside_the_checkout(monkeypatch):
    from training.settings import CommonSettings

    monkeypatch.delenv("DETOPS_DATASETS", raising=False)
    checkout = Path(__file__).resolve().parents[2]
    assert CommonSettings.load().datasets_root() == checkout.parent / "shared" / "datasets"
    monkeypatch.setenv("DETOPS_DATASETS", "")  # empty counts as unset, as for DETOPS_HOME
    assert CommonSettings.load().datasets_root() == checkout.parent / "shared" / "datasets"


def test_datasets_root_takes_the_setting_with_the_user_folder_expanded(tmp_path, monkeypatch):
    from training.settings import CommonSettings

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DETOPS_DATASETS", "~/labelled data")
    assert CommonSettings.load().datasets_root() == tmp_path / "labelled data"


# ----------------------------------------------------------------------------------------- run ids


def test_run_ids_have_one_format():
    from training.backends.base import new_run_id as backend_run_id
    from training.run import new_run_id

    assert backend_run_id is new_run_id
    rid = new_run_id(dt.datetime(2026, 11, 22, 12, 0, 5, tzinfo=dt.UTC))
    assert re.fullmatch(r"20261122T120005-[0-9a-f]{6}", rid)
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", new_run_id())


def test_a_new_run_uses_the_run_id_format_and_records_missing_stages(tmp_path):
    from training.config import load_run_config
    from training.names import STAGES
    from training.run import Run, has_manifest

    cfg = load_run_config(tree={"data": {"path": str(tmp_path)}, "datastore": str(tmp_path / "store")})
    run = Run.create(cfg)
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", run.id)
    assert Path(run.url).parent == tmp_path / "store" / "detops" / "runs"
    assert has_manifest(run.url) and not has_manifest(str(tmp_path))
    assert run.missing_stages() == list(STAGES)
    run.stage_done("prepare", images_kept=3)
    reopened = Run.open(run.url)
    assert reopened.missing_stages() == ["train", "evaluate", "export"]
    assert reopened.manifest["stages"]["prepare"]["images_kept"] == 3


# ---------------------------------------------------------------------------------------- catalog


def test_catalog_refuses_a_duplicate_name_and_keeps_the_first():
    c: Catalog[int] = Catalog("widget", {"a": 1})
    with pytest.raises(ConfigError, match="widget 'a' is already registered"):
        c.register("a", 2)
    assert c.lookup("a") == 1 and dict(c) == {"a": 1}


def test_catalog_lookup_lists_what_exists_with_a_near_match():
    c: Catalog[int] = Catalog("widget", {"alpha": 1, "beta": 2})
    with pytest.raises(NotFoundError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\? Known: alpha, beta\."):
        c.lookup("alpah")
    with pytest.raises(NotFoundError, match=r"unknown widget 'zzz'\. Known: alpha, beta\.$"):
        c.lookup("zzz")


def test_catalog_loads_module_colon_class_entries_lazily():
    c: Catalog[str] = Catalog("thing", {"od": "collections:OrderedDict"})
    assert type(c.load("od", a=1)).__name__ == "OrderedDict"


def test_a_second_reader_with_a_taken_name_is_refused():
    from training.annotations import READERS, register_reader

    original = READERS.lookup("voc")
    with pytest.raises(ConfigError, match="annotation format 'voc' is already registered"):
        register_reader("voc", lambda ctx, inputs, images: ([], None), "an impostor")
    assert READERS.lookup("voc") is original


@pytest.mark.parametrize(
    ("module", "attr", "kind"),
    [
        ("training.annotations", "READERS", "annotation format"),
        ("training.backends", "BACKENDS", "backend"),
        ("deployment.registry", "REGISTRIES", "registry"),
        ("deployment.targets", "TARGETS", "deploy target"),
    ],
)
def test_every_name_to_implementation_table_is_a_catalog(module, attr, kind):
    import importlib

    table = getattr(importlib.import_module(module), attr)
    assert isinstance(table, Catalog) and table.kind == kind
    with pytest.raises(NotFoundError, match=f"unknown {kind} 'no-such-name'"):
        table.lookup("no-such-name")


# ------------------------------------------------------------------------------------------- JSON


def test_json_object_read_names_the_file_when_malformed(tmp_path):
    bad = tmp_path / "my run" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"metrics\.json: not valid JSON"):
        storage.read_json_object(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"metrics\.json: expected a JSON object of metrics"):
        storage.read_json_object(str(bad), "a JSON object of metrics")


def test_json_write_then_read_round_trips_and_creates_folders(tmp_path):
    target = tmp_path / "a b" / "c" / "doc.json"
    doc = {"x": 1, "when": dt.date(2026, 1, 2), "path": Path("/p q")}
    storage.write_json(str(target), doc)
    assert target.read_text().endswith("\n")
    assert storage.read_json_object(str(target)) == {"x": 1, "when": "2026-01-02", "path": "/p q"}
