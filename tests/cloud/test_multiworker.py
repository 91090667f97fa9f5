"""Two tf.distribute MultiWorkerMirroredStrategy workers on 127.0.0.1 train the real (tiny) RetinaNet
with the project trainer (training.train.train_model, Model Garden Orbit runner).

Configured once from ``TF_CONFIG`` and once from SageMaker's ``SM_HOSTS`` / ``SM_CURRENT_HOST``
(converted by :mod:`training.distribute`). Synchronous all-reduce means both workers report the
same loss and end with identical variables (compared one by one in their checkpoints: the chief's
in the model folder, the other's in the temporary folder Model Garden gives non-chief workers).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_records(folder: Path, shards: int = 2, per_shard: int = 4) -> None:
    """Tiny JPEGs with one or two boxes each, in Model Garden's tf.Example layout."""
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    k = 0
    for s in range(shards):
        path = folder / f"train-{s:05d}-of-{shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as w:
            for _ in range(per_shard):
                h, w_ = 48, 64
                img = rng.integers(0, 255, (h, w_, 3), dtype=np.uint8)
                img[8:30, 10:40] = (200, 30, 30)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG")
                boxes = [(10 / w_, 8 / h, 40 / w_, 30 / h)] + ([(0.6, 0.5, 0.95, 0.9)] if k % 2 else [])
                labels = [1] + ([2] if k % 2 else [])

                def f(v):
                    return tf.train.Feature(float_list=tf.train.FloatList(value=v))

                def i(v):
                    return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

                def b(v):
                    return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

                ex = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "image/encoded": b([buf.getvalue()]),
                            "image/format": b([b"jpeg"]),
                            "image/source_id": b([str(k).encode()]),
                            "image/height": i([h]),
                            "image/width": i([w_]),
                            "image/object/bbox/xmin": f([x[0] for x in boxes]),
                            "image/object/bbox/ymin": f([x[1] for x in boxes]),
                            "image/object/bbox/xmax": f([x[2] for x in boxes]),
                            "image/object/bbox/ymax": f([x[3] for x in boxes]),
                            "image/object/class/label": i(labels),
                            "image/object/is_crowd": i([0] * len(labels)),
                            "image/object/area": f([(x[2] - x[0]) * (x[3] - x[1]) * h * w_ for x in boxes]),
                        }
                    )
                )
                w.write(ex.SerializeToString())
                k += 1


def _envs(mode: str) -> list[dict[str, str]]:
    hosts = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    base = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "SM_HOSTS", "SM_CURRENT_HOST")}
    base.update({"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    base.update({"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"})
    out = []
    for idx in range(2):
        env = dict(base)
        if mode == "tf_config":
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": idx}})
        else:
            env["SM_HOSTS"] = json.dumps(hosts)
            env["SM_CURRENT_HOST"] = hosts[idx]
        out.append(env)
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("multi worker") / "tf_records"
    _write_records(folder)
    return folder


def _checkpoint_values(folder: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(folder))
    assert prefix, f"no checkpoint in {folder}"
    reader = tf.train.load_checkpoint(prefix)
    names = [k for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    return {k: reader.get_tensor(k) for k in names}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tf_config", "sagemaker"])
def test_two_workers_train_in_sync(mode, records, tmp_path):
    model_dir = tmp_path / "model training"
    tmpdirs = [tmp_path / f"tmp {i}" for i in range(2)]  # Model Garden saves non-chief checkpoints to TMPDIR
    procs = []
    for env, tmp in zip(_envs(mode), tmpdirs):
        tmp.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "mw_worker.py"), str(records), str(model_dir), str(STEPS)],
                env={**env, "TMPDIR": str(tmp)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, stderr[-3000:]
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    chief, other = results
    assert chief["is_chief"] and not other["is_chief"]
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["global_step"] == other["global_step"] == STEPS
    assert chief["steps_run"] == STEPS
    # the all-reduced training loss is the same number on both workers
    assert np.isfinite(chief["losses"]["total_loss"])
    np.testing.assert_allclose(chief["losses"]["total_loss"], other["losses"]["total_loss"], rtol=1e-5)
    # synchronous updates: the chief's checkpoint (in model_dir) and the other worker's copy (in its
    # temporary folder) hold the same model weights
    ckpt_chief = _checkpoint_values(model_dir)
    other_dirs = [p.parent for p in tmpdirs[1].rglob("checkpoint")]
    assert len(other_dirs) == 1, other_dirs
    ckpt_other = _checkpoint_values(other_dirs[0])
    assert ckpt_chief.keys() == ckpt_other.keys()
    assert sum(v.size for v in ckpt_chief.values()) > 100_000, sorted(ckpt_chief)[:20]  # weights, not just counters
    for name, value in ckpt_chief.items():
        np.testing.assert_allclose(value, ckpt_other[name], rtol=1e-5, atol=1e-6, err_msg=name)
