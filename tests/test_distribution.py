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
# The fit scenarios train SimCLR: its training step traces in a quarter of MIX'EM's time, and
# MIX'EM's distributed loss is covered by the parity test. The global batch is 128.
FIT_ARGS = ["--dataset", "digits", "--method", "simclr", "--batch-size", "128",
            "--readout-settings", "sklearn", "--quiet"]

# Runs first in every script: two logical CPUs (the replicas of MirroredStrategy), set before
# TensorFlow initialises.
TWO_CPUS = """
import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
assert len(tf.config.list_logical_devices("CPU")) == 2
"""

# Observation only, for the fit scenarios: every replica prints the rows of each batch its loss
# sees; a callback stores the model weights as training begins (the same .npz format as the
# run's checkpoints) and reports, as it ends, variables whose local replicas' copies differ.
# Then the real command line runs.
FIT_WRAPPER = """
import sys
from pathlib import Path

import keras
import tensorflow as tf

from mixem_tf import checkpoints, training
from mixem_tf.methods import ClusteringMethod
from mixem_tf.cli import run
from trainers.fit import main

_compute_loss = ClusteringMethod.compute_loss


def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    if training:
        tf.print("REPLICA_BATCH", tf.shape(y_pred["a"]["h"])[0], output_stream=sys.stderr)
    return _compute_loss(self, x, y, y_pred, sample_weight, training)


class DumpWeights(keras.callbacks.Callback):
    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        checkpoints.save(self.folder / "initial", 0, self.model)

    def on_train_end(self, logs=None):
        for variable in self.model.variables:  # the local replicas' copies must agree
            copies = [c.numpy() for c in getattr(variable.value, "values", [variable.value])]
            if any((c != copies[0]).any() for c in copies[1:]):
                print("REPLICA_COPIES_DIFFER", variable.path, file=sys.stderr)


_callbacks = training._callbacks


def callbacks(out_dir, *args, **kwargs):
    found, guard, throughput = _callbacks(out_dir, *args, **kwargs)
    return found + [DumpWeights(Path(sys.argv[1]))], guard, throughput


ClusteringMethod.compute_loss = compute_loss
training._callbacks = callbacks
sys.exit(run(main, sys.argv[2:]))
"""

# MirroredStrategy parity, for SimCLR and MIX'EM: the summed per-replica losses and gradients
# equal those of one device on the whole batch; then again with every cross-replica gather
# switched off, which must not match.
PARITY = """
import sys

import keras
import numpy as np
import tensorflow as tf

import mixem_tf.methods.mixem as mixem_module
from mixem_tf.augment import Augmenter
from mixem_tf.backbones import build_backbone
from mixem_tf.data import load_dataset
from mixem_tf.losses import NTXentLoss
from mixem_tf.methods import MixEM, SimCLR

GLOBAL_BATCH = 32
METHODS = {"simclr": SimCLR, "mixem": MixEM}


def build(method):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("convnet", (8, 8, 1), width=8)
    model = METHODS[method](backbone, METHODS[method].augmentation("digits"), num_clusters=10,
                            coupled_weight_decay=1e-3, seed=0)
    model(np.zeros((2, 8, 8, 1), np.uint8))  # builds every layer
    return model


def loss_and_gradients(model, view_a, view_b):
    # training=False: BatchNorm normalises with its moving statistics, the same on every
    # replica, instead of each replica's own batch statistics (which are not those of the
    # global batch); the loss itself, and so the gathering across replicas, is unchanged.
    with tf.GradientTape() as tape:
        outputs = {"a": model.forward(view_a, training=False),
                   "b": model.forward(view_b, training=False)}
        loss = model.compute_loss(y_pred=outputs, training=True)
    return loss, tape.gradient(loss, model.trainable_variables)


strategy = tf.distribute.MirroredStrategy()
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
images = load_dataset("digits").images[:GLOBAL_BATCH]
half = GLOBAL_BATCH // 2
results = {}
for method in METHODS:
    with strategy.scope():
        distributed = build(method)
    single = build(method)
    single.set_weights(distributed.get_weights())

    # The views are made once, outside both models: augmentation randomness plays no part.
    augmenter = Augmenter(METHODS[method].augmentation("digits"), seed=1)
    views = [keras.ops.convert_to_numpy(augmenter(images)) for _ in range(2)]

    def replica_slices(context):
        rows = slice(context.replica_id_in_sync_group * half,
                     (context.replica_id_in_sync_group + 1) * half)
        return tf.constant(views[0][rows]), tf.constant(views[1][rows])

    shards = strategy.experimental_distribute_values_from_function(replica_slices)

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
    # Every gather off: NT-Xent's negatives and MIX'EM's batch terms from the replica alone.
    distributed.nt_xent = NTXentLoss(distributed.nt_xent.temperature, gather_distributed=False)
    gather, mixem_module.gather_replicas = mixem_module.gather_replicas, lambda x: x
    local_only, _, local_only_grads = tf.function(distributed_step)(shards)  # traced afresh
    mixem_module.gather_replicas = gather

    results.update({
        f"{method}/loss": total.numpy(), f"{method}/single_loss": single_loss.numpy(),
        f"{method}/local_losses": np.array([v.numpy() for v in local_losses]),
        f"{method}/local_only_loss": local_only.numpy(),
        f"{method}/weight_decay": single.weight_decay_term().numpy(),
        f"{method}/names": np.array([v.path for v in single.trainable_variables]),
        **{f"{method}/grad_{i:03d}": g.numpy() for i, g in enumerate(grads)},
        **{f"{method}/single_grad_{i:03d}": g.numpy() for i, g in enumerate(single_grads)},
        **{f"{method}/local_only_grad_{i:03d}": g.numpy()
           for i, g in enumerate(local_only_grads)},
    })
np.savez(sys.argv[1], **results)
"""


def _env(**extra):
    # OMP_WAIT_POLICY=PASSIVE: scikit-learn's K-means read-outs otherwise spin-wait in OpenMP
    # and run some 30x slower on a busy two-core machine (0.7 s instead of 22 s here).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
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


@pytest.fixture(scope="module")
def parity_results(tmp_path_factory):
    """Both methods' parity numbers, from one subprocess (one TensorFlow start-up)."""
    folder = tmp_path_factory.mktemp("parity")
    script = _script(folder, "parity.py", TWO_CPUS, PARITY)
    _run_script(script, folder / "parity.npz", timeout=180)
    with np.load(folder / "parity.npz") as result:
        return dict(result)


@pytest.mark.parametrize("method", ["simclr", "mixem"])
def test_mirrored_losses_and_gradients_sum_to_the_single_device_ones(parity_results, method):
    result = {key.split("/", 1)[1]: value for key, value in parity_results.items()
              if key.startswith(method + "/")}
    single = float(result["single_loss"])
    assert math.isfinite(single) and abs(single) > 0.1  # MIX'EM's loss is negative
    assert float(result["weight_decay"]) > 1e-2 * abs(single)  # the coupled L2 path counts
    # Each replica's loss is its share, scaled by 1/2: neither is the whole loss.
    assert not np.allclose(result["local_losses"], single, rtol=1e-3)
    np.testing.assert_allclose(float(result["loss"]), single, rtol=1e-5,
                               err_msg="summed replica losses != single-device loss")

    # Gradients, variable by variable: relative L2 error. float32 sums taken in another order
    # leave up to ~3e-5 (e.g. the projection's output bias, whose gradient is a sum that
    # nearly cancels); without gathering the error is above 5e-2, so 1e-4 separates the two.
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

    # Without gathering, each replica sees only its own 2·16 − 2 negatives (and MIX'EM's batch
    # terms only its 16 images): another loss, and other gradients, which the comparisons
    # above would have caught.
    local_only = float(result["local_only_loss"])
    assert abs(local_only - single) > 1e-2 * abs(single), (local_only, single)
    assert max(local_only_errors.values()) > 5e-2, local_only_errors


def test_fit_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    script = _script(tmp_path, "fit_mirrored.py", TWO_CPUS, FIT_WRAPPER)
    started = time.perf_counter()
    process = _run_script(script, tmp_path / "dumps", *FIT_ARGS, "--strategy", "mirrored",
                          "--epochs", "1", "--out", out)
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
    # BatchNorm's moving statistics included (Keras 3 keeps one copy per replica).
    assert "REPLICA_COPIES_DIFFER" not in process.stderr, _tail(process.stderr)
    _assert_trained(_dumped(tmp_path / "dumps", "initial"), _latest_weights(out)[1], "mirrored")
    print(f"mirrored fit: {elapsed:.1f} s")


# The method hooks under MirroredStrategy: a SimCLR that counts its in-step hooks in
# non-trainable variables and records its epoch hooks; every replica's copy is reported.
HOOKS = """
import json
import sys

import keras
from keras import ops

from mixem_tf.methods import METHODS, SimCLR
from mixem_tf.settings import TrainConfig
from mixem_tf.training import train_run


class HookProbe(SimCLR):
    name = "hook_probe"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_loss = keras.Variable(0.0, trainable=False, name="after_loss")
        self.after_step = keras.Variable(0.0, trainable=False, name="after_step")
        self.epochs_ended = []

    def update_after_loss(self, outputs):
        self.after_loss.assign(self.after_loss + 1.0)

    def update_after_step(self):
        self.after_step.assign(self.after_step + 1.0)

    def on_train_epoch_end(self, epoch, logs):
        self.epochs_ended.append(epoch)


METHODS["hook_probe"] = HookProbe
config = TrainConfig(dataset="digits", method="hook_probe", epochs=2, batch_size=128,
                     strategy="mirrored", readout_settings="sklearn")
model = train_run(config, sys.argv[1], verbose=0).model
copies = {v.name: [float(c.numpy()) for c in getattr(v.value, "values", [v.value])]
          for v in (model.after_loss, model.after_step)}
print("HOOKS", json.dumps({"copies": copies, "epochs_ended": model.epochs_ended}))
"""


def test_method_hooks_run_once_per_step_on_every_replica(tmp_path):
    script = _script(tmp_path, "hooks_mirrored.py", TWO_CPUS, HOOKS)
    process = _run_script(script, tmp_path / "run")
    line = next(line for line in process.stdout.splitlines() if line.startswith("HOOKS"))
    report = json.loads(line.split(" ", 1)[1])
    steps = 2 * (1797 // 128)
    assert report["epochs_ended"] == [0, 1]
    for name, copies in report["copies"].items():
        assert len(copies) == 2 and copies == [steps, steps], (name, copies)


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
        command = [sys.executable, str(script), str(dumps), *FIT_ARGS, "--strategy",
                   "multiworker", "--epochs", "2", "--deterministic", "--out", str(out)]
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
    # Only the chief writes the run's results; every worker its config and checkpoints.
    for name in ("metrics.json", "readout.npz", "history.csv"):
        assert (chief / name).is_file(), f"the chief wrote no {name}\n{report}"
        assert not (other / name).exists(), f"worker 1 wrote {name}"
    assert (other / "config.json").is_file()
    losses = _history_losses(chief)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses
    # The evaluation features come from a prediction split over both workers and put back in
    # order; out of order, the labels would no longer match and ACC would fall to chance.
    metrics = json.loads((chief / "metrics.json").read_text())
    default = next(row for row in metrics["readouts"] if row["default"])
    assert sum(default["cluster_sizes"]) == 1797 and default["acc"] > 0.35, default

    # Each worker's replica sees its 64-image share of every global batch of 128, 14 steps
    # an epoch.
    for i in range(2):
        assert _replica_batches(stderr[i]) == [64] * 28, (i, _replica_batches(stderr[i]))

    (epoch0, path0), (epoch1, path1) = [
        (record["epoch"], path) for path, record in
        (checkpoints.latest_checkpoint(out / "checkpoints") for out in (chief, other))]
    assert epoch0 == epoch1 == 2
    for prefix in ("model", "optimizer"):
        _assert_same_weights(dict(checkpoints.load_variables(path0, prefix)),
                             dict(checkpoints.load_variables(path1, prefix)),
                             f"{prefix} variables of the two workers' last checkpoints")
    initial = [_dumped(chief_dumps, "initial"), _dumped(other_dumps, "initial")]
    _assert_same_weights(initial[0], initial[1], "initial weights of the two workers")
    _assert_trained(initial[0], _weights(path0), "multi-worker")
    print(f"two-worker fit: {elapsed:.1f} s")
