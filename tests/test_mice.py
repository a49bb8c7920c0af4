"""MiCE (docs/METHODS.md §2) against numpy references: simplex prototypes, negative ELBO and
posterior, FIFO queue, EMA teacher, epoch-end μ, schedule; compiled training steps, Keras
saving and resume on the current backend (CI: TensorFlow and JAX), then slow end-to-end runs.
"""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from mixem_tf.methods import MiCE, build_method
from mixem_tf.methods.mice import negative_elbo, simplex_prototypes
from mixem_tf.settings import TrainConfig
from mixem_tf.schedules import WarmupThenStep

B, K, D, NU = 4, 3, 4, 10


def tiny_config(**options):
    return TrainConfig(dataset="digits", method="mice", backbone_width=4,
                       options={"queue_size": NU, "embedding_dim": D, **options}).resolved()


def tiny_model(**options):
    return build_method(tiny_config(**options), (8, 8, 1), K)


def unit(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


@pytest.mark.core
@pytest.mark.parametrize("k, d", [(2, 128), (10, 128), (20, 128), (9, 8), (5, 4)])
def test_simplex_prototypes_are_unit_vectors_at_minus_one_over_k_minus_one(k, d):
    omega = simplex_prototypes(k, d)
    assert omega.shape == (k, d)
    expected = np.full((k, k), -1.0 / (k - 1))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(omega @ omega.T, expected, atol=1e-12)
    assert not np.triu(omega, 1).any()  # ω_k uses only the first k coordinates


@pytest.mark.core
def test_simplex_prototypes_refuse_more_than_d_plus_one_clusters():
    for k, d in [(10, 8), (1, 8)]:
        with pytest.raises(ValueError, match="2 <= K <= D \\+ 1"):
            simplex_prototypes(k, d)
    with pytest.raises(ValueError, match="raise embedding_dim"):
        tiny_model(embedding_dim=1)  # K = 3 needs D >= 2


@pytest.mark.core
def test_negative_elbo_and_posterior_match_the_official_formula():
    rng = np.random.default_rng(0)
    f, v = unit(rng.normal(size=(B, K, D))), unit(rng.normal(size=(B, K, D)))
    g, mu = unit(rng.normal(size=(B, D))), rng.normal(size=(K, D))
    queue, omega = rng.uniform(-0.5, 0.5, size=(NU, K, D)), simplex_prototypes(K, D)
    tau, kappa = 0.7, 0.4
    got = {name: ops.convert_to_numpy(value) for name, value in
           negative_elbo(*(x.astype("float32") for x in (f, v, g, mu, queue, omega)),
                         tau, kappa).items()}
    # The official ELBO.py, in float64: K (1 + ν)-way softmaxes, posterior, −Σ r (…).
    log_pi = log_softmax(g @ omega.T / kappa)
    mu_hat = unit(mu)
    logits = np.empty((B, K, 1 + NU))
    for b, k in itertools.product(range(B), range(K)):
        query = f[b, k] + mu_hat[k]
        logits[b, k] = np.concatenate([[v[b, k] @ query], queue[:, k] @ query]) / tau
    log_phi = log_softmax(logits)[:, :, 0]
    joint = np.exp(log_pi + log_phi)
    r = joint / joint.sum(axis=1, keepdims=True)
    loss = -np.sum(r * (log_pi + log_phi - np.log(r))) / B
    np.testing.assert_allclose(got["log_pi"], log_pi, atol=1e-5)
    np.testing.assert_allclose(got["log_phi"], log_phi, atol=1e-5)
    np.testing.assert_allclose(got["r"], r, atol=1e-5)
    np.testing.assert_allclose(got["loss"], loss, atol=1e-5)
    far = negative_elbo(*(x.astype("float32") for x in (f * 80, v, g * 80, mu, queue, omega)),
                        0.01, 0.01)  # logits in the thousands stay finite
    assert all(np.isfinite(ops.convert_to_numpy(x)).all() for x in far.values())


def fake_outputs(rng):
    """What `forward_views` hands to `update_after_loss`: keys v, posterior r, its parts."""
    r = rng.dirichlet(np.ones(K), size=B)
    return {"v": unit(rng.normal(size=(B, K, D))).astype("float32"),
            "r": r.astype("float32"), "log_pi": np.log(r).astype("float32"),
            "log_phi": np.log(r).astype("float32")}


@pytest.mark.core
def test_queue_is_fifo_and_wraps_and_key_sums_follow_the_posterior_argmax():
    model, rng = tiny_model(), np.random.default_rng(1)
    queue = model.queue.numpy().copy()
    assert queue.dtype == np.float32 and not model.queue.trainable
    bound = 1 / np.sqrt(D / 3)
    assert np.abs(queue).max() <= bound and np.abs(queue).max() > 0.8 * bound
    sums = np.zeros((K, D), np.float32)
    model.on_train_epoch_begin(0)
    for step in range(3):  # slots 0-3, 4-7, then 8, 9, 0, 1
        outputs = fake_outputs(rng)
        model.update_after_loss(outputs)
        slots = (4 * step + np.arange(B)) % NU
        queue[slots] = outputs["v"]
        for b, k in enumerate(outputs["r"].argmax(axis=1)):
            sums[k] += outputs["v"][b, k]
        np.testing.assert_array_equal(model.queue.numpy(), queue)
        assert int(model.queue_position.numpy()) == (4 * step + B) % NU
    np.testing.assert_allclose(model.key_sums.numpy(), sums, atol=1e-6)
    model.on_train_epoch_begin(1)
    assert not model.key_sums.numpy().any()
    with pytest.raises(ValueError, match="queue_size 2 is smaller than the batch"):
        tiny_model(queue_size=2).update_after_loss(fake_outputs(rng))


@pytest.mark.core
def test_teacher_starts_as_a_copy_and_follows_the_ema_of_the_parameters_only():
    model, rng, m = tiny_model(ema_momentum=0.9), np.random.default_rng(2), 0.9
    pairs = model.teacher_pairs()
    assert len(pairs) == len(model.backbone.weights) + len(model.heads.weights)
    for teacher, student in pairs:  # a copy from construction on
        np.testing.assert_array_equal(teacher.numpy(), student.numpy())
        teacher.assign(rng.normal(size=teacher.shape).astype("float32"))
    model.initialize_state(np.zeros((20, 8, 8, 1), np.uint8))  # again, e.g. after --init-from
    for teacher, student in pairs:
        np.testing.assert_array_equal(teacher.numpy(), student.numpy())
    expected = [t.numpy().copy() for t, _ in pairs]
    for _ in range(3):
        for i, (teacher, student) in enumerate(pairs):
            student.assign(rng.normal(size=student.shape).astype("float32"))
            if student.trainable:
                expected[i] = m * expected[i] + (1 - m) * student.numpy()
        model.update_after_step()
    for (teacher, student), want in zip(pairs, expected):
        np.testing.assert_allclose(teacher.numpy(), want, atol=1e-6, err_msg=teacher.path)
    assert any(not s.trainable for _, s in pairs)  # BN statistics exist and were left alone


@pytest.mark.core
def test_epoch_end_sets_mu_to_the_normalised_key_sums_and_keeps_unchosen_experts():
    model = tiny_model()
    before = model.expert_prototypes.numpy().copy()
    np.testing.assert_allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-6)
    sums = np.array([[3.0, 0, 4, 0], [0, 0, 0, 0], [1, 1, 1, 1]], np.float32)
    model.key_sums.assign(sums)
    logs = {}
    model.on_train_epoch_end(0, logs)
    want = np.stack([sums[0] / 5, before[1], sums[2] / 2])
    np.testing.assert_allclose(model.expert_prototypes.numpy(), want, atol=1e-6)
    assert logs["experts_chosen"] == 2.0


def official_learning_rates(base, warmup, milestones, decay, epochs):
    """util.adjust_learning_rate applied at the start of each epoch 0..epochs−1 to a param
    group whose rate persists between calls (the official training loop)."""
    group, rates = {"lr": base}, []
    for epoch in range(epochs):
        steps = np.sum(epoch > np.asarray(milestones))
        if epoch <= warmup:
            group["lr"] = base * (1.0 if epoch >= warmup else epoch / warmup)
        elif steps > 0:
            group["lr"] = base * decay ** steps
        rates.append(group["lr"])
    return rates


@pytest.mark.core
@pytest.mark.parametrize("warmup, milestones, epochs", [
    (10, [480, 640, 800], 1001), (3, [2, 5], 9), (0, [3], 6), (4, [], 7)])
def test_schedule_follows_the_official_loop(warmup, milestones, epochs):
    steps_per_epoch = 3
    schedule = WarmupThenStep(1.0, steps_per_epoch, warmup, milestones, 0.1)
    want = official_learning_rates(1.0, warmup, milestones, 0.1, epochs)
    steps = np.arange(epochs * steps_per_epoch)
    got = [float(ops.convert_to_numpy(schedule(int(s)))) for s in steps[::steps_per_epoch]]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    last = [float(ops.convert_to_numpy(schedule(int(s)))) for s in steps[2::steps_per_epoch]]
    np.testing.assert_allclose(last, want, rtol=1e-6, atol=0)  # constant within an epoch
    assert WarmupThenStep(**schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.core
def test_recipes_options_and_protocol():
    cifar = TrainConfig(dataset="cifar10", method="mice").resolved()
    assert (cifar.backbone, cifar.stem, cifar.optimizer, cifar.lr, cifar.momentum,
            cifar.weight_decay, cifar.weight_decay_mode, cifar.batch_size, cifar.epochs,
            cifar.train_on, cifar.evaluate_on) == \
        ("resnet34", "cifar", "sgd", 1.0, 0.9, 1e-4, "coupled", 256, 1001, "whole", "all")
    assert cifar.options == {"temperature": 1.0, "gating_temperature": 1.0,
                             "queue_size": 16384, "ema_momentum": 0.999, "embedding_dim": 128,
                             "warmup_epochs": 10, "lr_milestones": "480,640,800",
                             "lr_decay": 0.1}
    stl = TrainConfig(dataset="stl10", method="mice").resolved()
    assert (stl.stem, stl.image_size, stl.epochs, stl.options["lr_milestones"]) == \
        ("imagenet", 96, 3001, "1500,2000,2500")
    assert MiCE.augmentation("cifar10").crop_scale == (0.2, 1.0)
    for bad, problem in [({"lr_milestones": "640,480"}, "increasing epochs"),
                         ({"lr_milestones": "ten"}, "separated by commas"),
                         ({"ema_momentum": 1.0}, "below 1"), ({"queue_size": 0}, "positive")]:
        with pytest.raises(ValueError, match=problem):
            TrainConfig(dataset="digits", method="mice", options=bad).resolved()


class Recorder(keras.callbacks.Callback):
    """The model state after every epoch (one step each)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        self.epochs.append({
            "pairs": [(t.numpy().copy(), s.numpy().copy()) for t, s in model.teacher_pairs()],
            **{name: getattr(model, name).numpy().copy() for name in
               ("queue", "queue_position", "key_sums", "expert_prototypes",
                "gating_prototypes")}})


@pytest.mark.core
def test_compiled_steps_update_queue_teacher_and_mu_and_nothing_trains_the_teacher(tmp_path):
    from mixem_tf.callbacks import MethodHooks
    from mixem_tf.data import load_dataset
    from mixem_tf.training import make_optimizer

    m = 0.9
    config = tiny_config(ema_momentum=m, warmup_epochs=0)
    config.lr = 0.5
    model = build_method(config, (8, 8, 1), K)
    model.compile(optimizer=make_optimizer(config, 1))
    images = load_dataset("digits").images[:B]
    model.initialize_state(load_dataset("digits").images)
    trained = {id(v) for v in model.trainable_variables}
    assert not {id(t) for t, _ in model.teacher_pairs()} & trained
    assert id(model.gating_prototypes) not in trained and id(model.expert_prototypes) in trained
    assert all(layer.trainable for layer in model.teacher_backbone._flatten_layers())
    start = [(t.numpy().copy(), s.numpy().copy()) for t, s in model.teacher_pairs()]
    omega, queue0 = model.gating_prototypes.numpy().copy(), model.queue.numpy().copy()
    recorder = Recorder()
    model.fit(((images,) for _ in range(3)), steps_per_epoch=1, epochs=3, verbose=0,
              shuffle=False, callbacks=[MethodHooks(), recorder])

    parameters = [s.trainable for _, s in model.teacher_pairs()]
    previous = [t for t, _ in start]
    for state in recorder.epochs:  # θ_T ← m θ_T + (1 − m) θ_S after every step
        for is_parameter, (t, s), t_before in zip(parameters, state["pairs"], previous):
            if is_parameter:
                np.testing.assert_allclose(t, m * t_before + (1 - m) * s, atol=1e-6)
        previous = [t for t, _ in state["pairs"]]
    moved = [not np.array_equal(t, t0) for (t, _), (t0, _), p in
             zip(recorder.epochs[-1]["pairs"], start, parameters) if not p]
    assert any(moved)  # the teacher's BatchNorm ran on batch statistics

    written = [np.arange(4), np.arange(8), np.arange(10)]
    for state, rows, position in zip(recorder.epochs, written, (4, 8, 2)):
        assert int(state["queue_position"]) == position
        norms = np.linalg.norm(state["queue"], axis=-1)
        np.testing.assert_allclose(norms[rows], 1.0, atol=1e-5)  # teacher keys
        rest = np.setdiff1d(np.arange(NU), rows)
        np.testing.assert_array_equal(state["queue"][rest], queue0[rest])
        np.testing.assert_array_equal(state["gating_prototypes"], omega)
    second, third = recorder.epochs[1]["queue"], recorder.epochs[2]["queue"]
    np.testing.assert_array_equal(third[2:8], second[2:8])  # the wrap rewrote 8, 9, 0, 1 only
    assert not np.array_equal(third[:2], second[:2])

    for epoch, state in enumerate(recorder.epochs):  # key sums: each image's chosen expert
        keys = state["queue"][(4 * epoch + np.arange(B)) % NU]
        assert any(np.allclose(state["key_sums"],
                               (np.eye(K)[list(choice)][:, :, None] * keys).sum(axis=0),
                               atol=1e-5)
                   for choice in itertools.product(range(K), repeat=B))
        chosen = np.linalg.norm(state["key_sums"], axis=1) > 0
        np.testing.assert_allclose(state["expert_prototypes"][chosen],
                                   unit(state["key_sums"][chosen]), atol=1e-5)

    model.save(tmp_path / "mice.keras")
    loaded = keras.saving.load_model(tmp_path / "mice.keras")
    np.testing.assert_array_equal(loaded.queue.numpy(), model.queue.numpy())
    before, after = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    assert set(before) == {"h", "r", "pi"}
    for name in before:
        np.testing.assert_allclose(after[name], before[name], atol=1e-6, err_msg=name)
    np.testing.assert_allclose(before["r"].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.core
def test_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    import dataclasses

    from mixem_tf.training import train_run

    config = TrainConfig(dataset="digits", method="mice", epochs=2, backbone_width=4,
                         readout_settings="sklearn",
                         options={"queue_size": 512, "embedding_dim": 16, "warmup_epochs": 1})
    train_run(config, tmp_path / "whole", verbose=0, deterministic=True)
    train_run(dataclasses.replace(config, epochs=1), tmp_path / "split", verbose=0,
              deterministic=True)
    train_run(None, tmp_path / "split", resume=True, epochs=2, verbose=0, deterministic=True)
    whole, split, first = (np.load(tmp_path / run / f"checkpoints/epoch-000{epoch}.npz")
                           for run, epoch in (("whole", 2), ("split", 2), ("whole", 1)))
    assert len(whole.files) == len(split.files)
    for key, other in zip(sorted(whole.files), sorted(split.files)):  # "model/00012/path"
        assert key.split("/")[:2] == other.split("/")[:2]
        np.testing.assert_array_equal(split[other], whole[key], err_msg=key)
    for part in ("queue", "queue_position", "expert_prototypes", "teacher_"):
        keys = [k for k in whole.files if part in k.split("/", 2)[2]]
        assert keys and any(not np.array_equal(first[k], whole[k]) for k in keys), part


# -- tf.distribute: two logical CPUs, set before TensorFlow starts, so in subprocesses ------
MIRRORED_PRELUDE = """
import sys
import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from mixem_tf.settings import TrainConfig
strategy = tf.distribute.MirroredStrategy()
assert strategy.num_replicas_in_sync == 2
"""
# One step of the loss, its gradients and the state hooks on both replicas and on one device,
# from the same 32 images' views. BatchNorm runs on moving statistics (training=False), the
# same on every replica, so the replicas' losses must sum to the single device's.
MIRRORED_PARITY = """
from mixem_tf.augment import Augmenter
from mixem_tf.data import load_dataset
from mixem_tf.methods import MiCE, build_method

config = TrainConfig(dataset="digits", method="mice", backbone_width=4, weight_decay=1e-3,
                     options={"queue_size": 64, "embedding_dim": 16}).resolved()

def build():
    keras.utils.set_random_seed(0)
    model = build_method(config, (8, 8, 1), 10)
    model(np.zeros((2, 8, 8, 1), np.uint8))
    return model

def loss_and_gradients(model, x1, x2, x3):
    with tf.GradientTape() as tape:
        student, g = model.forward(x1, training=False), model.forward(x3, training=False)["g"]
        v = model.teacher_keys(x2, training=False)  # ShuffleBN's round trip on 2 replicas
        outputs = {"f": student["f"], "v": v, "g": g, **model.elbo_parts(student["f"], v, g)}
        loss = model.compute_loss(y_pred=outputs, training=True)
    return loss, tape.gradient(loss, model.trainable_variables)

with strategy.scope():
    distributed = build()
single = build()
single.set_weights(distributed.get_weights())
augmenter = Augmenter(MiCE.augmentation("digits"), seed=1)
views = [keras.ops.convert_to_numpy(augmenter(load_dataset("digits").images[:32]))
         for _ in range(3)]
shards = strategy.experimental_distribute_values_from_function(
    lambda context: tuple(tf.constant(view[context.replica_id_in_sync_group * 16:][:16])
                          for view in views))

@tf.function
def distributed_step(shards):
    loss, grads = strategy.run(lambda parts: loss_and_gradients(distributed, *parts),
                               args=(shards,))
    strategy.run(distributed.update_after_step)
    return (strategy.reduce("SUM", loss, axis=None),
            [strategy.reduce("SUM", g, axis=None) for g in grads])

loss, grads = distributed_step(shards)
single_loss, single_grads = loss_and_gradients(single, *map(tf.constant, views))
single.update_after_step()
results = {"loss": loss.numpy(), "single_loss": single_loss.numpy(),
           "grads": np.array([np.linalg.norm(a - b) / np.linalg.norm(b)
                              for a, b in zip(grads, single_grads)])}
for name in ("queue", "queue_position", "key_sums"):
    results[name] = np.stack([c.numpy() for c in getattr(distributed, name).value.values])
    results["single_" + name] = getattr(single, name).numpy()
results["teacher"] = np.stack([np.concatenate([t.value.values[r].numpy().ravel()
                                               for t, _ in distributed.teacher_pairs()])
                               for r in range(2)])
np.savez(sys.argv[1], **results)
"""
# A real mirrored run of one epoch: every variable's replica copies agree at the end.
MIRRORED_FIT = """
from mixem_tf.training import train_run

run = train_run(TrainConfig(dataset="digits", method="mice", strategy="mirrored", epochs=1,
                            batch_size=128, backbone_width=4, readout_settings="sklearn",
                            options={"queue_size": 512, "embedding_dim": 16}),
                sys.argv[2], verbose=0)
differ = [v.path for v in run.model.variables
          if len({c.numpy().tobytes() for c in getattr(v.value, "values", [v.value])}) > 1]
np.savez(sys.argv[1], differ=np.array(differ, dtype=str),
         position=run.model.queue_position.numpy())
"""


def run_mirrored(tmp_path, name, body, *args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / f"{name}.py"
    script.write_text(MIRRORED_PRELUDE + body)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(root),
           "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.run([sys.executable, str(script), str(tmp_path / f"{name}.npz"),
                              *map(str, args)], cwd=root, env=env, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-4000:]
    return dict(np.load(tmp_path / f"{name}.npz"))


@pytest.mark.slow
def test_mirrored_strategy_gives_the_single_device_step_and_one_queue(tmp_path):
    pytest.importorskip("tensorflow")
    result = run_mirrored(tmp_path, "parity", MIRRORED_PARITY)
    np.testing.assert_allclose(result["loss"], result["single_loss"], rtol=1e-5)
    assert len(result["grads"]) > 10 and result["grads"].max() < 1e-4, result["grads"]
    for name in ("queue", "queue_position", "key_sums"):  # the global batch, on both replicas
        np.testing.assert_array_equal(result[name][0], result[name][1], err_msg=name)
        np.testing.assert_allclose(result[name][0], result["single_" + name], atol=1e-6,
                                   err_msg=name)
    assert int(result["queue_position"][0]) == 32
    np.testing.assert_array_equal(result["teacher"][0], result["teacher"][1])

    fit = run_mirrored(tmp_path, "fit", MIRRORED_FIT, tmp_path / "run")
    assert fit["differ"].size == 0, fit["differ"]
    assert int(fit["position"]) == 1797 // 128 * 128 % 512


@pytest.mark.core
def test_queue_and_logits_stay_float32_under_mixed_precision():
    from mixem_tf.data import load_dataset

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny_model()
        outputs = model(load_dataset("digits").images[:B], training=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert model.queue.dtype == "float32" and model.heads.compute_dtype == "bfloat16"
    for name in ("f", "v", "g", "log_pi", "log_phi", "r", "loss"):
        assert keras.backend.standardize_dtype(outputs[name].dtype) == "float32", name


@pytest.mark.slow
def test_digits_run_learns_more_than_kmeans_on_pixels(tmp_path):
    from mixem_tf.cluster import kmeans
    from mixem_tf.data import load_dataset
    from mixem_tf.metrics import evaluate_clustering
    from mixem_tf.training import train_run

    epochs = 30
    result = train_run(TrainConfig(dataset="digits", method="mice", epochs=epochs,
                                   backbone_width=16, readout_settings="sklearn"),
                       tmp_path / "run", verbose=0)
    rows = {r.name: r.row for r in result.readouts}
    posterior = rows["r/raw/argmax"]
    assert posterior["default"] and "pi/raw/argmax" in rows
    digits = load_dataset("digits")
    pixels = kmeans(digits.images.reshape(len(digits), -1) / 255.0, 10, seed=0)
    baseline = evaluate_clustering(digits.labels, pixels.labels)
    # The representation beats pixels clearly. At this budget one expert may still hold two
    # digits (docs/BENCHMARKS.md, MiCE), which costs the posterior ACC but not all its NMI.
    embedding = rows["h/l2/kmeans"]
    assert embedding["acc"] > baseline["acc"] + 0.05, (embedding, baseline)
    assert embedding["nmi"] > baseline["nmi"] + 0.05, (embedding, baseline)
    assert posterior["nmi"] > baseline["nmi"], (posterior, baseline)
    assert max(posterior["cluster_sizes"]) < 0.3 * len(digits)  # no collapse
    occupancy = (tmp_path / "run/occupancy.jsonl").read_text().splitlines()
    assert len(occupancy) == epochs
