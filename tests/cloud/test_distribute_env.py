"""Unit tests of training.distribute: TF_CONFIG / SageMaker env parsing (no TensorFlow cluster)."""

from __future__ import annotations

import json

import pytest

from training import distribute
from training.errors import ConfigError


def test_sagemaker_hosts_become_tf_config_with_chief_first():
    env = {"SM_HOSTS": json.dumps(["algo-1", "algo-2", "algo-3"]), "SM_CURRENT_HOST": "algo-3"}
    cfg = distribute.tf_config_from_env(env)
    assert cfg == {
        "cluster": {"chief": ["algo-1:2222"], "worker": ["algo-2:2222", "algo-3:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    assert distribute.num_workers(env) == 3
    assert not distribute.is_chief(env)
    assert distribute.worker_dir("s3://b/run/ckpt/", env) == "s3://b/run/ckpt/workers/worker-1"


def test_sagemaker_first_host_is_chief_and_port_override():
    env = {"SM_HOSTS": '["algo-1","algo-2"]', "SM_CURRENT_HOST": "algo-1", "DETOPS_WORKER_PORT": "2300"}
    cfg = distribute.tf_config_from_env(env)
    assert cfg["task"] == {"type": "chief", "index": 0}
    assert cfg["cluster"]["worker"] == ["algo-2:2300"]
    assert distribute.is_chief(env)
    assert distribute.worker_dir("/r/ckpt", env) == "/r/ckpt"


def test_tf_config_wins_over_sagemaker_and_single_host_is_one_worker():
    tfc = {"cluster": {"worker": ["h1:1", "h2:2"]}, "task": {"type": "worker", "index": 1}}
    env = {"TF_CONFIG": json.dumps(tfc), "SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}
    assert distribute.tf_config_from_env(env) == tfc
    assert distribute.num_workers(env) == 2
    assert not distribute.is_chief(env)  # worker 1 of a chief-less cluster
    single = {"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}
    assert distribute.num_workers(single) == 1
    assert distribute.num_workers({}) == 1 and distribute.is_chief({})


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"TF_CONFIG": "{not json"}, "TF_CONFIG is not valid JSON"),
        ({"TF_CONFIG": '{"task": {"type": "worker"}}'}, "'cluster' mapping"),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'}, "not in its cluster"),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, "no task.type"),
        ({"SM_HOSTS": '"algo-1"', "SM_CURRENT_HOST": "algo-1"}, "non-empty JSON list"),
        ({"SM_HOSTS": '["algo-1"]'}, "SM_CURRENT_HOST is missing"),
        ({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-9"}, "not one of SM_HOSTS"),
        ({"SM_HOSTS": '["a","a"]', "SM_CURRENT_HOST": "a"}, "twice"),
        ({"SM_HOSTS": '["a","b"]', "SM_CURRENT_HOST": "a", "DETOPS_WORKER_PORT": "http"}, "port number"),
    ],
)
def test_bad_cluster_env_names_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        distribute.tf_config_from_env(env)


def test_no_cluster_gives_default_strategy():
    import tensorflow as tf

    strategy = distribute.strategy_from_env({})
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
