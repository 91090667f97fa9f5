"""Data as a versioned input (issue 10, item 10): the run config pins the dataset by URI and sha256;
`prepare` refuses a dataset whose hash differs, naming both hashes, before writing anything heavy."""

from __future__ import annotations

import pytest
import yaml
from training_fakes import make_voc_dataset, tiny_config_tree

from training import pipeline
from training.annotations import read_dataset
from training.errors import ConfigError, DataError


def _hash(root):
    ds = read_dataset("voc", str(root / "Annotations"), images=str(root / "JPEGImages"))
    return pipeline.dataset_hash(ds.records)


def _config(tmp_path, data, **data_extra):
    tree = tiny_config_tree(data, tmp_path / "runs")
    tree["data"].update(data_extra)
    path = tmp_path / "run config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return pipeline.load_run_config(path)


def test_prepare_refuses_a_changed_dataset_with_both_hashes(tmp_path, monkeypatch):
    monkeypatch.delenv("DETOPS_DATASET_SHA256", raising=False)
    data = make_voc_dataset(tmp_path / "data set")
    pinned = _hash(data)
    # one box moved: a new version of the dataset
    xml = next((data / "Annotations").glob("*.xml"))
    text = xml.read_text()
    start = text.index("<xmin>") + len("<xmin>")
    end = text.index("</xmin>")
    xml.write_text(text[:start] + str(int(text[start:end]) + 1) + text[end:])
    actual = _hash(data)
    assert actual != pinned
    cfg = _config(tmp_path, data, sha256=pinned)
    with pytest.raises(DataError) as e:
        pipeline.prepare(cfg)
    assert pinned in str(e.value) and actual in str(e.value)
    assert not list((tmp_path / "runs").rglob("*.tfrecord"))


def test_matching_pin_passes_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("DETOPS_DATASET_SHA256", raising=False)
    data = make_voc_dataset(tmp_path / "data set")
    cfg = _config(tmp_path, data, sha256=_hash(data))
    ds = read_dataset("voc", str(data / "Annotations"), images=str(data / "JPEGImages"))
    assert pipeline.check_dataset_pin(ds.records, cfg.data, "x") == cfg.data.sha256


def test_the_setting_overrides_the_config_pin(tmp_path, monkeypatch):
    data = make_voc_dataset(tmp_path / "data set")
    cfg = _config(tmp_path, data, sha256=_hash(data))
    monkeypatch.setenv("DETOPS_DATASET_SHA256", "0" * 64)
    ds = read_dataset("voc", str(data / "Annotations"), images=str(data / "JPEGImages"))
    with pytest.raises(DataError, match="0{64}"):
        pipeline.check_dataset_pin(ds.records, cfg.data, "x")


def test_unpinned_dataset_is_accepted(tmp_path, monkeypatch):
    monkeypatch.delenv("DETOPS_DATASET_SHA256", raising=False)
    data = make_voc_dataset(tmp_path / "data set")
    cfg = _config(tmp_path, data)
    ds = read_dataset("voc", str(data / "Annotations"), images=str(data / "JPEGImages"))
    assert pipeline.check_dataset_pin(ds.records, cfg.data, "x") == _hash(data)


def test_a_malformed_pin_is_a_config_error(tmp_path):
    data = make_voc_dataset(tmp_path / "data set")
    with pytest.raises(ConfigError, match="sha256"):
        _config(tmp_path, data, sha256="abc")
