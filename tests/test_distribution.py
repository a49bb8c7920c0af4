"""Distributed training under TensorFlow: MirroredStrategy on two logical CPUs, two-worker
MultiWorkerMirroredStrategy on 127.0.0.1.

Logical devices have to be configured before TensorFlow initialises and a multi-worker cluster
needs one process per worker, so every scenario runs in fresh Python subprocesses (small scripts
written to tmp_path) and reports back through files; the assertions are made here.
"""

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from mixem_tf import checkpoints  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300

# Runs first in every script: two logical CPUs (the replicas of MirroredStrategy), set before
# TensorFlow initialises.
TWO_CPUS = """
import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
assert len(tf.config.list_logical_devices("CPU")) == 2
"""

# Observation only, for the fit scenarios: every replica prints the rows of each batch its loss
# sees, and a callback stores the model weights when training begins and ends (the same .npz
# format as the run's checkpoints), so that non-chief workers, which write no checkpoints,
# can be compared too. Then the real command line runs.
FIT_WRAPPER = """
import sys
from pathlib import Path

import keras
import tensorflow as tf

from mixem_tf import checkpoints, training
from mixem_tf.methods import SimCLR
from trainers.cli import run
from trainers.fit import main

_loss_terms = SimCLR.loss_terms


def loss_terms(self, views):
    tf.print("REPLICA_BATCH", tf.shape(views[0]["z"])[0], output_stream=sys.stderr)
    return _loss_terms(self, views)


class DumpWeights(keras.callbacks.Callback):
    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        checkpoints.save(self.folder / "initial", 0, self.model)

    def on_train_end(self, logs=None):
        checkpoints.save(self.folder / "final", 0, self.model)


_callbacks = training._callbacks


def callbacks(out_dir, *args, **kwargs):
    found, guard, throughput = _callbacks(out_dir, *args, **kwargs)
    return found + [DumpWeights(Path(sys.argv[1]))], guard, throughput


SimCLR.loss_terms = loss_terms
training._callbacks = callbacks
sys.exit(run(main, sys.argv[2:]))
"""

# MirroredStrategy parity: the summed per-replica losses and gradients equal those of one
# device on the whole batch.
PARITY = """
import sys

import keras
import numpy as np
import tensorflow as tf

from mixem_tf.augment import Augmenter, preset
from mixem_tf.backbones import build_backbone
from mixem_tf.data import load_dataset
from mixem_tf.losses import NTXentLoss
from mixem_tf.methods import SimCLR

GLOBAL_BATCH = 32


def build():
    keras.utils.set_random_seed(0)
    backbone = build_backbone("convnet", (8, 8, 1), width=8)
    model = SimCLR(backbone, preset("simclr", "digits"), num_clusters=10,
                   coupled_weight_decay=1e-3, seed=0)
    model(np.zeros((2, 8, 8, 1), np.uint8))  # builds every layer
    return model


def loss_and_gradients(model, view_a, view_b):
    # training=False: BatchNorm normalises with its moving statistics, the same on every
    # replica, instead of each replica's own batch statistics (which are not those of the
    # global batch); the loss itself, and so the gathering of negatives, is unchanged.
    with tf.GradientTape() as tape:
        outputs = [model.forward(view_a, training=False), model.forward(view_b, training=False)]
        loss = model.compute_loss(y_pred=outputs, training=True)
    return loss, tape.gradient(loss, model.trainable_variables)


strategy = tf.distribute.MirroredStrategy()
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
with strategy.scope():
    distributed = build()
single = build()
single.set_weights(distributed.get_weights())

# The views are made once, outside both models, so augmentation randomness plays no part.
images = load_dataset("digits").images[:GLOBAL_BATCH]
augmenter = Augmenter(preset("simclr", "digits"), seed=1)
views = [keras.ops.convert_to_numpy(augmenter(images)) for _ in range(2)]
half = GLOBAL_BATCH // 2


def replica_slices(context):
    rows = slice(context.replica_id_in_sync_group * half,
                 (context.replica_id_in_sync_group + 1) * half)
    return tf.constant(views[0][rows]), tf.constant(views[1][rows])


shards = strategy.experimental_distribute_values_from_function(
    lambda context: replica_slices(context))


def distributed_step(shards):
    loss, grads = strategy.run(lambda pair: loss_and_gradients(distributed, *pair),
                               args=(shards,))
    local_losses = strategy.experimental_local_results(loss)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
    return total, local_losses, grads


total, local_losses, grads = tf.function(distributed_step)(shards)
single_loss, single_grads = loss_and_gradients(single, tf.constant(views[0]),
                                               tf.constant(views[1]))
distributed.nt_xent = NTXentLoss(distributed.nt_xent.temperature, gather_distributed=False)
local_only, _, local_only_grads = tf.function(distributed_step)(shards)  # traced afresh

np.savez(sys.argv[1], loss=total.numpy(), single_loss=single_loss.numpy(),
         local_losses=np.array([v.numpy() for v in local_losses]),
         local_only_loss=local_only.numpy(),
         weight_decay=single.weight_decay_term().numpy(),
         names=np.array([v.path for v in single.trainable_variables]),
         **{f"grad_{i:03d}": g.numpy() for i, g in enumerate(grads)},
         **{f"single_grad_{i:03d}": g.numpy() for i, g in enumerate(single_grads)},
         **{f"local_only_grad_{i:03d}": g.numpy() for i, g in enumerate(local_only_grads)})
"""


def _env(**extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)}
    env.pop("TF_CONFIG", None)
    env.pop("MIXEM_DEBUG", None)
    return {**env, **extra}


def _tail(text, chars=4000):
    return text[-chars:] if text else "(empty)"


def _script(tmp_path, name, *parts):
    path = tmp_path / name
    path.write_text("\n".join(textwrap.dedent(part) for part in parts))
    return path


def _run_script(path, *args, timeout=TIMEOUT_S, **env):
    try:
        process = subprocess.run([sys.executable, str(path), *map(str, args)], cwd=ROOT,
                                 env=_env(**env), capture_output=True, text=True,
                                 timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{path.name} ran past {timeout} s; stderr tail:\n"
                    f"{_tail(error.stderr.decode() if error.stderr else '')}")
    assert process.returncode == 0, (f"{path.name} exited {process.returncode}; stderr tail:\n"
                                     f"{_tail(process.stderr)}")
    return process


def _weights(path):
    return dict(checkpoints.load_variables(path, "model"))


def _latest_weights(run_dir):
    found = checkpoints.latest_checkpoint(Path(run_dir) / "checkpoints")
    assert found is not None, f"{run_dir} has no checkpoint"
    path, record = found
    return record["epoch"], _weights(path)


def _dumped(folder, which):
    found = checkpoints.latest_checkpoint(Path(folder) / which)
    assert found is not None, f"no {which} weights were dumped in {folder}"
    return _weights(found[0])


def _history_losses(run_dir):
    lines = (Path(run_dir) / "history.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    return [float(line.split(",")[header.index("loss")]) for line in lines[1:]]


def _replica_batches(stderr):
    return [int(line.split()[1]) for line in stderr.splitlines()
            if line.startswith("REPLICA_BATCH")]


def _assert_same_weights(a, b, what):
    assert a.keys() == b.keys(), what
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{what}: {name}")


def _assert_trained(initial, final, what):
    changed = [name for name in initial if not np.array_equal(initial[name], final[name])]
    kernels = [name for name in initial if name.endswith("kernel")]
    assert kernels and set(kernels) <= set(changed), (
        f"{what}: kernels left unchanged by training: {sorted(set(kernels) - set(changed))}")


def test_mirrored_losses_and_gradients_sum_to_the_single_device_ones(tmp_path):
    script = _script(tmp_path, "parity.py", TWO_CPUS, PARITY)
    _run_script(script, tmp_path / "parity.npz", timeout=180)
    with np.load(tmp_path / "parity.npz") as result:
        result = dict(result)

    single = float(result["single_loss"])
    assert math.isfinite(single) and single > 1.0
    assert float(result["weight_decay"]) > 1e-3 * single  # the coupled L2 path counts
    # Each replica's loss is its share, scaled by 1/2: neither is the whole loss.
    assert not np.allclose(result["local_losses"], single, rtol=1e-3)
    np.testing.assert_allclose(float(result["loss"]), single, rtol=1e-5,
                               err_msg="summed replica losses != single-device loss")
    # Gradients, variable by variable: relative L2 error. float32 sums taken in another order
    # leave up to ~3e-5 (the projection's output bias, whose gradient is a sum that nearly
    # cancels); without gathering the error is 6e-2 to 9e-1, so 1e-4 separates the two.
    names = result["names"]
    assert len(names) > 4
    errors, local_only_errors = {}, {}
    for i, name in enumerate(names):
        expected = result[f"single_grad_{i:03d}"]
        scale = np.linalg.norm(expected)
        assert scale > 0, f"{name}: zero gradient, the comparison would be empty"
        errors[name] = np.linalg.norm(result[f"grad_{i:03d}"] - expected) / scale
        local_only_errors[name] = (np.linalg.norm(result[f"local_only_grad_{i:03d}"] - expected)
                                   / scale)
    too_far = {name: err for name, err in errors.items() if not err <= 1e-4}
    assert not too_far, f"summed replica gradients != single-device ones: {too_far}"

    # Without gathering, each replica sees only its own 2·16 − 2 negatives: another loss, and
    # other gradients, which the comparisons above would have caught.
    local_only = float(result["local_only_loss"])
    assert abs(local_only - single) > 1e-2 * single, (local_only, single)
    assert min(local_only_errors.values()) > 1e-2, local_only_errors


def test_fit_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    script = _script(tmp_path, "fit_mirrored.py", TWO_CPUS, FIT_WRAPPER)
    started = time.perf_counter()
    process = _run_script(script, tmp_path / "dumps", "--dataset", "digits",
                          "--strategy", "mirrored", "--epochs", "1", "--batch-size", "128",
                          "--readout-settings", "sklearn", "--quiet", "--out", out)
    elapsed = time.perf_counter() - started

    assert (out / "metrics.json").is_file(), _tail(process.stderr)
    losses = _history_losses(out)
    assert len(losses) == 1 and all(math.isfinite(v) for v in losses), losses
    assert _latest_weights(out)[0] == 1
    # Each of the 14 steps feeds both replicas 64 images: the global batch of 128, no batch
    # lost or split twice (the training step is traced once, then prints once per replica).
    batches = _replica_batches(process.stderr)
    assert batches == [64] * 28, (batches, _tail(process.stderr))
    assert "ran out of data" not in process.stderr, _tail(process.stderr)
    _assert_trained(_dumped(tmp_path / "dumps", "initial"), _dumped(tmp_path / "dumps", "final"),
                    "mirrored")
    print(f"mirrored fit: {elapsed:.1f} s")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_in_lockstep_under_multi_worker_mirrored_strategy(tmp_path):
    script = _script(tmp_path, "fit_worker.py", FIT_WRAPPER)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    started = time.perf_counter()
    for index in range(2):
        out, dumps = tmp_path / f"worker{index}", tmp_path / f"dumps{index}"
        logs = [open(tmp_path / f"worker{index}.{kind}", "w") for kind in ("out", "err")]
        env = _env(TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        command = [sys.executable, str(script), str(dumps), "--dataset", "digits",
                   "--strategy", "multiworker", "--epochs", "2", "--batch-size", "128",
                   "--readout-settings", "sklearn", "--quiet", "--deterministic",
                   "--out", str(out)]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=logs[0], stderr=logs[1])
        workers.append((process, logs, out, dumps))

    deadline = time.monotonic() + TIMEOUT_S
    try:
        for process, *_ in workers:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        timed_out = [p for p, *_ in workers if p.poll() is None]
        for process in timed_out:
            process.kill()
            process.wait()
        for _, logs, *_ in workers:
            for log in logs:
                log.close()
    elapsed = time.perf_counter() - started

    stderr = [(tmp_path / f"worker{i}.err").read_text() for i in range(2)]
    report = "\n".join(f"--- worker {i} (exit {p.returncode}) stderr tail:\n{_tail(stderr[i])}"
                       for i, (p, *_) in enumerate(workers))
    assert not timed_out, f"the workers ran past {TIMEOUT_S} s\n{report}"
    assert all(p.returncode == 0 for p, *_ in workers), report

    (_, _, chief, chief_dumps), (_, _, other, other_dumps) = workers
    # Only the chief writes the run's results; every worker writes its config.
    assert (chief / "metrics.json").is_file() and (chief / "history.csv").is_file(), report
    assert not (other / "metrics.json").exists() and not (other / "checkpoints").exists()
    assert (other / "config.json").is_file()
    losses = _history_losses(chief)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses

    # Each worker's replica sees its 64-image share of every global batch of 128, 14 steps
    # an epoch.
    for i in range(2):
        assert _replica_batches(stderr[i]) == [64] * 28, (i, _replica_batches(stderr[i]))

    epoch, checkpointed = _latest_weights(chief)
    assert epoch == 2
    final = [_dumped(chief_dumps, "final"), _dumped(other_dumps, "final")]
    initial = [_dumped(chief_dumps, "initial"), _dumped(other_dumps, "initial")]
    _assert_same_weights(initial[0], initial[1], "initial weights of the two workers")
    _assert_same_weights(final[0], final[1], "final weights of the two workers")
    _assert_same_weights(checkpointed, final[1], "chief's last checkpoint vs worker 1")
    _assert_trained(initial[0], final[0], "multi-worker")
    print(f"two-worker fit: {elapsed:.1f} s")
