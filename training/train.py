"""Training with TF Model Garden's Orbit runner: checkpoints, TensorBoard, progress, resume.

``train_model`` runs ``official.core.train_lib.OrbitExperimentRunner`` in ``train`` mode:

* checkpoints every ``trainer.checkpoint_interval`` steps into ``checkpoint_dir`` (the last
  ``trainer.max_to_keep`` are kept); a run started again on the same folder **resumes** from the
  latest checkpoint (Orbit's ``CheckpointManager.restore_or_initialize``) and trains only the
  remaining steps;
* TensorBoard scalars (losses, learning rate) every ``trainer.summary_interval`` steps into
  ``tensorboard_dir``;
* a progress line with steps/s and ETA after each loop of ``trainer.steps_per_loop`` steps;
* every random source is seeded from ``task.train_data.seed`` (:func:`seed_everything`), so the
  same config on the same machine trains the same weights;
* the distribution strategy comes from the environment (``TF_CONFIG``; SageMaker's ``SM_HOSTS``)
  through :func:`training.distribute.strategy_from_env`, so the same code scales to several workers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger("detops.train")


@dataclass
class TrainResult:
    """What a training call did: the global step reached, steps run now, wall time (s), last losses."""

    global_step: int
    steps_run: int
    seconds: float
    losses: dict[str, float]


class _Progress:
    """Orbit train action: prints steps/s and ETA after each loop of steps."""

    def __init__(self, total: int, start: int, printer, on_progress=None):
        self.total, self.start, self.printer, self.on_progress = total, start, printer, on_progress
        self.t0 = time.monotonic()
        self.step_fn = None
        self.last: dict[str, float] = {}

    def __call__(self, output) -> None:
        step = int(self.step_fn()) if self.step_fn else 0
        done = max(step - self.start, 1)
        dt = time.monotonic() - self.t0
        rate = done / dt if dt > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        self.last = {k: float(v) for k, v in (output or {}).items() if getattr(v, "shape", ()) == ()}
        loss = self.last.get("total_loss", self.last.get("training_loss", float("nan")))
        self.printer(f"step {step}/{self.total}  loss {loss:.4f}  {rate:.2f} steps/s  ETA {eta:.0f}s")
        if self.on_progress is not None:
            self.on_progress(step, self.total, loss, rate)


def seed_everything(seed: int | None, deterministic_ops: bool = False) -> None:
    """Seed every random source of a training process from one integer.

    ``tf_keras.utils.set_random_seed`` seeds Python's ``random``, NumPy and TensorFlow's global
    generator: weight initializers and the augmentation ops of Model Garden's parser (random flip,
    scale jitter; they carry fixed op-level seeds, so the global seed decides their sequence).
    The input reader's file/example shuffling gets the seed through ``task.train_data.seed``
    (:func:`training.experiment.build_experiment`). ``deterministic_ops`` turns on TensorFlow's op
    determinism; it is off because with Model Garden's input pipeline (TF 2.20) creating the
    training iterator then fails ("MakeIterator ... input[0] == '^args_3', is not found"). Without
    it, the parser's random ops run in a parallel ``map``, so which image gets which flip/scale
    can vary between two runs of the same seed: the figures agree within the spread measured by
    ``benchmarks/bccd_map.py --seeds``, not bit for bit. ``None`` does nothing (an unseeded run).
    """
    if seed is None:
        return
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(int(seed))
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def default_strategy():
    """The distribution strategy from the environment (TF_CONFIG / SM_HOSTS), else the default one."""
    try:
        from training.distribute import strategy_from_env
    except ImportError:  # pragma: no cover - the module ships with the package
        import tensorflow as tf

        return tf.distribute.get_strategy()
    return strategy_from_env()


def train_model(
    params,
    checkpoint_dir: str,
    tensorboard_dir: str | None = None,
    strategy=None,
    printer=None,
    on_progress=None,
) -> TrainResult:
    """Train (or resume) the RetinaNet of ``params`` up to ``params.trainer.train_steps``.

    Args:
      params: a validated Model Garden ``ExperimentConfig`` (see :mod:`training.experiment`).
      checkpoint_dir: local folder (or a path TensorFlow's gfile can write) for ``ckpt-N`` files.
      tensorboard_dir: where train summaries go (default: ``<checkpoint_dir>/train``).
      strategy: a ``tf.distribute.Strategy``; default :func:`default_strategy`.
      printer: called with the resume message and, without ``on_progress``, one progress line per
        loop (default: the ``detops.train`` logger).
      on_progress: optional ``(global_step, total_steps, loss, steps_per_s)`` callback per loop
        (a progress bar, :meth:`training.report.Reporter.train_progress`); with it the per-loop
        lines go to the log (``log.info``), not to ``printer``.

    Returns:
      :class:`TrainResult`; ``steps_run`` is 0 when the checkpoint already reached the target.
    """
    from official.core import task_factory
    from official.vision import registry_imports  # noqa: F401  (registers the RetinaNet task)

    from training.experiment import register_backbones

    register_backbones()
    seed_everything(params.task.train_data.seed)
    strategy = strategy or default_strategy()
    printer = printer or log.info
    total = int(params.trainer.train_steps)
    start = _latest_step(checkpoint_dir)
    progress = _Progress(total, start, log.info if on_progress else printer, on_progress)
    t0 = time.monotonic()
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=checkpoint_dir)
    if start >= total:
        printer(f"checkpoint already at step {start} >= {total}; nothing to train")
    elif start:
        printer(f"resuming from step {start} (checkpoint in {checkpoint_dir})")
    # Orbit's controller prints each message to stdout besides logging it with absl; under a
    # progress bar (training.report.Reporter.stage) those prints go to stderr, the run's log.
    runner = _runner(params, task, strategy, checkpoint_dir, tensorboard_dir, progress)
    if start < total:
        runner.run()
        _keep_averaged_weights(runner)
    step = int(runner.trainer.global_step.numpy())
    return TrainResult(step, max(step - start, 0), time.monotonic() - t0, progress.last)


def _runner(params, task, strategy, checkpoint_dir: str, tensorboard_dir: str | None, progress: _Progress):
    """Model Garden's Orbit runner for ``task`` with ``progress`` as train action and a summary writer."""
    import orbit
    import tensorflow as tf
    from official.core import train_lib

    runner = train_lib.OrbitExperimentRunner(
        distribution_strategy=strategy,
        task=task,
        mode="train",
        params=params,
        model_dir=checkpoint_dir,
        run_post_eval=False,
        train_actions=[progress],
    )
    progress.step_fn = runner.trainer.global_step.numpy
    if tensorboard_dir:
        runner.controller.summary_manager = orbit.utils.SummaryManager(
            tensorboard_dir, tf.summary.scalar, global_step=runner.trainer.global_step
        )
    return runner


def _keep_averaged_weights(runner) -> None:
    """With an EMA optimizer (``trainer.optimizer_config.ema``), rewrite the final checkpoint with the
    model's trainable weights set to their moving averages, so that evaluation, export and serving
    (which restore the model from the latest checkpoint) use the averaged weights. Earlier checkpoints
    keep the raw weights and the averages beside them, so a resumed run continues as before."""
    from official.modeling.optimization import ExponentialMovingAverage

    optimizer = runner.trainer.optimizer
    if not isinstance(optimizer, ExponentialMovingAverage) or runner.checkpoint_manager is None:
        return
    optimizer.assign_average_vars(runner.trainer.model.trainable_variables)
    manager = runner.checkpoint_manager
    step = int(runner.trainer.global_step.numpy())
    # The manager saves nothing for a step it has saved already: then overwrite that step's files.
    if manager.save(checkpoint_number=step, check_interval=False) is None:
        manager.checkpoint.write(manager.latest_checkpoint)


def _latest_step(checkpoint_dir: str) -> int:
    """Global step of the latest checkpoint in ``checkpoint_dir`` (0 when there is none)."""
    import tensorflow as tf

    path = tf.train.latest_checkpoint(checkpoint_dir) if tf.io.gfile.exists(checkpoint_dir) else None
    if not path:
        return 0
    try:
        return int(path.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0
