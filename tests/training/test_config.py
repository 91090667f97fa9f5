"""Run-config validation: unknown keys with suggestions, env expansion, --set overrides."""

from __future__ import annotations

import pytest

from training.config import apply_set, load_run_config
from training.errors import ConfigError

BASE = {"data": {"format": "voc", "path": "/data"}}


def test_minimal_config_gets_defaults():
    cfg = load_run_config(tree={"data": {"path": "/d"}})
    assert cfg.datastore == "runs"
    assert cfg.split.ratios == (0.7, 0.15, 0.15)
    assert cfg.train.preset == "retinanet_mobilenetv2_fpn_cpu"


def test_unknown_top_level_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'datastor'.*Did you mean 'datastore'"):
        load_run_config(tree={**BASE, "datastor": "x"})


def test_unknown_nested_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"'train\.step'.*Did you mean 'steps'"):
        load_run_config(tree={**BASE, "train": {"step": 3}})


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.steps"):
        load_run_config(tree={**BASE, "train": {"steps": 0}})
    with pytest.raises(ConfigError, match=r"split\.ratios"):
        load_run_config(tree={**BASE, "split": {"ratios": [0.5, 0.5, 0.5]}})


def test_env_expansion_with_default(monkeypatch):
    monkeypatch.setenv("MY_DATA", "/mnt/x")
    monkeypatch.delenv("NOPE", raising=False)
    cfg = load_run_config(tree={"data": {"path": "${MY_DATA}/a"}, "datastore": "${NOPE:-/tmp/s}"})
    assert cfg.data.path == "/mnt/x/a"
    assert cfg.datastore == "/tmp/s"


def test_unset_env_var_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("DETOPS_UNSET_VAR", raising=False)
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  path: ${DETOPS_UNSET_VAR}/x\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*DETOPS_UNSET_VAR"):
        load_run_config(p)


def test_set_overrides_parse_yaml_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  path: /d\ntrain:\n  steps: 5\n")
    cfg = load_run_config(
        p, overrides=["train.steps=7", "export.int8=false", "train.overrides.task.model.head.num_convs=2"], datastore="s3://b/p"
    )
    assert cfg.train.steps == 7 and cfg.export.int8 is False
    assert cfg.train.overrides == {"task.model.head.num_convs": 2}
    assert cfg.datastore == "s3://b/p"


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_set({}, "train.steps")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)


def test_shipped_configs_validate(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("DETOPS_DATASETS", "/datasets")
    for p in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")):
        cfg = load_run_config(p)
        paths = [cfg.data.path] if isinstance(cfg.data.path, str) else cfg.data.path
        assert paths and all(x.startswith("/datasets/") for x in paths), p


def test_set_reads_exponent_floats():
    tree: dict = {}
    apply_set(tree, "train.learning_rate=1e-3")
    apply_set(tree, "train.overrides.task.losses.l2_weight_decay=4E-5")
    assert tree["train"]["learning_rate"] == 1e-3
    assert tree["train"]["overrides"]["task.losses.l2_weight_decay"] == 4e-5


def test_every_bad_key_is_reported_at_once_each_with_its_suggestion():
    tree = {**BASE, "datastor": "x", "train": {"step": 3, "bach_size": 2}, "validation": {"duplicate": "keep"}}
    with pytest.raises(ConfigError) as e:
        load_run_config(tree=tree)
    lines = str(e.value).splitlines()
    assert len(lines) == 4, lines
    expected = {
        "'datastor'": "'datastore'",
        "'train.step'": "'steps'",
        "'train.bach_size'": "'batch_size'",
        "'validation.duplicate'": "'duplicates'",
    }
    for key, suggestion in expected.items():
        (line,) = [x for x in lines if f"unknown key {key}" in x]
        assert f"Did you mean {suggestion}?" in line


def test_bad_keys_and_bad_values_are_reported_together():
    with pytest.raises(ConfigError, match=r"unknown key 'split\.sed'\. Did you mean 'seed'") as e:
        load_run_config(tree={**BASE, "train": {"steps": 0}, "split": {"sed": 1}})
    assert "train.steps: Input should be greater than or equal to 1" in str(e.value)


def test_the_validation_section_is_the_validators_policy():
    from training.annotations import ValidationPolicy

    cfg = load_run_config(tree={**BASE, "validation": {"duplicates": "keep", "workers": 2}})
    assert isinstance(cfg.validation, ValidationPolicy)
    assert cfg.validation == ValidationPolicy(duplicates="keep", workers=2)
    with pytest.raises(ConfigError, match=r"validation\.workers"):
        load_run_config(tree={**BASE, "validation": {"workers": 0}})
    with pytest.raises(ConfigError, match=r"validation policy: workers=0"):
        ValidationPolicy(workers=0)


def test_near_match_helpers():
    from training.errors import did_you_mean, near_match, unknown_name_error

    assert near_match("trian", ["train", "val", "test"]) == "train"
    assert near_match("zzz", ["train", "val"]) is None
    assert did_you_mean("step", ["steps", "seed"], prefix="train.") == " Did you mean 'train.steps'?"
    assert did_you_mean("zzz", ["steps"]) == ""
    err = unknown_name_error("backend", "azureml2", ["local", "azureml"])
    assert str(err) == "unknown backend 'azureml2'. Did you mean 'azureml'? Known: azureml, local."
