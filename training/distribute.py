"""Pick the ``tf.distribute`` strategy a training process should use, from its environment.

One trainer runs everywhere; only the environment differs:

- ``TF_CONFIG`` (JSON, TensorFlow's convention; set by Azure ML's ``TensorFlowDistribution``,
  Kubernetes operators, or by hand) with more than one worker (``chief`` + ``worker`` tasks)
  -> :class:`tf.distribute.MultiWorkerMirroredStrategy` (synchronous data parallelism, all-reduce).
- SageMaker's ``SM_HOSTS`` (JSON list of host names, e.g. ``["algo-1", "algo-2"]``) and
  ``SM_CURRENT_HOST`` (``"algo-1"``) with more than one host -> converted to the same ``TF_CONFIG``
  (see :func:`tf_config_from_sagemaker`), then as above.
- Otherwise one process: :class:`tf.distribute.MirroredStrategy` when it sees more than one GPU,
  else TensorFlow's default strategy (``tf.distribute.get_strategy()``).

``MultiWorkerMirroredStrategy`` must be created before any other TensorFlow op runs in the process
(TensorFlow's rule), so call :func:`strategy_from_env` first thing in the trainer. Every worker must
run the same steps; only the chief (:func:`is_chief`) should write run artifacts other than its own
checkpoint copy (see :func:`worker_dir`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from training.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

#: Port the workers listen on for SageMaker hosts given without a port. SageMaker opens all ports
#: between the instances of one training job; 2222 is the one its TensorFlow containers use.
SAGEMAKER_WORKER_PORT = 2222


def _loads(env: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(env[key])
    except json.JSONDecodeError as e:
        raise ConfigError(f"environment variable {key} is not valid JSON: {e.msg} at char {e.pos}") from e


def tf_config_from_sagemaker(env: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """Build a ``TF_CONFIG`` dict from SageMaker's ``SM_HOSTS`` / ``SM_CURRENT_HOST``.

    Returns ``None`` when ``SM_HOSTS`` is absent. Hosts keep SageMaker's order; the first is the
    ``chief`` (task index 0 of the all-reduce ring), the rest are ``worker`` 0..n-2, so worker
    numbering matches ``TF_CONFIG`` written by hand. A host without ``:port`` gets
    ``$DETOPS_WORKER_PORT`` (default :data:`SAGEMAKER_WORKER_PORT`, 2222); a host may carry its own
    port (``"10.0.0.5:2300"``), which the tests use to run two workers on 127.0.0.1.

    Example: ``SM_HOSTS='["algo-1","algo-2"]'``, ``SM_CURRENT_HOST=algo-2`` ->
    ``{"cluster": {"chief": ["algo-1:2222"], "worker": ["algo-2:2222"]}, "task": {"type": "worker", "index": 0}}``.

    Raises:
        ConfigError: ``SM_HOSTS`` is not a non-empty JSON list of strings, ``SM_CURRENT_HOST`` is
            missing or not one of the hosts, or ``DETOPS_WORKER_PORT`` is not a port number.
    """
    if "SM_HOSTS" not in env:
        return None
    hosts = _loads(env, "SM_HOSTS")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError(f"SM_HOSTS must be a non-empty JSON list of host names, got {env['SM_HOSTS']!r}")
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"SM_HOSTS lists a host twice: {env['SM_HOSTS']!r}")
    current = env.get("SM_CURRENT_HOST")
    if not current:
        raise ConfigError("SM_HOSTS is set but SM_CURRENT_HOST is missing")
    if current not in hosts:
        raise ConfigError(f"SM_CURRENT_HOST {current!r} is not one of SM_HOSTS {hosts}")
    from training.settings import AwsSettings

    try:
        port_text = str(AwsSettings.load(env).worker_port)
    except ConfigError as e:
        raise ConfigError(f"DETOPS_WORKER_PORT must be a port number 1-65535 ({e})") from None

    def addr(host: str) -> str:
        return host if ":" in host else f"{host}:{port_text}"

    index = hosts.index(current)
    cluster: dict[str, list[str]] = {"chief": [addr(hosts[0])]}
    if len(hosts) > 1:
        cluster["worker"] = [addr(h) for h in hosts[1:]]
    task = {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
    return {"cluster": cluster, "task": task}


def tf_config_from_env(env: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The effective ``TF_CONFIG``: ``$TF_CONFIG`` if set, else one built from SageMaker's variables.

    Returns ``None`` when neither is set (a single local process).

    Raises:
        ConfigError: ``TF_CONFIG`` is not JSON, lacks ``cluster`` / ``task``, or its task is not in
            its cluster (names the variable and the offending value).
    """
    if env.get("TF_CONFIG"):
        cfg = _loads(env, "TF_CONFIG")
        if not isinstance(cfg, dict) or not isinstance(cfg.get("cluster"), dict):
            raise ConfigError(f"TF_CONFIG must be a JSON object with a 'cluster' mapping, got {env['TF_CONFIG']!r}")
        cluster = cfg["cluster"]
        for role, addrs in cluster.items():
            if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
                raise ConfigError(f"TF_CONFIG cluster.{role} must be a list of 'host:port' strings, got {addrs!r}")
        task = cfg.get("task") or {}
        ttype, tindex = task.get("type"), task.get("index", 0)
        if ttype is None:
            raise ConfigError("TF_CONFIG has no task.type (which task is this process?)")
        if ttype not in cluster or not isinstance(tindex, int) or not 0 <= tindex < len(cluster[ttype]):
            raise ConfigError(f"TF_CONFIG task {task!r} is not in its cluster {sorted(cluster)}")
        return cfg
    return tf_config_from_sagemaker(env)


def num_workers(env: Mapping[str, str] = os.environ) -> int:
    """Number of synchronous training workers (``chief`` + ``worker`` tasks); 1 without a cluster."""
    cfg = tf_config_from_env(env)
    if cfg is None:
        return 1
    cluster = cfg["cluster"]
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(env: Mapping[str, str] = os.environ) -> bool:
    """True for the process that writes shared run artifacts.

    That is the ``chief`` task, or ``worker`` 0 when the cluster has no chief, or the only process.
    """
    cfg = tf_config_from_env(env)
    if cfg is None:
        return True
    task = cfg.get("task", {})
    if "chief" in cfg["cluster"]:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


def worker_dir(base: str, env: Mapping[str, str] = os.environ) -> str:
    """Where this worker writes its checkpoints: ``base`` for the chief, ``base/workers/<type>-<i>`` else.

    ``MultiWorkerMirroredStrategy`` needs every worker to save (the save is a collective op), but
    only the chief's copy is kept; the others write to their own folder so they never clobber it.
    """
    if is_chief(env):
        return base
    task = tf_config_from_env(env)["task"]  # type: ignore[index]
    return f"{base.rstrip('/')}/workers/{task['type']}-{task.get('index', 0)}"


def strategy_from_env(env: Mapping[str, str] = os.environ) -> tf.distribute.Strategy:
    """Return the ``tf.distribute.Strategy`` for this process (see the module docstring).

    With a cluster of more than one worker the strategy is a ``MultiWorkerMirroredStrategy`` built
    from an explicit cluster resolver (so ``env`` need not be ``os.environ``); construction blocks
    until all workers have started, as TensorFlow does. Global batch = per-replica batch x
    ``strategy.num_replicas_in_sync``.

    Raises:
        ConfigError: malformed ``TF_CONFIG`` / ``SM_HOSTS`` (see :func:`tf_config_from_env`).
    """
    import tensorflow as tf

    cfg = tf_config_from_env(env)
    if cfg is not None and num_workers(env) > 1:
        task = cfg["task"]
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cfg["cluster"]),
            task_type=task["type"],
            task_id=int(task.get("index", 0)),
            rpc_layer=cfg.get("rpc_layer", "grpc"),
        )
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
